"""One writer at a time: `registry.lock`, and a sidecar naming the holder (common/lock.py).

The OS releases the lock when the holder dies (flock), so a crashed writer never wedges the
registry; the sidecar only serves the error message of whoever waits in vain.
"""
from __future__ import annotations

from pathlib import Path

from common.lock import HolderLock, LockTimeout

from .format import LOCK_FILE, LOCK_HOLDER_FILE, RegistryError


class RegistryLockedError(RegistryError, TimeoutError):
    """Another writer held the registry lock for longer than the timeout."""


def _describe_holder(lock: HolderLock) -> str:
    try:
        info = lock.holder()
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
        self._lock = HolderLock(registry_dir / LOCK_FILE, registry_dir / LOCK_HOLDER_FILE, timeout)

    def __enter__(self) -> "RegistryLock":
        try:
            self._lock.acquire()
        except LockTimeout:
            raise RegistryLockedError(
                f"registry {self.registry_dir} is locked by {_describe_holder(self._lock)}; "
                f"gave up after {self.timeout:g} s. Wait for that run to finish, or raise "
                f"registry.lock_timeout_seconds.") from None
        return self

    def __exit__(self, *exc_info) -> None:
        self._lock.release()
