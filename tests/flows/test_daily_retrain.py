"""daily-retrain under Prefect with the tiny model (issue 6): a trading day promotes and reports
through artifacts; a weekend or holiday is a clean skip; a decided session is a no-op unless
forced; transient fetch faults are retried; any failure leaves the market store and the
registry byte-identical; one run at a time per home."""
from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters_registry import Registry
from flows import daily_retrain
from tasks.config import DEFAULT_UNIVERSE
from tasks.evaluation import score as evaluation
from tasks.market.synthetic import SyntheticSource
from tasks.market.data import PermanentFetchError
from tasks.training import train as training
from tests.flows.conftest import FAST_OVERRIDES, file_digests, read_artifact, run_daily
from tests.tasks.test_market_yahoo import yahoo_bars
from tests.tinymodel import build_tiny_model

TRADING_DAY = date(2025, 3, 28)  # a Friday session
NEXT_SESSION = date(2025, 4, 1)  # the next one: 31 March 2025 was an NSE holiday
YAHOO_DAY = date(2019, 11, 29)  # the last bar the fake Yahoo serves
FAST_PROBES = FAST_OVERRIDES["evaluation.probe_size"]
QUICK = {"max_steps": 2}  # for runs whose outcome (promoted or rejected) does not matter

pytestmark = pytest.mark.usefixtures("prefect_harness")


@dataclass
class Run:
    home: Path
    flow_run_id: Any
    summary: Any


def daily(home: Path, profile: Path, **params: Any):
    return run_daily(home=str(home), profile=str(profile), **params)


@pytest.fixture(scope="module")
def promoted(prefect_harness, fast_profile, tmp_path_factory) -> Run:
    """One trained and promoted session in a fresh home (tests read it or copy it)."""
    home = tmp_path_factory.mktemp("promoted") / "home"
    state = daily(home, fast_profile, as_of=TRADING_DAY)
    assert state.is_completed(), state.message
    return Run(home, state.state_details.flow_run_id, state.result())


@pytest.fixture
def decided_home(promoted: Run, tmp_path: Path) -> Path:
    """A private copy of the promoted home, for tests that run the flow again in it."""
    return shutil.copytree(promoted.home, tmp_path / "home")


def store_and_registry(home: Path) -> dict[str, dict[str, str]]:
    return {"market": file_digests(home / "market"), "registry": file_digests(home / "registry")}


def run_dirs(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "runs").iterdir()) if (home / "runs").exists() else []


def registrations(home: Path, session: date) -> list[str]:
    day = f"{session:%Y%m%d}"
    return [e.version for e in Registry(home).history() if e.event == "register" and f"-{day}-" in e.version]


# --- a trading day ---------------------------------------------------------------------------

def test_trading_day_promotes_the_candidate_over_the_base_model(promoted):
    summary = promoted.summary
    assert summary.status == "promoted" and summary.session == TRADING_DAY
    assert summary.losses["candidate"] < summary.losses["base"]
    assert summary.version == summary.champion == Registry(promoted.home).champion().version
    assert run_dirs(promoted.home) == []  # training scratch pruned after the decision


def test_decision_artifact_names_the_version_and_the_scores(promoted):
    artifact = read_artifact(promoted.flow_run_id, "daily-retrain-decision")
    summary = promoted.summary
    assert artifact.type == "markdown"
    assert f"daily-retrain {TRADING_DAY}: **promoted**" in artifact.data
    assert f"candidate version: {summary.version}" in artifact.data
    assert f"champion after this run: {summary.version}" in artifact.data
    for model in ("base", "candidate"):
        assert f"| {model} | {summary.losses[model]:.4f} |" in artifact.data


def test_coverage_artifact_has_one_ok_row_per_ticker_for_the_session(promoted):
    artifact = read_artifact(promoted.flow_run_id, "market-coverage")
    rows = json.loads(artifact.data)
    assert artifact.type == "table"
    assert {r["ticker"] for r in rows} == {"^NSEI", "TCS.NS"}
    assert all(r["status"] == "ok" and r["last session"] == str(TRADING_DAY) for r in rows)


def test_accuracy_artifact_scores_base_and_candidate_per_family(promoted):
    artifact = read_artifact(promoted.flow_run_id, "answer-accuracy")
    rows = json.loads(artifact.data)
    assert artifact.type == "table" and rows
    assert all(set(r) == {"family", "probes", "base", "candidate"} for r in rows)
    assert all(r[m].endswith("%") for r in rows for m in ("base", "candidate"))
    assert 0 < sum(r["probes"] for r in rows) <= FAST_PROBES and all(r["probes"] > 0 for r in rows)


def test_registered_version_artifact_shows_the_version_folder_as_text(promoted):
    # The UI drops file:// links (issue 13): the path is shown as text to copy.
    artifact = read_artifact(promoted.flow_run_id, "registered-version")
    version = promoted.summary.version
    folder = (promoted.home / "registry" / "versions" / version).resolve()
    assert artifact.type == "markdown" and f"# {version} (promoted)" in artifact.data
    assert f"`{folder}`" in artifact.data and "file://" not in artifact.data
    assert folder.is_dir()


def test_first_decision_says_there_was_no_champion_yet_and_the_data_window(promoted):
    data = read_artifact(promoted.flow_run_id, "daily-retrain-decision").data
    assert "champion before this run: none yet, so the candidate was compared with the base model" in data
    assert re.search(rf"bars \d{{4}}-\d\d-\d\d \.\. {TRADING_DAY}", data)


def run_logs(flow_run_id: Any, level: int = logging.WARNING) -> list[str]:
    """The records of one flow run at `level`, as its Logs tab in the UI shows them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs go to the API in batches
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs if log.level == level]


def test_training_progress_scores_and_decision_are_in_the_runs_logs(promoted):
    # Issue 13: the UI showed "stage train: started" and then minutes of silence.
    infos = run_logs(promoted.flow_run_id, logging.INFO)
    assert any(re.match(r"training step \d+/\d+ \(\d+%\): loss [\d.]+, [\d.]+ steps/s, about .+ left", m)
               for m in infos), infos
    assert any(m.startswith("evaluation at step ") and "validation loss" in m for m in infos)
    assert any(m.startswith("score candidate: validation loss") for m in infos)
    assert f"decision: promote ({promoted.summary.message})" in infos


def test_dropped_rows_are_warnings_in_the_runs_logs(fast_profile, shared_market, tmp_path):
    # Issue 13: dropped rows reached only the terminal. The recorded TCS file has the all-null
    # Muhurat row of Sunday 2019-10-27.
    state = daily(tmp_path, fast_profile, as_of=YAHOO_DAY, source="csv", csv_dir=str(shared_market), **QUICK)
    assert state.is_completed(), state.message
    warnings = run_logs(state.state_details.flow_run_id)
    assert any(m.startswith("TCS.NS 2019-10-27: dropped row: junk row") for m in warnings), warnings


def test_a_new_base_model_is_gated_against_itself_not_the_old_ones_champion(decided_home, promoted, fast_profile,
                                                                            tiny_model_dir, tmp_path):
    # Issue 14: the champion's adapter does not fit another base model's layers (other shapes
    # here), so after a deliberate `--base-model` change every run failed in scoring.
    other = build_tiny_model(tmp_path / "other-model", seed=1, hidden=32)
    state = daily(decided_home, fast_profile, as_of=NEXT_SESSION, base_model=str(other), **QUICK)
    assert state.is_completed(), state.message
    summary, champion = state.result(), promoted.summary.version
    assert summary.status in ("promoted", "rejected") and set(summary.losses) == {"base", "candidate"}
    why = re.escape(f"champion {champion} was trained on base model {tiny_model_dir.resolve()} (weights ") + r"\w+" \
        + re.escape(f"), the candidate on {other.resolve()} (weights ")
    assert re.search(why, summary.message) and summary.message.endswith("compared with the base model")
    data = read_artifact(state.state_details.flow_run_id, "daily-retrain-decision").data
    assert f"- champion before this run: {champion}, trained on another base model, so the candidate" in data
    assert any(re.search(why, m) for m in run_logs(state.state_details.flow_run_id))  # a warning
    registered = Registry(decided_home).get(summary.version)
    assert registered.manifest.lineage.base_model.identity == str(other.resolve())
    assert Registry(decided_home).champion().version == (summary.version if summary.status == "promoted" else champion)


# --- days without training ---------------------------------------------------------------------

@pytest.mark.parametrize("day, reason", [(date(2019, 10, 28), "NSE holiday"), (date(2026, 11, 24), "NSE holiday"),
                                         (date(2026, 11, 21), "Saturday")],
                         ids=["diwali-2019", "guru-nanak-2026", "saturday"])
def test_non_trading_day_is_a_clean_reported_skip(day, reason, fast_profile, tmp_path):
    state = daily(tmp_path, fast_profile, as_of=day)
    summary = state.result()
    assert state.is_completed() and summary.status == "skipped"
    assert summary.message == f"skipped: not a trading day ({reason})"
    data = read_artifact(state.state_details.flow_run_id, "daily-retrain-decision").data
    assert summary.message in data and f"# daily-retrain {day}: **skipped**" in data  # as of, not the session
    assert "champion: none yet" in data
    assert not (tmp_path / "market").exists() and not (tmp_path / "samples").exists()
    assert not (tmp_path / "runs").exists() and Registry(tmp_path).list() == []


def test_rerun_of_a_decided_session_is_a_noop(promoted, fast_profile):
    before = store_and_registry(promoted.home)
    state = daily(promoted.home, fast_profile, as_of=TRADING_DAY)
    summary = state.result()
    assert state.is_completed() and summary.status == "no-op"
    assert f"already has a decision ({promoted.summary.version}" in summary.message
    assert store_and_registry(promoted.home) == before


def test_forced_rerun_retrains_and_registers_a_second_version(decided_home, promoted, fast_profile):
    summary = daily(decided_home, fast_profile, as_of=TRADING_DAY, force=True, **QUICK).result()
    assert summary.status in ("promoted", "rejected") and summary.version != promoted.summary.version
    assert registrations(decided_home, TRADING_DAY) == [promoted.summary.version, summary.version]


def test_a_dry_run_trains_scores_and_decides_but_registers_nothing(decided_home, promoted, fast_profile):
    before = file_digests(decided_home / "registry")
    state = daily(decided_home, fast_profile, as_of=NEXT_SESSION, dry_run=True, **QUICK)
    summary = state.result()
    assert state.is_completed() and summary.status == "dry-run" and summary.version is None
    assert set(summary.losses) == {"base", "champion", "candidate"} and summary.message.startswith(("promoted",
                                                                                                   "not promoted"))
    assert file_digests(decided_home / "registry") == before and summary.champion == promoted.summary.version
    assert run_dirs(decided_home) == [] and registrations(decided_home, NEXT_SESSION) == []
    flow_run_id = state.state_details.flow_run_id
    assert "candidate version: (not registered: dry run)" in read_artifact(flow_run_id, "daily-retrain-decision").data
    assert read_artifact(flow_run_id, "registered-version") is None


# --- faults ------------------------------------------------------------------------------

@pytest.fixture
def yahoo_attempts(fake_yahoo, attempts) -> Counter:
    """Yahoo fetches per ticker (one per Prefect task attempt), against a fake Yahoo with a
    history long enough for a first run's backfill."""
    fake_yahoo.bars = {"TCS.NS": yahoo_bars(YAHOO_DAY, n=320), "^NSEI": yahoo_bars(YAHOO_DAY, n=320, level=12000)}
    return attempts


def test_rate_limited_fetch_is_retried_and_the_run_completes(fake_yahoo, yahoo_attempts, fast_profile, tmp_path):
    fake_yahoo.script["TCS.NS"] = [429] * 4  # yfinance asks twice per attempt: two failed attempts
    state = daily(tmp_path, fast_profile, as_of=YAHOO_DAY, source="yahoo", **QUICK)
    assert state.is_completed(), state.message
    assert yahoo_attempts == Counter({"TCS.NS": 3, "^NSEI": 1})
    assert state.result().status in ("promoted", "rejected") and Registry(tmp_path).list()


def test_permanent_fetch_fault_fails_before_training_and_changes_nothing(decided_home, fast_profile, monkeypatch):
    fetch, trained = SyntheticSource.fetch, []

    def unknown_tcs(self, symbol, start, end):
        if symbol == "TCS.NS":
            raise PermanentFetchError(symbol, "unknown ticker (injected)")
        return fetch(self, symbol, start, end)

    monkeypatch.setattr(SyntheticSource, "fetch", unknown_tcs)
    monkeypatch.setattr(training, "train_adapter", lambda *a, **k: trained.append(a))
    before = store_and_registry(decided_home)
    state = daily(decided_home, fast_profile, as_of=NEXT_SESSION)
    assert state.is_failed() and "TCS.NS" in state.message and "unknown ticker (injected)" in state.message
    assert store_and_registry(decided_home) == before
    assert trained == [] and run_dirs(decided_home) == []
    assert not (decided_home / "samples" / str(NEXT_SESSION)).exists()


def test_the_daily_flow_fetches_at_most_fetch_workers_tickers_at_once(fast_profile, tmp_path, monkeypatch):
    # Issue 14: every ticker was submitted at once, so market.fetch_workers (kept small for
    # Yahoo's rate limit) did nothing in the daily flow.
    profile = yaml.safe_load(fast_profile.read_text())
    profile["market"]["fetch_workers"] = 2
    (tmp_path / "two-workers.yaml").write_text(yaml.safe_dump(profile))
    fetch, seen, fetched = SyntheticSource.fetch, {"now": 0, "most": 0}, []
    changed = threading.Condition()

    def crowded_fetch(self, symbol, start, end):
        with changed:
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
            changed.notify_all()
            # Held until a third fetch runs beside it (or 2 s pass): a bound that does not hold
            # then shows, however the threads happen to be scheduled.
            changed.wait_for(lambda: seen["now"] > 2, timeout=2)
        try:
            fetched.append(symbol)
            return fetch(self, symbol, start, end)
        finally:
            with changed:
                seen["now"] -= 1

    monkeypatch.setattr(SyntheticSource, "fetch", crowded_fetch)
    monkeypatch.setattr(daily_retrain, "build_sample_files", _stop_after_the_fetch)
    symbols = [t.symbol for t in DEFAULT_UNIVERSE[:6]]
    state = daily(tmp_path / "home", tmp_path / "two-workers.yaml", as_of=TRADING_DAY, tickers=symbols)
    assert state.is_failed() and "stopped after the fetch" in state.message
    assert sorted(fetched) == sorted(symbols) and seen["most"] <= 2


def _stop_after_the_fetch(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("stopped after the fetch")


def _fail(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("injected failure")


@pytest.mark.parametrize("stage, target", [("train", (training, "_build_trainer")),
                                           ("score", (evaluation, "score_models"))])
def test_failure_in_a_stage_restores_store_and_registry(stage, target, decided_home, fast_profile, monkeypatch):
    monkeypatch.setattr(*target, _fail)
    before = store_and_registry(decided_home)
    state = daily(decided_home, fast_profile, as_of=NEXT_SESSION, **QUICK)
    assert state.is_failed() and "injected failure" in state.message
    assert store_and_registry(decided_home) == before  # the new session's bars were fetched, then undone
    assert run_dirs(decided_home) == []


def test_second_run_in_the_same_home_fails_while_the_first_holds_the_run_lock(fast_profile, tmp_path, monkeypatch):
    training_started, release = threading.Event(), threading.Event()
    train = training.train_adapter

    def held_train(*args, **kwargs):  # the first run pauses in training, holding the lock
        training_started.set()
        release.wait(120)
        return train(*args, **kwargs)

    monkeypatch.setattr(training, "train_adapter", held_train)
    states: dict[str, Any] = {}

    def first_run() -> None:
        states["first"] = daily(tmp_path, fast_profile, as_of=TRADING_DAY, **QUICK)

    first = threading.Thread(target=first_run)
    first.start()
    try:
        assert training_started.wait(120), "the first run never reached training"
        second = daily(tmp_path, fast_profile, as_of=date(2025, 3, 27))
    finally:
        release.set()
        first.join(300)
    assert second.is_failed() and "another niftytune run is in progress" in second.message
    assert states["first"].is_completed(), states["first"].message
    registry = Registry(tmp_path)
    assert registry.verify() == [] and [v.version for v in registry.list()] == [states["first"].result().version]
    assert registrations(tmp_path, date(2025, 3, 27)) == [] and not (tmp_path / "run.lock.holder.json").exists()
