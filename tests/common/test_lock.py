"""common.lock: one holder at a time; whoever waits in vain can read who holds it."""
from __future__ import annotations

import os

import pytest

from common.lock import HolderLock, LockTimeout


def test_the_holder_record_names_this_process_while_held_and_is_gone_after(tmp_path):
    lock = HolderLock(tmp_path / "x.lock", tmp_path / "x.lock.holder", timeout=0)
    with lock:
        record = lock.holder()
        assert record["pid"] == os.getpid() and record["host"] and "since" in record and "command" in record
    assert not (tmp_path / "x.lock.holder").exists()
    with pytest.raises(FileNotFoundError):
        lock.holder()


def test_a_second_holder_times_out_and_can_read_the_first(tmp_path):
    first = HolderLock(tmp_path / "x.lock", tmp_path / "x.lock.holder", timeout=0)
    second = HolderLock(tmp_path / "x.lock", tmp_path / "x.lock.holder", timeout=0.1)
    with first:
        with pytest.raises(LockTimeout):
            second.acquire()
        assert second.holder()["pid"] == os.getpid()
    with second:  # released: free again
        pass


def test_an_unwritable_holder_record_does_not_stop_the_holder(tmp_path, caplog):
    lock = HolderLock(tmp_path / "x.lock", tmp_path / "missing-folder" / "holder", timeout=0)
    with lock:
        assert "only names the holder" in caplog.text


def test_the_registry_and_the_home_lock_name_the_holder_in_their_own_words(tmp_path):
    from adapters_registry.format import LOCK_FILE, LOCK_HOLDER_FILE
    from adapters_registry.lock import RegistryLock, RegistryLockedError
    from tasks.runlock import RunInProgressError, _acquired

    holder = HolderLock(tmp_path / LOCK_FILE, tmp_path / LOCK_HOLDER_FILE, timeout=0)
    with holder, pytest.raises(RegistryLockedError, match=rf"locked by pid {os.getpid()} on host .* \(command: "):
        with RegistryLock(tmp_path, timeout=0.05):
            pass
    home = tmp_path / "home"
    home.mkdir()
    with HolderLock((home / "run.lock").resolve(), home / "run.lock.holder.json", timeout=0):
        with pytest.raises(RunInProgressError, match=rf"in progress in {home}: pid {os.getpid()} on .* since "):
            with _acquired(home, (home / "run.lock").resolve(), ("other", 0), 0):
                pass
