"""A rerun of a day whose promotion was decided, logged and then killed before the pointer
moved finishes what was decided instead of answering "no-op, champion (none)" (issue 16,
failure 1)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from adapters_registry import Registry
from adapters_registry.store import CRASH_ENV
from tests.adapters_registry.fakes import make_fake_adapter
from tests.flows.conftest import run_daily

REPO = Path(__file__).resolve().parents[2]
SESSION = date(2019, 11, 29)  # the session of the fakes' lineage


@pytest.mark.usefixtures("prefect_harness")
def test_rerun_of_a_day_killed_after_its_decision_finishes_the_promotion(tmp_path, fast_profile):
    home = tmp_path / "home"
    env = {**os.environ, CRASH_ENV: "after-register-entry", "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-m", "tests.adapters_registry.writer", str(home),
                             str(make_fake_adapter(tmp_path / "adapter", 1)), "1"], cwd=REPO, env=env, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    registry = Registry(home)
    decided = registry.list()[0].version
    assert registry.champion() is None  # the promotion was decided and logged, the pointer never moved

    summary = run_daily(home=str(home), profile=str(fast_profile), as_of=SESSION).result()

    assert summary.status == "no-op" and summary.champion == decided == registry.champion().version
    last = registry.history()[-1]
    assert (last.event, last.version) == ("promote", decided) and "interrupted" in last.reason
    assert registry.verify() == []
