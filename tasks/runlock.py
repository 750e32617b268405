"""One writer at a time per runtime home, whoever starts it (deployment, CLI, backfill).

Every command that writes a home holds this lock for its whole life: `fetch`, `samples`,
`train`, `run`, `backfill` and `niftytune registry rollback` (the CLI takes it before any
work), and the daily flow itself (for runs the deployment starts). So a run's store snapshot
can only ever hold its own writes: a failed run never puts back data another command wrote.
The registry's own `registry.lock` nests inside it; `python -m adapters_registry rollback`
takes only that one, which is compatible: a run registers only against the champion it scored
(`expected_champion`) and never restores registry files.

The lock is re-entrant within a thread (the CLI holds it, then the flow it runs in the same
thread takes it again); two threads of one process exclude each other like two processes. The
holder writes who it is next to the lock (common/lock.py), so a second writer fails at once with a
message naming the holder. The OS releases the lock when the holder dies (flock).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.lock import HolderLock, LockTimeout

LOCK_FILE = "run.lock"
HOLDER_FILE = "run.lock.holder.json"

_held: dict[tuple[Path, int], int] = {}  # (lock path, thread) -> depth in this process
_guard = threading.Lock()


class RunInProgressError(RuntimeError):
    """Another niftytune command holds this home's lock."""


def _holder(lock: HolderLock) -> str:
    try:
        info = lock.holder()
        return f"pid {info['pid']} on {info['host']} since {info['since']} ({info['command']})"
    except (OSError, ValueError, KeyError):
        return "an unknown process"


def _lock(home: Path, timeout: float = 0.0) -> HolderLock:
    return HolderLock((Path(home) / LOCK_FILE).resolve(), Path(home) / HOLDER_FILE, timeout)


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
    lock = _lock(home, timeout)
    try:
        lock.acquire()
    except LockTimeout:
        raise RunInProgressError(f"another niftytune run is in progress in {home}: {_holder(lock)}; "
                                 f"wait for it to finish (one writer at a time per home)") from None
    with _guard:
        _held[key] = 1
    try:
        yield
    finally:
        with _guard:
            _held.pop(key, None)
        lock.release()


def write_holder(home: Path) -> bool:
    """Say (again) who holds the lock, for the message of whoever waits. Best effort: on a full
    disk it fails, and the holder's cleanup (which frees the space) must still run; call again then."""
    return _lock(home).write_holder()


home_lock = run_lock
