"""One writer at a time: a filelock on `registry.lock`, and a sidecar naming the holder.

The OS releases the lock when the holder dies (flock), so a crashed writer never wedges the
registry; the sidecar only serves the error message of whoever waits in vain.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

import filelock

from .atomic import write_atomic
from .format import LOCK_FILE, LOCK_HOLDER_FILE, RegistryError

log = logging.getLogger(__name__)


class RegistryLockedError(RegistryError, TimeoutError):
    """Another writer held the registry lock for longer than the timeout."""


def _describe_holder(registry_dir: Path) -> str:
    try:
        info = json.loads((registry_dir / LOCK_HOLDER_FILE).read_text())
        return (f"pid {info['pid']} on host {info['host']} (command: {info['command']!r}, "
                f"holding since {info['since']})")
    except FileNotFoundError:
        return "an unknown process (it has not written its holder file yet)"
    except (ValueError, KeyError, TypeError) as exc:
        return f"an unknown process (unreadable holder file: {exc})"


class RegistryLock:
    """Context manager: acquire `registry.lock` within `timeout` seconds or raise
    RegistryLockedError naming the holder; write/remove the holder sidecar."""

    def __init__(self, registry_dir: Path, timeout: float):
        self.registry_dir = registry_dir
        self.timeout = timeout
        self._lock = filelock.FileLock(registry_dir / LOCK_FILE, timeout=timeout, thread_local=False)

    def __enter__(self) -> "RegistryLock":
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise RegistryLockedError(
                f"registry {self.registry_dir} is locked by {_describe_holder(self.registry_dir)}; "
                f"gave up after {self.timeout:g} s. Wait for that run to finish, or raise "
                f"registry.lock_timeout_seconds.") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                  "since": datetime.now(timezone.utc).isoformat()}
        try:
            write_atomic(self.registry_dir / LOCK_HOLDER_FILE, json.dumps(holder).encode() + b"\n")
        except OSError as exc:  # a full disk: the writer's cleanup, which frees space, must still run
            log.warning("could not write %s (%s); it only names the holder", exc.filename, exc.strerror)
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            (self.registry_dir / LOCK_HOLDER_FILE).unlink(missing_ok=True)
        finally:
            self._lock.release()
