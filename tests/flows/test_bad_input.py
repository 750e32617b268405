"""Bad input gets one clear line before Prefect starts, not Prefect's tracebacks: exit status 2
for what the user must fix (profile, flags, date, home), 1 for the state of the world (the
home is busy, the champion is corrupt, Yahoo is unreachable); a traceback only with --debug
(issue 16, failure 6)."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adapters_registry import Registry
from flows import daily_retrain
from flows.cli import main
from flows import processes
from tasks.market.sources import TransientFetchError
from flows.preflight import OneLineForExpectedErrors
from tests.adapters_registry.fakes import decision, lineage, make_fake_adapter
from tests.flows.conftest import HOLD_LOCK, clean_env, free_port

REPO = Path(__file__).resolve().parents[2]


def niftytune(home: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess:
    env = env or clean_env(PYTHONPATH=str(REPO))
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


def yahoo_offline_env() -> dict[str, str]:
    """The environment of a machine where Yahoo cannot be reached, with no network involved:
    yfinance's HTTP client (curl) is sent through a proxy on a local port nothing listens on, so
    every request to Yahoo is refused; the temporary Prefect server on 127.0.0.1 is reached directly."""
    env = {k: v for k, v in clean_env(PYTHONPATH=str(REPO)).items() if not k.lower().endswith("_proxy")}
    dead = f"http://127.0.0.1:{free_port()}"
    proxies = {"https_proxy": dead, "http_proxy": dead, "all_proxy": dead, "no_proxy": "127.0.0.1,localhost"}
    return {**env, **proxies, **{k.upper(): v for k, v in proxies.items()}}


@pytest.mark.parametrize("command", ["fetch", "run"])
def test_yahoo_offline_is_retried_then_fails_in_one_line_without_a_traceback(tmp_path, command):
    profile = tmp_path / "quick-retries.yaml"  # 3 attempts per ticker, without the profiles' 2-4-8 s waits
    profile.write_text("market:\n  fetch_retries: 2\n  fetch_backoff_seconds: 0.01\n")
    home = tmp_path / "home"
    result = niftytune(home, command, "--profile", str(profile), "--tickers", "^NSEI,TCS.NS", "--as-of", "2025-03-28",
                       env=yahoo_offline_env())
    assert_one_clear_line(result, 1, "Yahoo Finance unreachable", "^NSEI, TCS.NS:", "gave up after 3 attempts",
                          "nothing was stored", "over proxy 127.0.0.1")  # the proxy refused it: no network was used
    for symbol in ("^NSEI", "TCS.NS"):  # every failed attempt is one line, the retries are kept
        attempts = [line for line in result.stderr.splitlines()
                    if f"'fetch-{symbol}' - Task run failed with exception" in line]
        assert len(attempts) == 3 and "Retries are exhausted" in attempts[-1], result.stderr[-3000:]
    assert not list((home / "market").glob("*.csv"))


def test_an_empty_csv_fails_the_fetch_in_one_line_naming_the_file(tmp_path, shared_market):
    replay = tmp_path / "replay"
    replay.mkdir()
    shutil.copy(shared_market / "TCS.NS.csv", replay)
    (replay / "INFY.NS.csv").write_bytes(b"")
    result = niftytune(tmp_path / "home", "fetch", "--source", "csv", "--csv-dir", str(replay),
                       "--tickers", "TCS.NS,INFY.NS", "--as-of", "2019-11-29")
    assert_one_clear_line(result, 1, "INFY.NS: PermanentFetchError", str(replay / "INFY.NS.csv"), "empty file",
                          "nothing was stored")


def test_the_console_drops_the_traceback_of_an_expected_error_only():
    def record(exc: Exception) -> logging.LogRecord:
        try:
            raise exc
        except Exception:
            return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "failed: %r", (exc,),
                                     sys.exc_info())

    console = OneLineForExpectedErrors(logging.Formatter("%(message)s"))
    offline = record(TransientFetchError("TCS.NS", "Yahoo Finance unreachable"))
    assert console.format(offline) == "failed: TransientFetchError('TCS.NS: Yahoo Finance unreachable')"
    assert offline.exc_info is not None  # the run's logs in the UI still get the traceback
    assert "Traceback" in console.format(record(KeyError("a bug")))
