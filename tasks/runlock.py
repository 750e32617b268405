"""One daily run at a time per runtime home, whoever starts it (deployment, CLI, backfill).

The deployment has a concurrency limit of 1, but `niftytune run`, a backfill or a second
`niftytune serve` start the flow outside it; this lock covers them all. The holder writes who
it is next to the lock, so a second run fails at once with a message naming the holder.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_FILE = "run.lock"
HOLDER_FILE = "run.lock.holder.json"


class RunInProgressError(RuntimeError):
    """Another daily run holds this home's run lock."""


def _holder(home: Path) -> str:
    try:
        info = json.loads((home / HOLDER_FILE).read_text())
        return f"pid {info['pid']} on {info['host']} since {info['since']} ({info['command']})"
    except (OSError, ValueError, KeyError):
        return "an unknown process"


@contextmanager
def run_lock(home: Path, timeout: float = 0.0) -> Iterator[None]:
    """Hold the home's run lock for the block, or raise RunInProgressError naming the holder."""
    lock = FileLock(str(home / LOCK_FILE), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise RunInProgressError(f"another niftytune run is in progress in {home}: {_holder(home)}; "
                                 f"wait for it to finish (one run at a time per home)") from None
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)[:200]}
        (home / HOLDER_FILE).write_text(json.dumps(info))
        yield
    finally:
        (home / HOLDER_FILE).unlink(missing_ok=True)
        lock.release()
