"""The models the answer API serves (tasks/answering/api.py): the champion, kept loaded and followed
across promotions and rollbacks without a restart, and versions asked for by id.

    with ServedModels(home) as models:
        loaded = models.resolve("niftytune-champion")
        messages, grounding = models.prompt(loaded, "What did TCS close at?")   # as `ask` grounds it
        text = models.generate(loaded, messages, 320)          # or models.stream(...): text pieces

The swap: a thread reads champion.json every `poll_seconds` (a file of a few hundred bytes). When
it changes and names another version (or none: the base model answers, as in `ask`), that version
is loaded and verified beside the one served, then becomes the champion. A request keeps the
model it started with, so requests in flight finish on the old one. A version that fails to verify
or to load is never switched to: the old one keeps serving and `problem` names the version and
why, until the pointer moves again.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adapters_registry import RegistryIntegrityError, RegistryView, VersionInfo
from adapters_registry.format import CHAMPION_FILE, REGISTRY_DIR
from tasks.answering.ask import BASE, config_for, load_base_model, market_view, prompt_for
from tasks.answering.batching import GenerationQueue
from tasks.answering.ground import Grounding, MarketView
from tasks.market.calendar import today_in_kolkata
from tasks.config import Config

log = logging.getLogger(__name__)

CHAMPION_MODEL = "niftytune-champion"
"""The model name that always means the champion (the base model while there is none)."""


@dataclass(frozen=True, eq=False)
class Loaded:
    """A model ready to answer: its version (`base` for the base model), config, model, tokenizer."""

    version: str
    info: VersionInfo | None
    cfg: Config
    model: Any
    tokenizer: Any

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)


def load_version(home: Path, info: VersionInfo | None) -> Loaded:
    """`info`'s adapter on its base, verified before loading (`load_promoted`) and again after, so
    that the files read are the files verified; the base model when `info` is None."""
    from tasks.answering.loading import load_promoted

    cfg = config_for(home, info)
    if info is None:
        return Loaded(BASE, None, cfg, *load_base_model(home, cfg))
    model, tokenizer, info = load_promoted(home, info.version)
    problems = RegistryView(home).verify_version(info.version)
    if problems:
        raise RegistryIntegrityError(f"{info.version} changed while it was loaded: " + "; ".join(problems))
    return Loaded(info.version, info, cfg, model, tokenizer)


@dataclass(frozen=True)
class Problem:
    """Why the version champion.json names is not the one served."""

    version: str
    message: str
    since: datetime


class ServedModels:
    """The champion and recently asked versions, loaded; the watcher thread and the generation queue."""

    def __init__(self, home: str | Path, *, poll_seconds: float = 2.0, max_batch: int = 8, keep_versions: int = 2):
        self.home = Path(home)
        self.poll_seconds = poll_seconds
        self.keep_versions = keep_versions
        self.problem: Problem | None = None
        self._lock = threading.Lock()     # guards the fields below; never held while loading or generating
        self._loading = threading.Lock()  # one model loads at a time
        self._pointer = self._read_pointer()
        self._champion = load_version(self.home, RegistryView(self.home).champion())
        self._versions: OrderedDict[str, Loaded] = OrderedDict()
        self._view: tuple[Config, tuple, MarketView] | None = None
        self._queue = GenerationQueue(max_batch)
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="niftytune-champion-watch", daemon=True)

    def __enter__(self) -> "ServedModels":
        self._queue.start()
        if self.poll_seconds > 0:
            self._watcher.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stopping.set()
        self._queue.stop()
        if self._watcher.is_alive():
            self._watcher.join()

    @property
    def champion(self) -> Loaded:
        with self._lock:
            return self._champion

    # --- which model answers ----------------------------------------------------------

    def resolve(self, name: str) -> Loaded:
        """The champion for CHAMPION_MODEL (or its id), else the version `name`, loaded and verified
        on first use; VersionNotFoundError, RegistryIntegrityError as `load_promoted` raises them."""
        champion = self.champion
        if name in (CHAMPION_MODEL, champion.version):
            return champion
        with self._loading:
            with self._lock:
                if name in self._versions:
                    self._versions.move_to_end(name)
                    return self._versions[name]
            loaded = load_version(self.home, RegistryView(self.home).get(name))
            with self._lock:
                self._versions[name] = loaded
                while len(self._versions) > self.keep_versions:
                    self._versions.popitem(last=False)
        return loaded

    def refresh(self) -> None:
        """Follow the champion pointer once: when it moved to another version, load and verify that
        one beside the served one, then switch (the watcher calls this every `poll_seconds`)."""
        pointer = self._read_pointer()
        if pointer == self._pointer:
            return
        self._pointer = pointer
        wanted = _named(pointer)
        with self._loading:
            try:
                info = RegistryView(self.home).champion()  # the pointer, checked against the ledger
                wanted = info.version if info else BASE
                if wanted == self.champion.version:
                    self.problem = None
                    return
                log.info("champion moved to %s: loading and verifying it beside %s", wanted, self.champion.version)
                loaded = load_version(self.home, info)
            except Exception as exc:  # whatever failed, the served model keeps serving
                self.problem = Problem(wanted, f"{type(exc).__name__}: {exc}", datetime.now(timezone.utc))
                log.error("not switching to %s, still serving %s: %s", wanted, self.champion.version,
                          self.problem.message)
                return
        with self._lock:
            old, self._champion, self.problem = self._champion, loaded, None
        log.info("now serving %s (was %s)", loaded.version, old.version)

    def _read_pointer(self) -> bytes | None:
        try:
            return (self.home / REGISTRY_DIR / CHAMPION_FILE).read_bytes()
        except FileNotFoundError:
            return None

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # a bug here must not stop the watching
                log.exception("checking the champion pointer failed")

    def health(self) -> dict[str, Any]:
        """What is served, and why the pointer's version is not (when it is not)."""
        champion, problem = self.champion, self.problem
        return {"status": "degraded" if problem else "ok", "serving": champion.version, "device": champion.device,
                "problem": problem and {"version": problem.version, "message": problem.message,
                                        "since": problem.since.isoformat()}}

    def verified_versions(self) -> list[VersionInfo]:
        """Every registered version that passes what `registry verify` checks of it."""
        view = RegistryView(self.home)
        entries = view.history()
        return [info for info in view.list() if not view.verify_version(info.version, entries)]

    # --- answering ----------------------------------------------------------------------

    def prompt(self, loaded: Loaded, question: str) -> tuple[list[dict], Grounding]:
        """The conversation `ask` would answer `question` from, and its grounding (maybe a refusal)."""
        return prompt_for(question, loaded.cfg, self._market_view(loaded.cfg), today_in_kolkata())

    def generate(self, loaded: Loaded, messages: list[dict], max_new_tokens: int) -> str:
        """The greedy answer (batched with the questions waiting beside it)."""
        return self._queue.submit(loaded, messages, max_new_tokens).result()

    def stream(self, loaded: Loaded, messages: list[dict], max_new_tokens: int) -> Iterator[str]:
        """The greedy answer in pieces as they are generated (leading white space dropped, as
        `generate` strips it); raises what generation raised, after the pieces."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
        done = self._queue.submit(loaded, messages, max_new_tokens, streamer=streamer)
        started = False
        for piece in streamer:
            piece = piece if started else piece.lstrip()
            if piece:
                started = True
                yield piece
        done.result()

    def _market_view(self, cfg: Config) -> MarketView:
        """The store as `ask` reads it, read again only when a bars file of the universe changed."""
        from tasks.market.store import bars_path

        stamp = tuple(_stamp(bars_path(self.home, spec.symbol)) for spec in cfg.market.tickers)
        with self._lock:
            if self._view and self._view[0] is cfg and self._view[1] == stamp:
                return self._view[2]
        view = market_view(self.home, cfg)
        with self._lock:
            self._view = (cfg, stamp, view)
        return view


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Changes whenever the store replaces the file (every write is a rename of a new file)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _named(pointer: bytes | None) -> str:
    """The version a champion.json names, however damaged (for a problem report)."""
    try:
        return json.loads(pointer or b"{}").get("version") or BASE
    except (ValueError, AttributeError):
        return "unreadable champion.json"
