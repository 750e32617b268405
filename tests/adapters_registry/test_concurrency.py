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
    home, trace = tmp_path / "home", tmp_path / "trace.txt"
    start = time.time() + 2.0  # both import, then begin together
    writers = [subprocess.Popen([sys.executable, "-m", "tests.adapters_registry.writer", str(home),
                                 str(make_fake_adapter(tmp_path / f"a{seed}", seed)), str(seed),
                                 "--trace", str(trace), "--start", str(start)], cwd=REPO, env=ENV)
               for seed in (1, 2)]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]

    spans: dict[str, dict[str, float]] = {}
    for line in trace.read_text().splitlines():
        pid, step, at = line.split()
        spans.setdefault(pid, {})[step] = float(at)
    first_span, second_span = sorted(spans.values(), key=lambda s: s["locked"])
    assert first_span["unlocking"] <= second_span["locked"]  # the second entered only after the first left
    assert second_span["begin"] < first_span["unlocking"]  # though it had asked while the first held it

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
