"""The `market-fetch` flow under Prefect: transient faults are retried by Prefect task
retries, permanent ones fail at once, a failed run stores nothing; the report prints."""
from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from prefect.states import Failed
from prefect.tasks import exponential_backoff
from prefect.testing.utilities import prefect_test_harness

from flows.fetch_market import format_fetch_report, run_fetch
from flows.steps import fetch_task, is_transient
from tasks.config import Config, MarketConfig, TickerSpec
from tasks.market.calendar import resolve_session
from tasks.market.data import (BarValidationError, CoverageError, PermanentFetchError, TransientFetchError,
                               fetch_new_bars)
from tasks.market.store import market_dir


@pytest.fixture(scope="module", autouse=True)
def prefect_harness():
    """One temporary Prefect server for the module (its startup is the slow part)."""
    with prefect_test_harness():
        yield


def yahoo_config(symbols=("TCS.NS", "^NSEI"), retries: int = 3) -> Config:
    tickers = [TickerSpec(symbol=s, name=s, kind="index" if s.startswith("^") else "stock") for s in symbols]
    return Config(market=MarketConfig(source="yahoo", tickers=tickers, backfill_sessions=150, fetch_retries=retries,
                                      fetch_backoff_seconds=0.001, fetch_jitter_factor=0.1))


def store_bytes(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in market_dir(home).glob("*.csv")}


def test_rate_limited_fetch_is_retried_by_prefect_then_succeeds(fake_yahoo, attempts, tmp_path):
    fake_yahoo.script["TCS.NS"] = [429] * 4  # yfinance asks twice per attempt: two failed attempts
    report = run_fetch(tmp_path, yahoo_config(), date(2019, 11, 29))
    assert report.committed and attempts == Counter({"TCS.NS": 3, "^NSEI": 1})
    assert report.ticker("TCS.NS").rows_added == 150


def test_rate_limited_forever_fails_after_the_retry_budget_and_store_is_unchanged(fake_yahoo, attempts, tmp_path):
    run_fetch(tmp_path, yahoo_config(), date(2019, 11, 28))
    before = store_bytes(tmp_path)
    attempts.clear()
    fake_yahoo.script["TCS.NS"] = [429] * 100
    with pytest.raises(CoverageError, match=r"TCS.NS: .*429.*gave up after 3 attempts") as caught:
        run_fetch(tmp_path, yahoo_config(retries=2), date(2019, 11, 29))
    assert attempts["TCS.NS"] == 3 and store_bytes(tmp_path) == before
    assert "NOT committed" in format_fetch_report(caught.value.report)


def test_the_fetch_retries_are_the_configs_and_nowhere_else(fake_yahoo, attempts, tmp_path):
    # Issue 14: the task decorator said 4 retries with a 2-4-8-16 s backoff, which only ran when
    # `fetch_new_bars` was called as it stood; the flows always ran the config's budget instead.
    cfg = yahoo_config(retries=1)
    fetch = fetch_task(cfg)
    assert (fetch.retries, fetch.retry_jitter_factor, fetch.retry_condition_fn) == (1, 0.1, is_transient)
    assert fetch.retry_delay_seconds == exponential_backoff(backoff_factor=0.001)(1)
    fake_yahoo.script["TCS.NS"] = [429] * 100
    with pytest.raises(TransientFetchError, match="429"):  # the plain function: one attempt, no budget of its own
        fetch_new_bars(tmp_path, cfg, "TCS.NS", resolve_session(date(2019, 11, 29), cfg.market))
    assert attempts["TCS.NS"] == 1


def test_empty_result_for_an_expected_session_is_retried(fake_yahoo, attempts, tmp_path):
    fake_yahoo.script["^NSEI"] = ["empty"]
    report = run_fetch(tmp_path, yahoo_config(), date(2019, 11, 29))
    assert report.committed and attempts["^NSEI"] == 2


def test_unknown_ticker_fails_at_once_without_retries(fake_yahoo, attempts, tmp_path):
    with pytest.raises(CoverageError, match=r"NOPE.NS: PermanentFetchError") as caught:
        run_fetch(tmp_path, yahoo_config(("TCS.NS", "NOPE.NS")), date(2019, 11, 29))
    assert attempts["NOPE.NS"] == 1
    assert not store_bytes(tmp_path) and caught.value.report.ticker("NOPE.NS").error


def test_fetch_replays_recorded_csv_and_prints_a_per_ticker_table(shared_market, tmp_path):
    tickers = [TickerSpec(symbol=s, name=s, kind="stock") for s in ("TCS.NS", "INFY.NS")]
    cfg = Config(market=MarketConfig(source="csv", csv_dir=shared_market, tickers=tickers))
    run_fetch(tmp_path, cfg, date(2019, 11, 25))
    text = format_fetch_report(run_fetch(tmp_path, cfg, date(2019, 11, 29)))
    assert "latest final session 2019-11-29; source csv" in text and "committed" in text
    header, tcs = text.splitlines()[1], text.splitlines()[2]
    assert header.split() == ["ticker", "source", "last", "session", "close", "added", "revised", "dropped",
                              "anomalies", "status"]
    # TCS.NS.csv, 2019-11-29: Close 2053.250000 (the traded close, not Adj Close 2027.78).
    assert tcs.split() == ["TCS.NS", "csv", "2019-11-29", "2,053.25", "4", "0", "0", "0", "ok"]


def test_synthetic_fetch_is_labelled_synthetic_in_the_report(tmp_path):
    tickers = [TickerSpec(symbol="^NSEI", name="NIFTY 50", kind="index")]
    report = run_fetch(tmp_path, Config(market=MarketConfig(source="synthetic", tickers=tickers)), date(2025, 3, 28))
    text = format_fetch_report(report)
    assert text.startswith("SYNTHETIC market data")
    assert text.splitlines()[-1].split()[:3] == ["^NSEI", "synthetic", "2025-03-28"]


@pytest.mark.parametrize("error, retry", [(TransientFetchError("TCS.NS", "HTTP 429"), True),
                                          (PermanentFetchError("TCS.NS", "unknown ticker"), False),
                                          (BarValidationError("TCS.NS", date(2019, 11, 29), "high < low"), False),
                                          (ValueError("a bug"), False)])
def test_only_transient_faults_are_retried(error, retry):
    assert is_transient(None, None, Failed(data=error)) is retry
