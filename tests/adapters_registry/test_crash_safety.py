"""A promoting process killed (SIGKILL) at each step of a promotion leaves a registry whose
pointer names a complete, verified version (the old one before the pointer swap, the new one
after), that verifies, and that the next writer cleans up."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from adapters_registry import Registry
from adapters_registry.format import CHAMPION_TEMP_PREFIX, STAGING_DIR
from adapters_registry.store import CRASH_ENV, CRASH_STEPS
from tests.adapters_registry.fakes import decision, lineage, make_fake_adapter

REPO = Path(__file__).resolve().parents[2]
NEW_CHAMPION_FROM = "after-pointer-replace"  # the first step at which the swap has happened


def run_writer(home: Path, adapter: Path, seed: int, crash_at: str) -> subprocess.CompletedProcess:
    env = {**os.environ, CRASH_ENV: crash_at, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tests.adapters_registry.writer", str(home), str(adapter), str(seed)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_a_promotion_killed_at_any_step_leaves_a_verified_champion(tmp_path, step):
    home = tmp_path / "home"
    registry = Registry(home)
    old = registry.register(make_fake_adapter(tmp_path / "old", 1), lineage(), decision(True, "base"),
                            promote=True).version

    result = run_writer(home, make_fake_adapter(tmp_path / "new", 2), 2, crash_at=step)
    assert result.returncode == -signal.SIGKILL, result.stderr

    champion = registry.champion()
    assert champion is not None and registry.verify_version(champion.version) == []
    new_versions = [v.version for v in registry.list() if v.version != old]
    expected = new_versions[0] if CRASH_STEPS.index(step) >= CRASH_STEPS.index(NEW_CHAMPION_FROM) else old
    assert champion.version == expected
    assert registry.champion_at(registry.pointer().since) == expected
    assert registry.verify() == []  # staging leftovers and a temp pointer are not problems


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_the_next_writer_cleans_up_and_completes_the_ledger(tmp_path, step):
    home = tmp_path / "home"
    registry = Registry(home)
    registry.register(make_fake_adapter(tmp_path / "old", 1), lineage(), decision(True, "base"), promote=True)
    assert run_writer(home, make_fake_adapter(tmp_path / "new", 2), 2, crash_at=step).returncode == -signal.SIGKILL

    registry.register(make_fake_adapter(tmp_path / "next", 3), lineage(), decision(False), promote=False)

    assert list((registry.root / STAGING_DIR).iterdir()) == []
    assert list(registry.root.glob(CHAMPION_TEMP_PREFIX + "*")) == []
    history = registry.history()
    registered = {e.version for e in history if e.event == "register"}
    assert registered == {v.version for v in registry.list()}  # every version has its entry
    moves = [e for e in history if e.event in ("promote", "rollback")]
    assert moves[-1].version == registry.champion().version
    interrupted = [v.version for v in registry.list()][1]
    if step != "mid-copy" and registry.champion().version != interrupted:  # decided, never carried out
        assert any(e.event == "recover" and e.version == interrupted for e in history)
    assert registry.verify() == []


def test_a_promotion_killed_after_its_decision_is_logged_is_finished_by_the_next_writer(tmp_path):
    home = tmp_path / "home"
    registry = Registry(home)
    old = registry.register(make_fake_adapter(tmp_path / "old", 1), lineage(), decision(True, "base"),
                            promote=True).version
    assert run_writer(home, make_fake_adapter(tmp_path / "new", 2), 2,
                      crash_at="after-register-entry").returncode == -signal.SIGKILL
    new = registry.list()[-1].version
    # the crash leaves the old champion and no promote entry for the new one
    assert registry.champion().version == old and registry.verify() == []
    assert not any(e.event == "promote" and e.version == new for e in registry.history())

    registry.register(make_fake_adapter(tmp_path / "next", 3), lineage(), decision(False), promote=False)

    assert registry.champion().version == new  # the decision was carried out, not dropped
    moves = [e for e in registry.history() if e.event == "promote"]
    assert (moves[-1].version, moves[-1].previous) == (new, old) and "interrupted" in moves[-1].reason
    assert registry.verify() == []


def test_recover_finishes_a_decided_promotion_and_reports_it(tmp_path):
    home = tmp_path / "home"
    assert run_writer(home, make_fake_adapter(tmp_path / "new", 2), 2,
                      crash_at="before-pointer-replace").returncode == -signal.SIGKILL
    registry = Registry(home)
    assert registry.champion() is None

    added = registry.recover()

    assert [(e.event, e.version) for e in added] == [("promote", registry.list()[0].version)]
    assert registry.champion().version == registry.list()[0].version and registry.verify() == []
    assert registry.recover() == []  # nothing left to do
