"""An OpenAI-compatible answer API for the champion: `niftytune api --home H`.

    GET  /v1/models             `niftytune-champion`, and every version that verifies, by id
    POST /v1/chat/completions   the last user message, answered grounded as `ask` answers it
                                (streamed with "stream": true); `model` picks the champion or a version
    GET  /health                what is served, and why the pointer's version is not (when it is not)

Every answer says which version answered and which session its figures come from: in the body
(`model` is that version; the `niftytune` object) and in the headers X-Niftytune-Version and
X-Niftytune-Session (`none` for a refusal). A refusal (a ticker or session the store does not hold)
is a normal completion with the refusal's text, and no model call. Promotions and rollbacks are
followed without a restart (serving.py). With NIFTYTUNE_API_TOKEN set, every /v1 request needs
`Authorization: Bearer <token>`. Errors have OpenAI's shape (openai_format.py).
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from adapters_registry import RegistryError, VersionNotFoundError
from tasks.answering.ask import DEFAULT_MAX_NEW_TOKENS
from tasks.answering.openai_format import (DONE, ChatRequest, Reply, answer_meta, error_body, event, model_card,
                                           validation_error_body)
from tasks.answering.serving import CHAMPION_MODEL, Loaded, ServedModels

log = logging.getLogger(__name__)

TOKEN_ENV = "NIFTYTUNE_API_TOKEN"


class APIError(Exception):
    """An error answered with OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.body = status, error_body(message, type_, param, code)


def _model(models: ServedModels, name: str) -> Loaded:
    try:
        return models.resolve(name)
    except VersionNotFoundError:
        raise APIError(404, f"The model '{name}' does not exist: ask for {CHAMPION_MODEL} or a version that "
                            f"GET /v1/models lists", "model", "model_not_found") from None
    except RegistryError as exc:  # registered, but it does not verify or load: never answered with
        raise APIError(409, f"The model '{name}' cannot be served: {exc}", "model", "model_unavailable") from None


def _answer_headers(meta: dict) -> dict[str, str]:
    return {"X-Niftytune-Version": meta["version"], "X-Niftytune-Session": meta["session"] or "none"}


def _events(reply: Reply, pieces: Iterator[str]) -> Iterator[str]:
    """OpenAI's chunks: the role, the text piece by piece, the finish, then [DONE]."""
    yield event(reply.chunk({"role": "assistant", "content": ""}))
    try:
        for piece in pieces:
            yield event(reply.chunk({"content": piece}))
    except Exception as exc:  # the headers are sent: say it in the stream, as OpenAI does
        log.exception("generation failed mid-stream")
        yield event(error_body(f"generation failed: {type(exc).__name__}: {exc}", "server_error"))
        return
    yield event(reply.chunk({}, finish_reason="stop"))
    yield DONE


def create_app(models: ServedModels, token: str | None = None) -> FastAPI:
    """The API over `models`; with `token`, /v1 requests must carry it as a bearer token."""
    app = FastAPI(title="niftytune answer API", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def require_token(request: Request, call_next):  # before the body is read: no token, no parsing
        given = request.headers.get("authorization", "")
        if token and request.url.path.startswith("/v1") and not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse(error_body("Missing or wrong API token: send `Authorization: Bearer <token>` with "
                                           f"the token the server's {TOKEN_ENV} holds", "invalid_request_error",
                                           code="invalid_api_key"), status_code=401)
        return await call_next(request)

    @app.exception_handler(APIError)
    def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error_body(list(exc.errors())), status_code=400)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException) -> JSONResponse:  # unknown path, wrong method
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), status_code=exc.status_code)

    @app.exception_handler(Exception)
    def server_error(request: Request, exc: Exception) -> JSONResponse:  # logged by uvicorn with its traceback
        return JSONResponse(error_body(f"{type(exc).__name__}: {exc}", "server_error"), status_code=500)

    @app.get("/health")
    async def health() -> dict:  # async: answered on the event loop even when every worker thread waits
        return models.health()

    @app.get("/v1/models")
    def list_models() -> dict:
        champion = models.champion
        cards = [model_card(CHAMPION_MODEL, champion.version, champion.info)]
        cards += [model_card(info.version, info.version, info) for info in models.verified_versions()]
        return {"object": "list", "data": cards}

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatRequest):
        loaded = _model(models, request.model)
        messages, grounding = models.prompt(loaded, request.question)
        reply = Reply(answer_meta(loaded.version, grounding))
        limit = request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_NEW_TOKENS
        headers = _answer_headers(reply.meta)
        if not request.stream:
            text = grounding.refusal or models.generate(loaded, messages, limit)
            return JSONResponse(reply.completion(text), headers=headers)
        pieces = iter([grounding.refusal]) if grounding.refusal else models.stream(loaded, messages, limit)
        return StreamingResponse(_events(reply, pieces), media_type="text/event-stream", headers=headers)

    return app


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_api(home: Path, *, host: str, port: int, token: str | None, poll_seconds: float, max_batch: int) -> None:
    """Load the champion, then serve until interrupted (the token is never printed or logged)."""
    import uvicorn

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("tasks.answering").addHandler(handler)
    logging.getLogger("tasks.answering").setLevel(logging.INFO)
    with ServedModels(home, poll_seconds=poll_seconds, max_batch=max_batch) as models:
        who = "the base model (no champion)" if models.champion.info is None else models.champion.version
        print(f"niftytune api: {who} answers on http://{host}:{port}/v1 (model {CHAMPION_MODEL}), on "
              f"{models.champion.device}; " + ("a bearer token is required" if token else "no token required"),
              file=sys.stderr, flush=True)
        uvicorn.run(create_app(models, token), host=host, port=port, log_level="info")
