"""Cleanup at the start of every writer: what killed writers left is removed (or put back),
what finished commands produced is kept (issue 16, failures 3 and 5)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from adapters_registry import Registry
from adapters_registry.format import STAGING_DIR
from adapters_registry.store import CRASH_ENV
from tasks.housekeeping import scratch_run_id, tidy_home
from tests.adapters_registry.fakes import decision, lineage, make_fake_adapter

REPO = Path(__file__).resolve().parents[2]


def fake_run(home: Path, run_id: str, finished: bool) -> Path:
    run = home / "runs" / run_id
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "optimizer.pt").write_bytes(b"\0" * 1024)
    if finished:
        (run / "adapter").mkdir()
        (run / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
        (run / "adapter" / "training.json").write_text("{}")
    return run


def test_scratch_of_killed_daily_runs_is_removed(tmp_path):
    killed_mid_training = fake_run(tmp_path, scratch_run_id(), finished=False)
    killed_before_decision = fake_run(tmp_path, scratch_run_id(), finished=True)
    tidy_home(tmp_path)
    assert not killed_mid_training.exists() and not killed_before_decision.exists()


def test_a_finished_train_command_keeps_its_adapter_and_a_killed_one_does_not(tmp_path):
    kept = fake_run(tmp_path, "20191129T120000Z-abcdef", finished=True)
    killed = fake_run(tmp_path, "20191129T130000Z-fedcba", finished=False)
    tidy_home(tmp_path)
    assert (kept / "adapter" / "adapter_model.safetensors").is_file() and not killed.exists()


def test_market_staging_and_temp_files_are_removed_at_once_not_after_a_day(tmp_path):
    staging = tmp_path / "market" / ".staging"
    staging.mkdir(parents=True)
    staged = staging / "TCS.NS.0123456789ab.csv"
    staged.write_text("fresh, but its writer is dead")
    temp = tmp_path / "market" / ".TCS.NS.csv.0123456789ab.tmp"
    temp.write_text("half a write")
    store_file = tmp_path / "market" / "TCS.NS.csv"
    store_file.write_text("kept")
    tidy_home(tmp_path)
    assert not staged.exists() and not temp.exists() and store_file.read_text() == "kept"


def test_a_sample_set_moved_aside_by_a_killed_write_is_put_back(tmp_path):
    samples = tmp_path / "samples"
    aside = samples / ".2019-11-29.replaced-1a2b3c4d"
    aside.mkdir(parents=True)
    (aside / "meta.json").write_text("{}")
    half_written = samples / ".2019-11-28-xyz"
    half_written.mkdir()
    tidy_home(tmp_path)
    assert (samples / "2019-11-29" / "meta.json").is_file() and not half_written.exists()


def test_the_staging_folder_of_a_killed_registration_is_removed(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, CRASH_ENV: "mid-copy", "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-m", "tests.adapters_registry.writer", str(home),
                             str(make_fake_adapter(tmp_path / "a", 1)), "1"], cwd=REPO, env=env, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert list((home / "registry" / STAGING_DIR).iterdir())

    tidy_home(home)

    assert list((home / "registry" / STAGING_DIR).iterdir()) == [] and Registry(home).verify() == []
    registry = Registry(home)
    registry.register(make_fake_adapter(tmp_path / "b", 2), lineage(), decision(True, "base"), promote=True)
    assert registry.verify() == []

