"""A lock file with a holder record: a filelock on `<name>`, and next to it a JSON record of
who holds it (pid, host, command, since), written once the lock is held and removed before it
is released.

The OS releases the lock when the holder dies (flock), so a crashed writer never wedges
anything; the record only serves the message of whoever waits in vain, so writing it is best
effort (on a full disk the holder's cleanup, which frees the space, must still run).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import filelock

LockTimeout = filelock.Timeout
"""Raised by `HolderLock.acquire` when another process held the lock for the whole timeout."""
COMMAND_CHARS = 200  # of the command line the record keeps

log = logging.getLogger(__name__)


def holder_record() -> dict[str, Any]:
    """Who this process is: pid, host, command line, and since when (UTC, ISO 8601)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:COMMAND_CHARS],
            "since": datetime.now(timezone.utc).isoformat()}


class HolderLock:
    """Context manager: hold the filelock `path` within `timeout` seconds (else LockTimeout),
    with the holder record at `holder_path` while held."""

    def __init__(self, path: Path, holder_path: Path, timeout: float):
        self.path, self.holder_path, self.timeout = Path(path), Path(holder_path), timeout
        self._lock = filelock.FileLock(str(path), timeout=timeout, thread_local=False)

    def acquire(self) -> None:
        """Take the lock (LockTimeout when another holds it past the timeout), then say who holds it."""
        self._lock.acquire()
        self.write_holder()

    def release(self) -> None:
        try:
            self.holder_path.unlink(missing_ok=True)
        finally:
            self._lock.release()

    def __enter__(self) -> "HolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def write_holder(self) -> bool:
        """Write this process's record atomically; False (and a warning) when the disk refuses."""
        from common.files import write_atomic

        try:
            write_atomic(self.holder_path, json.dumps(holder_record()).encode() + b"\n")
            return True
        except OSError as exc:
            log.warning("could not write %s (%s); carrying on: it only names the holder", exc.filename, exc.strerror)
            return False

    def holder(self) -> dict[str, Any]:
        """The record of whoever holds the lock; FileNotFoundError before it is written, ValueError
        when it is unreadable."""
        record = json.loads(self.holder_path.read_text())
        if not isinstance(record, dict):
            raise ValueError(f"{self.holder_path}: not a JSON object")
        return record
