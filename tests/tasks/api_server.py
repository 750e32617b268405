"""Helpers of the answer API tests: the API served by uvicorn on a free port in a thread over a home
with a tiny champion (tests/tasks/conftest.py), versions registered as the daily
run registers them, and what `ask` answers, to compare with."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import uvicorn

from adapters_registry import Registry
from tasks.answering import ask
from tasks.answering.api import create_app
from tasks.answering.serving import CHAMPION_MODEL, ServedModels
from tasks.training.base_model import hash_weight_files
from tests.adapters_registry.fakes import decision, lineage, make_lora_adapter
from tests.flows.readme_processes import wait_for

QUESTION = "What did TCS close at?"
SESSION = "2019-11-29"  # the latest session of the home's TCS bars
TOKENS = 8  # answers of the tiny random model are noise; a few tokens show whose noise it is


@dataclass
class Api:
    url: str
    models: ServedModels

    def client(self, key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health").json()


@contextmanager
def running_api(home: Path, *, token: str | None = None, poll_seconds: float = 0.1) -> Iterator[Api]:
    """`create_app` served by uvicorn in a thread, on a port the OS picks."""
    with ServedModels(home, poll_seconds=poll_seconds) as models, socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(create_app(models, token), log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        wait_for("the API to start", lambda: server.started, timeout=60, interval=0.05)
        try:
            yield Api(f"http://127.0.0.1:{sock.getsockname()[1]}", models)
        finally:
            server.should_exit = True
            thread.join()


def register(home: Path, model_dir: Path, folder: Path, *, seed: int, promote: bool) -> str:
    """Register a new tiny adapter as the daily run does; promoted moves the champion pointer."""
    adapter = make_lora_adapter(model_dir, folder, seed=seed)
    fields = lineage(base_identity=str(model_dir), file_hash=hash_weight_files(model_dir))
    return Registry(home).register(adapter, fields, decision(promote), promote=promote).version


def asked(home: Path, version: str | None = None, question: str = QUESTION) -> str:
    """What `niftytune ask` answers (the champion's answer when `version` is None)."""
    return ask(home, question, version, max_new_tokens=TOKENS).text


def chat(question: str = QUESTION, model: str = CHAMPION_MODEL, **fields) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": TOKENS, **fields}


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
