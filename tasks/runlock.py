"""One writer at a time per runtime home, whoever starts it (deployment, CLI, backfill).

Every command that writes a home holds this lock for its whole life: `fetch`, `samples`,
`train`, `run`, `backfill` and `niftytune registry rollback` (the CLI takes it before any
work), and the daily flow itself (for runs the deployment starts). So a run's store snapshot
can only ever hold its own writes: a failed run never puts back data another command wrote.
The registry's own `registry.lock` nests inside it; `python -m adapters_registry rollback`
takes only that one, which is compatible: a run registers only against the champion it scored
(`expected_champion`) and never restores registry files.

The lock is re-entrant within a thread (the CLI holds it, then the flow it runs in the same
thread takes it again); two threads of one process exclude each other like two processes. The holder writes who it is next to the lock, so a second writer fails at once with a
message naming the holder. The OS releases the lock when the holder dies (flock).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from tasks.market.store import atomic_write_bytes

LOCK_FILE = "run.lock"
HOLDER_FILE = "run.lock.holder.json"

log = logging.getLogger(__name__)

_held: dict[tuple[Path, int], int] = {}  # (lock path, thread) -> depth in this process
_guard = threading.Lock()


class RunInProgressError(RuntimeError):
    """Another niftytune command holds this home's lock."""


def _holder(home: Path) -> str:
    try:
        info = json.loads((home / HOLDER_FILE).read_text())
        return f"pid {info['pid']} on {info['host']} since {info['since']} ({info['command']})"
    except (OSError, ValueError, KeyError):
        return "an unknown process"


@contextmanager
def run_lock(home: Path, timeout: float = 0.0) -> Iterator[None]:
    """Hold the home's lock for the block (re-entrant in this process), or raise
    RunInProgressError naming the holder."""
    path = (Path(home) / LOCK_FILE).resolve()
    key = (path, threading.get_ident())
    with _guard:
        nested = bool(_held.get(key))
        if nested:
            _held[key] += 1
    if nested:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    with _acquired(Path(home), path, key, timeout):
        yield


@contextmanager
def _acquired(home: Path, path: Path, key: tuple[Path, int], timeout: float) -> Iterator[None]:
    lock = FileLock(str(path), timeout=timeout, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise RunInProgressError(f"another niftytune run is in progress in {home}: {_holder(home)}; "
                                 f"wait for it to finish (one writer at a time per home)") from None
    with _guard:
        _held[key] = 1
    try:
        write_holder(home)
        yield
    finally:
        with _guard:
            _held.pop(key, None)
        (home / HOLDER_FILE).unlink(missing_ok=True)
        lock.release()


def write_holder(home: Path) -> bool:
    """Say who holds the lock, for the message of whoever waits. Best effort: on a full disk it
    fails, and the holder's cleanup (which frees the space) must still run; call again then."""
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)[:200]}
    try:
        atomic_write_bytes(Path(home) / HOLDER_FILE, json.dumps(info).encode())
        return True
    except OSError as exc:
        log.warning("could not write %s (%s); carrying on: it only names the holder", exc.filename, exc.strerror)
        return False


home_lock = run_lock
