"""One writer per home: while a run holds the home, `fetch`, `samples` and `registry rollback`
are refused at once, naming the holder, and change nothing; so a failed run's restore can only
ever put back its own writes (issue 16, failure 4)."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flows.conftest import HOLD_LOCK

from adapters_registry import Registry
from flows.cli import main
from tasks.market.store import market_dir
from tests.adapters_registry.fakes import decision, lineage, make_fake_adapter

REPO = Path(__file__).resolve().parents[2]
TICKERS = "TCS.NS,INFY.NS"


def store_bytes(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in market_dir(home).glob("*.csv")}


@pytest.fixture
def home_with_store(tmp_path, shared_market, prefect_harness, capsys) -> Path:
    home = tmp_path / "home"
    assert main(["fetch", "--home", str(home), "--source", "csv", "--csv-dir", str(shared_market),
                 "--tickers", TICKERS, "--as-of", "2019-11-28"]) == 0
    registry = Registry(home)
    for seed in (1, 2):
        registry.register(make_fake_adapter(tmp_path / f"a{seed}", seed), lineage(), decision(True), promote=True)
    capsys.readouterr()
    return home


@pytest.fixture
def run_in_progress(home_with_store) -> Iterator[subprocess.Popen]:
    """Another process holding the home the way `niftytune run` does."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(home_with_store)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_fetch_during_a_run_is_refused_and_commits_nothing(home_with_store, run_in_progress, shared_market, capsys):
    before = store_bytes(home_with_store)
    code = main(["fetch", "--home", str(home_with_store), "--source", "csv", "--csv-dir", str(shared_market),
                 "--tickers", TICKERS, "--as-of", "2019-11-29"])
    err = capsys.readouterr().err
    assert code == 1 and "in progress" in err and f"pid {run_in_progress.pid}" in err
    assert store_bytes(home_with_store) == before


def test_samples_during_a_run_are_refused(home_with_store, run_in_progress, shared_market, capsys):
    code = main(["samples", "--home", str(home_with_store), "--source", "csv", "--csv-dir", str(shared_market),
                 "--tickers", TICKERS, "--as-of", "2019-11-28"])
    assert code == 1 and f"pid {run_in_progress.pid}" in capsys.readouterr().err
    assert not (home_with_store / "samples").exists()


def test_registry_rollback_during_a_run_is_refused(home_with_store, run_in_progress, capsys):
    registry = Registry(home_with_store)
    first, champion = registry.list()[0].version, registry.champion().version
    code = main(["registry", "rollback", first, "--reason", "test", "--home", str(home_with_store)])
    assert code == 1 and f"pid {run_in_progress.pid}" in capsys.readouterr().err
    assert registry.champion().version == champion
