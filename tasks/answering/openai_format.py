"""The OpenAI chat-completions wire format, as much of it as the answer API (api.py) speaks.

Requests: `ChatRequest` reads `model`, `messages`, `stream` and `max_tokens` (or
`max_completion_tokens`); the question is the last user message. Other fields (temperature,
top_p, ...) are accepted and ignored: answers are greedy, as the gate scored them. Responses:
`completion`, `chunk` (sent as server-sent `event`s, ending in `DONE`), `model_card`, and
`error_body` (`{"error": {"message", "type", "param", "code"}}`). Every answer carries a
`niftytune` object (`answer_meta`): the version that answered and the session of its figures.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters_registry import VersionInfo
from tasks.answering.ground import Grounding

DONE = "data: [DONE]\n\n"


class _Wire(BaseModel):
    # strict: "stream": "yes" or "model": 1 is an error, not a guess; unknown fields are kept, unused
    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(_Wire):
    type: str
    text: str | None = None


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        """The message's text (the text parts of a list of parts, joined)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content or [] if part.type == "text")


class ChatRequest(_Wire):
    """A chat completion request. System messages and earlier turns are not used: the adapter was
    trained on one question with its own system prompt and the question's data sheet."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @field_validator("messages")
    @classmethod
    def _asks_something(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        users = [m for m in messages if m.role == "user"]
        if not users:
            raise ValueError("no message has the role 'user'; the last user message is the question answered")
        if not users[-1].text.strip():
            raise ValueError("the last user message has no text")
        return messages

    @property
    def question(self) -> str:
        return [m for m in self.messages if m.role == "user"][-1].text


def answer_meta(version: str, grounding: Grounding) -> dict[str, Any]:
    """Who answered and from which session's figures (None for a refusal: it states none)."""
    return {"version": version, "session": grounding.session and grounding.session.isoformat(),
            "symbols": list(grounding.symbols), "refused": grounding.refusal is not None}


@dataclass(frozen=True)
class Reply:
    """What every body of one completion (or every chunk of one stream) repeats."""

    meta: dict[str, Any]
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _body(self, kind: str, choice: dict[str, Any]) -> dict[str, Any]:
        # `model` is the version that answered, as OpenAI names the snapshot behind an alias
        return {"id": self.id, "object": kind, "created": self.created, "model": self.meta["version"],
                "choices": [{"index": 0, **choice}], "niftytune": self.meta}

    def completion(self, text: str) -> dict[str, Any]:
        return self._body("chat.completion", {"message": {"role": "assistant", "content": text},
                                              "finish_reason": "stop", "logprobs": None})

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return self._body("chat.completion.chunk", {"delta": delta, "finish_reason": finish_reason,
                                                    "logprobs": None})


def event(body: dict[str, Any]) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(body)}\n\n"


def model_card(name: str, version: str, info: VersionInfo | None) -> dict[str, Any]:
    """An entry of GET /v1/models; `niftytune` says which version it is and what it was trained for."""
    created = int(info.manifest.created.timestamp()) if info else 0
    trained_for = info.manifest.lineage.session if info else None
    return {"id": name, "object": "model", "created": created, "owned_by": "niftytune",
            "niftytune": {"version": version, "trained_for_session": trained_for and trained_for.isoformat(),
                          "promoted": info.promoted if info else None}}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def validation_error_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """A request body pydantic refused, as OpenAI reports it: the first fault, its field as `param`."""
    first = errors[0]
    if first["type"] == "json_invalid":
        reason = first.get("ctx", {}).get("error", "")
        return error_body(f"We could not parse the JSON body of your request: {reason}", "invalid_request_error",
                          code="invalid_json")
    param = ".".join(str(part) for part in first["loc"][1:]) or None  # loc starts with "body"
    message = first["msg"].removeprefix("Value error, ")
    if param is None:
        message = f"The request body must be a JSON object: {message}"
    return error_body(f"{param}: {message}" if param else message, "invalid_request_error", param,
                      code=first["type"])
