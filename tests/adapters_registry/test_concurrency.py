"""One writer at a time: concurrent promotions are serialised, and a writer that cannot get the
lock in time is told who holds it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters_registry import Registry, RegistryLockedError
from tests.adapters_registry.fakes import decision, lineage, make_fake_adapter

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def test_two_processes_promoting_at_once_take_turns(tmp_path):
    home, trace, release = tmp_path / "home", tmp_path / "trace.txt", tmp_path / "release"

    def writer(seed: int, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "tests.adapters_registry.writer", str(home),
                                 str(make_fake_adapter(tmp_path / f"a{seed}", seed)), str(seed),
                                 "--trace", str(trace), *extra], cwd=REPO, env=ENV)

    def steps() -> list[tuple[int, str]]:
        lines = trace.read_text().splitlines() if trace.exists() else []
        return [(int(pid), step) for pid, step in (line.split() for line in lines)]

    def wait_for(proc: subprocess.Popen, step: str) -> None:
        deadline = time.monotonic() + 60
        while (proc.pid, step) not in steps():
            assert proc.poll() is None and time.monotonic() < deadline, f"no {step!r} from {proc.pid}: {steps()}"
            time.sleep(0.05)

    first = writer(1, "--hold-until", str(release))
    try:
        wait_for(first, "locked")
        second = writer(2, "--expect-locked")  # tries the lock once while the first holds it, then waits
        wait_for(second, "found-locked")
    finally:
        release.touch()  # the first may leave only now
    assert [first.wait(timeout=60), second.wait(timeout=60)] == [0, 0]
    assert steps() == [(first.pid, "locked"), (second.pid, "found-locked"), (first.pid, "unlocking"),
                       (second.pid, "locked"), (second.pid, "unlocking")]  # the second entered after the first left

    registry = Registry(home)
    history = registry.history()
    assert [e.event for e in history] == ["register", "promote", "register", "promote"]
    first, second = registry.list()
    assert second.manifest.parent == first.version and registry.champion().version == second.version
    assert registry.verify() == []


def test_a_writer_that_cannot_get_the_lock_names_the_holder(tmp_path):
    home = tmp_path / "home"
    (home / "registry").mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from adapters_registry.lock import RegistryLock\n"
         "with RegistryLock(Path(sys.argv[1]), 5):\n    print('held', flush=True); time.sleep(60)",
         str(home / "registry")], cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        registry = Registry(home, lock_timeout=0.3)
        with pytest.raises(RegistryLockedError) as caught:
            registry.register(make_fake_adapter(tmp_path / "a", 1), lineage(), decision(True), promote=True)
        message = str(caught.value)
        assert f"pid {holder.pid}" in message and "command: '-c" in message and "0.3 s" in message
    finally:
        holder.kill()
        holder.wait()
    assert registry.list() == []
