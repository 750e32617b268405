"""The `niftytune` command line (issue 6): every subcommand documents --home; bad input fails
with one clear line and a usage exit status, before anything is written."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from unittest import mock

import httpx
import pytest
import typer

from flows import daily_retrain, processes
from flows.cli import build_app, common, main
from tasks.market.calendar import resolve_session
from tasks.config import load_config
from tasks.market.data import commit_staged, stage_new_bars
from tasks.market.store import load_bars, stored_symbols
from tasks.reporting import RunSummary
from tests.flows.conftest import file_digests, free_port
from tests.flows.readme_processes import PrefectServer, start_process, stop_process, wait_for

SESSION = date(2025, 3, 28)  # a Friday session


def subcommands() -> list[list[str]]:
    """Every subcommand path of the CLI: `fetch`, ..., `registry`, `registry list`, ..."""
    def walk(group, prefix: list[str]) -> list[list[str]]:
        found = []
        for name, sub in getattr(group, "commands", {}).items():
            found += [prefix + [name]] + walk(sub, prefix + [name])
        return found

    return walk(typer.main.get_command(build_app()), [])


@pytest.fixture(autouse=True)
def restored_environ():
    """The CLI exports settings for the home it resolves (PREFECT_HOME, ...): keep them out of the
    rest of the test session."""
    with mock.patch.dict(os.environ):
        yield


@pytest.mark.parametrize("command", subcommands(), ids=" ".join)
def test_every_subcommand_help_exits_0_and_documents_home(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main(command + ["--help"])
    assert exited.value.code == 0
    assert "--home" in capsys.readouterr().out


def test_registry_on_an_empty_home_lists_nothing_says_there_is_no_champion_and_writes_nothing(tmp_path, capsys):
    # As the README and `make demo` write it: `niftytune registry list --home DIR`.
    home = str(tmp_path)
    assert main(["registry", "list", "--home", home]) == 0
    assert capsys.readouterr().out.split() == ["VERSION", "CREATED", "DECISION", "LOSS", "BASELINE", "DELTA", "PARENT"]
    assert main(["registry", "list", "--json", "--home", home]) == 0 and capsys.readouterr().out.strip() == "[]"
    assert main(["registry", "promoted", "--home", home]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and f"no champion in {tmp_path / 'registry'}" in captured.err
    assert list(tmp_path.iterdir()) == []  # a query creates no registry


@pytest.mark.parametrize("command", [["run", "--as-of", "2019-13-45"], ["backfill", "--from", "2019-13-45",
                                                                          "--to", "2019-11-29"]],
                         ids=["run --as-of", "backfill --from"])
def test_bad_date_is_a_usage_error_naming_the_value(command, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(command + ["--home", str(tmp_path)])
    assert exited.value.code == 2
    assert "not a date (YYYY-MM-DD): '2019-13-45'" in capsys.readouterr().err


def test_bad_date_exits_2_from_the_command_line(tmp_path):
    script = Path(sys.executable).with_name("niftytune")  # the installed console script
    command = [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]
    result = subprocess.run(command + ["run", "--home", str(tmp_path), "--as-of", "tomorrow"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not a date (YYYY-MM-DD): 'tomorrow'" in result.stderr


def test_csv_source_without_csv_dir_fails_clearly_and_changes_nothing(tmp_path, capsys):
    home = tmp_path / "home"
    (home / "market").mkdir(parents=True)
    (home / "market" / "TCS.NS.csv").write_text("stored bars\n")
    before = file_digests(home), sorted(p.name for p in home.rglob("*"))
    code = main(["fetch", "--home", str(home), "--source", "csv"])
    err = capsys.readouterr().err
    assert code == 2 and "niftytune fetch: error" in err and "--csv-dir" in err  # a user error
    assert (file_digests(home), sorted(p.name for p in home.rglob("*"))) == before


def synthetic_store(home: Path, profile: Path) -> None:
    """The market store of `profile`'s universe up to SESSION, fetched with the plain functions."""
    cfg = load_config(profile)
    session = resolve_session(SESSION, cfg.market)
    commit_staged(home, cfg, session, {t.symbol: stage_new_bars(home, cfg.market, t.symbol, session)
                                       for t in cfg.market.tickers}, {})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_samples_writes_the_sessions_files_and_prints_their_counts_hashes_and_a_rendered_example(
        tmp_path, fast_profile, capsys):
    home = tmp_path / "home"
    synthetic_store(home, fast_profile)
    assert main(["samples", "--home", str(home), "--profile", str(fast_profile), "--as-of", str(SESSION)]) == 0
    out = capsys.readouterr().out
    folder = home / "samples" / str(SESSION)
    train, val = folder / "train.jsonl", folder / "val.jsonl"
    assert out.startswith(f"Samples for session {SESSION} in {folder}\n")
    assert f"  train {len(train.read_text().splitlines())}  sha256 {sha256(train)}" in out
    assert f"  val   {len(val.read_text().splitlines())}  sha256 {sha256(val)}" in out
    assert out.count("<|im_start|>assistant") == 2  # a training and a validation example, in the chat template
    assert not (home / "registry").exists() and not (home / "runs").exists()


def test_train_writes_an_adapter_under_runs_prints_where_and_leaves_the_registry_alone(tmp_path, fast_profile,
                                                                                      capsys):
    home = tmp_path / "home"
    synthetic_store(home, fast_profile)
    assert main(["train", "--home", str(home), "--profile", str(fast_profile), "--as-of", str(SESSION),
                 "--max-steps", "2"]) == 0
    out = capsys.readouterr().out.splitlines()[-4:]  # after transformers' own evaluation lines
    [run] = list((home / "runs").iterdir())
    assert out[0] == f"run {run.name}: adapter {run / 'adapter'}"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert out[2].startswith("validation loss ") and " at step " in out[2]
    assert not (home / "registry").exists()


@pytest.mark.parametrize("flags, dry_run", [([], False), (["--dry-run"], True)], ids=["run", "run --dry-run"])
def test_run_passes_dry_run_to_the_flow(flags, dry_run, tmp_path, fast_profile, monkeypatch, capsys):
    # What a dry run does is tested on the flow (tests/flows/test_daily_retrain.py); here: the flag reaches it.
    received = []

    def flow(params):
        received.append(params)
        return RunSummary(SESSION, SESSION, "dry-run" if params.dry_run else "rejected", "test")

    monkeypatch.setattr(common, "prefect_api", lambda: None)
    monkeypatch.setattr(processes, "start_ephemeral_prefect", lambda: None)
    monkeypatch.setattr(daily_retrain, "daily_retrain", flow)
    home = tmp_path / "home"
    assert main(["run", "--home", str(home), "--profile", str(fast_profile), "--as-of", str(SESSION), *flags]) == 0
    assert [p.dry_run for p in received] == [dry_run] and not received[0].force
    assert capsys.readouterr().out.startswith(f"daily-retrain as of {SESSION} (session {SESSION}): ")


def test_server_exits_with_the_status_of_the_prefect_server(tmp_path, monkeypatch):
    started = []

    def run_foreground(command, env=None):
        started.append(command)
        return 1  # e.g. the port is taken

    monkeypatch.setattr(processes, "run_foreground", run_foreground)
    assert main(["server", "--home", str(tmp_path / "home"), "--port", "4299"]) == 1
    assert started[0][1:] == ["-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", "4299"]


def test_server_serves_the_api_and_the_ui_on_the_port_given_with_its_database_under_the_home(tmp_path):
    # Never the README's port 4200 (another test's server, or a user's, may hold it).
    home, port, log = tmp_path / "home", free_port(), tmp_path / "server.log"
    proc = start_process(["niftytune", "server", "--home", str(home), "--port", str(port)], tmp_path, log)
    try:
        server = PrefectServer(f"http://127.0.0.1:{port}", log)
        wait_for("`niftytune server --port` health", lambda: server.get("/health"), 180, proc, log)
        assert f"Prefect UI: http://127.0.0.1:{port}  (database under {home / 'prefect'}" in log.read_text()
        ui = httpx.get(server.url, timeout=30)
        assert ui.status_code == 200 and "<html" in ui.text.lower()
        assert (home / "prefect" / "prefect.db").is_file()
    finally:
        stop_process(proc)


def test_store_prints_each_stored_tickers_sessions_and_close_and_writes_nothing(tmp_path, fast_profile, capsys):
    home = tmp_path / "home"
    synthetic_store(home, fast_profile)
    before = file_digests(home), sorted(p.name for p in home.rglob("*"))
    assert main(["store", "--home", str(home)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("SYNTHETIC") and out[1] == f"Market store {home / 'market'}: " \
        f"{len(load_config(fast_profile).market.tickers)} tickers"
    rows = {line.split()[0]: line for line in out[3:]}
    assert out[2].split()[:3] == ["ticker", "name", "source"] and set(rows) == set(stored_symbols(home))
    for symbol, line in rows.items():
        bars = load_bars(home, symbol)
        change = (bars["close"].iloc[-1] / bars["close"].iloc[-2] - 1) * 100
        assert f" {bars.index[0].date()} " in line and f" {SESSION} " in line and f" {len(bars)} " in line
        assert f" {bars['close'].iloc[-1]:,.2f} " in line and f" {change:+.2f}% " in line
    assert (file_digests(home), sorted(p.name for p in home.rglob("*"))) == before  # read-only


def test_store_of_an_empty_or_missing_home_says_so_and_creates_nothing(tmp_path, capsys):
    assert main(["store", "--home", str(tmp_path)]) == 1
    assert "no market data in" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
    missing = tmp_path / "nowhere"
    assert main(["store", "--home", str(missing)]) == 1
    assert f"no niftytune home at {missing}" in capsys.readouterr().err and not missing.exists()
