"""Bad input gets one clear line before Prefect starts, not Prefect's tracebacks: exit status 2
for what the user must fix (profile, flags, date, home), 1 for the state of the world (the
home is busy, the champion is corrupt); a traceback only with --debug (issue 16, failure 6)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters_registry import Registry
from flows import daily_retrain
from flows.cli import main
from tasks import processes
from tests.adapters_registry.fakes import decision, lineage, make_fake_adapter
from tests.flows.conftest import HOLD_LOCK, clean_env

REPO = Path(__file__).resolve().parents[2]


def niftytune(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = clean_env(PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "flows.cli", *args, "--home", str(home)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_clear_line(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and all(word in errors[0] for word in words), result.stderr[-3000:]


@pytest.mark.parametrize("flags, words", [
    (["--profile", "no-such-profile"], ["unknown profile", "no-such-profile"]),
    (["--as-of", "2999-01-01"], ["--as-of 2999-01-01 is in the future"]),
    (["--max-steps", "0"], ["max_steps", ">= 1"]),
    (["--max-steps", "-5"], ["max_steps", "-5"]),
    (["--min-delta", "inf"], ["min_delta", "finite"]),
], ids=["profile", "future", "max-steps-0", "max-steps-negative", "min-delta-inf"])
def test_a_bad_flag_of_run_is_one_line_and_exit_status_2_before_prefect_starts(tmp_path, flags, words, monkeypatch,
                                                                               capsys):
    def prefect_started(*args, **kwargs):
        raise AssertionError("Prefect was started")

    monkeypatch.setattr(processes, "start_ephemeral_prefect", prefect_started)
    monkeypatch.setattr(daily_retrain, "daily_retrain", prefect_started)
    code = main(["run", "--home", str(tmp_path / "home"), "--source", "synthetic", *flags])
    err = capsys.readouterr().err
    assert_one_clear_line(subprocess.CompletedProcess([], code, "", err), 2, *words)


def test_a_bad_flag_from_the_command_line_prints_no_traceback(tmp_path):
    result = niftytune(tmp_path / "home", "run", "--source", "synthetic", "--max-steps", "0")
    assert_one_clear_line(result, 2, "max_steps")


def test_a_home_prefect_cannot_write_to_is_named(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    if os.geteuid() == 0:  # root writes through permissions; a folder of /sys refuses even root
        (home / "prefect").symlink_to("/sys/kernel", target_is_directory=True)
    else:
        (home / "prefect").mkdir(mode=0o500)
    result = niftytune(home, "run", "--source", "synthetic", "--as-of", "2025-03-28")
    assert_one_clear_line(result, 2, "PREFECT_HOME", str(home / "prefect"), "not writable")


def test_run_while_the_home_is_busy_names_the_holder_without_a_traceback(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(home)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = niftytune(home, "run", "--source", "synthetic", "--as-of", "2025-03-28")
    finally:
        holder.kill()
        holder.wait()
    assert_one_clear_line(result, 1, "in progress", f"pid {holder.pid}")


def test_run_with_a_corrupt_champion_stops_before_prefect_in_one_line(tmp_path):
    home = tmp_path / "home"
    registry = Registry(home)
    champion = registry.register(make_fake_adapter(tmp_path / "a", 1), lineage(), decision(True, "base"), promote=True)
    (champion.path / "adapter_model.safetensors").write_bytes(b"flipped")
    result = niftytune(home, "run", "--source", "synthetic", "--as-of", "2025-03-28")
    assert_one_clear_line(result, 1, champion.version, "adapter_model.safetensors")
    assert not (home / "market").exists()  # nothing was fetched


def test_debug_shows_the_traceback(tmp_path):
    result = niftytune(tmp_path / "home", "run", "--profile", "no-such-profile", "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr
