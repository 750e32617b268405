"""Incremental fetches from the recorded bars (csv source), the coverage policy, the real
defects of ../shared/data/market, and the synthetic market. Plain functions, no Prefect."""
from __future__ import annotations

import shutil
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.market import data as market_data
from tasks.market.calendar import IST, is_session, resolve_session
from tasks.config import Config, MarketConfig, TickerSpec
from tasks.market.data import (CoverageError, FetchReport, PermanentFetchError, TransientFetchError, commit_staged,
                               stage_new_bars)
from tasks.market.sources import make_source
from tasks.market.synthetic import SyntheticSource
from tasks.market.store import load_bars, market_dir, store_metadata

SYMBOLS = ["^NSEI", "^BSESN", "TCS.NS", "RELIANCE.NS"]
NOW = datetime(2026, 1, 1, tzinfo=IST)


def csv_config(folder: Path, symbols: list[str] = SYMBOLS, **market) -> Config:
    tickers = [TickerSpec(symbol=s, name=s, kind="index" if s.startswith("^") else "stock") for s in symbols]
    return Config(market=MarketConfig(source="csv", csv_dir=folder, tickers=tickers, **market))


def fetch(home: Path, cfg: Config, as_of: date) -> FetchReport:
    """One fetch run with the plain functions: every ticker staged, then the commit."""
    session = resolve_session(as_of, cfg.market, now=NOW)
    staged, failures = {}, {}
    for t in cfg.market.tickers:
        try:
            staged[t.symbol] = stage_new_bars(home, cfg.market, t.symbol, session)
        except (TransientFetchError, PermanentFetchError) as err:
            failures[t.symbol] = str(err)
    return commit_staged(home, cfg, session, staged, failures)


def store_bytes(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in market_dir(home).glob("*.csv")}


@pytest.fixture
def spy(monkeypatch) -> list[tuple[str, date, date]]:
    """Every range any source is asked for, as (symbol, start, end)."""
    asked: list[tuple[str, date, date]] = []

    def spying_source(market, home=None):
        source = make_source(market, home)
        fetch_range = source.fetch
        source.fetch = lambda symbol, start, end: asked.append((symbol, start, end)) or fetch_range(symbol, start, end)
        return source

    monkeypatch.setattr(market_data, "make_source", spying_source)
    return asked


def recorded_sessions(folder: Path, symbol: str, first: date, last: date, market: MarketConfig) -> pd.Series:
    """Closes of the recorded file on real sessions from `first` to `last` (no null rows)."""
    raw = pd.read_csv(folder / f"{symbol}.csv", na_values=["null"], index_col="Date", parse_dates=True).dropna()
    raw = raw.loc[str(first):str(last)]
    return raw["Close"][[is_session(d.date(), market) for d in raw.index]]


def test_csv_fetches_store_every_bar_up_to_each_as_of(shared_market, tmp_path, spy):
    cfg = csv_config(shared_market)
    for as_of in (date(2019, 11, 25), date(2019, 11, 29)):
        report = fetch(tmp_path, cfg, as_of)
        assert report.committed and report.coverage == 1.0
        for symbol in SYMBOLS:
            bars = load_bars(tmp_path, symbol)
            expected = recorded_sessions(shared_market, symbol, bars.index[0].date(), as_of, cfg.market)
            assert list(bars.index) == list(expected.index), symbol
            np.testing.assert_array_equal(bars["close"].to_numpy(), expected.to_numpy())
            assert bars.index[-1] == pd.Timestamp(as_of)


def test_second_run_asks_only_for_bars_after_the_last_stored_session_minus_overlap(shared_market, tmp_path, spy):
    cfg = csv_config(shared_market, overlap_sessions=2)
    fetch(tmp_path, cfg, date(2019, 11, 25))
    first = dict((s, (a, b)) for s, a, b in spy)
    assert all(b == date(2019, 11, 25) and (b - a).days > 365 for a, b in first.values())  # the backfill
    spy.clear()
    report = fetch(tmp_path, cfg, date(2019, 11, 29))
    # two overlap sessions (Fri 22nd, Mon 25th) re-checked, then only what is new
    assert sorted(spy) == sorted((s, date(2019, 11, 22), date(2019, 11, 29)) for s in SYMBOLS)
    assert all((t.rows_added, t.rows_revised) == (4, 0) for t in report.tickers)


def test_fetching_the_same_as_of_twice_changes_nothing(shared_market, tmp_path):
    cfg = csv_config(shared_market)
    fetch(tmp_path, cfg, date(2019, 11, 29))
    before = store_bytes(tmp_path)
    report = fetch(tmp_path, cfg, date(2019, 11, 29))
    assert store_bytes(tmp_path) == before
    assert all(t.rows_added == 0 and t.rows_revised == 0 for t in report.tickers)


def test_revised_bar_in_the_overlap_replaces_the_stored_one(shared_market, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    shutil.copy(shared_market / "TCS.NS.csv", folder)
    cfg = csv_config(folder, ["TCS.NS"])
    fetch(tmp_path / "home", cfg, date(2019, 11, 25))
    text = (folder / "TCS.NS.csv").read_text()
    (folder / "TCS.NS.csv").write_text(text.replace("2019-11-25,2074.550049,", "2019-11-25,2075.000000,"))
    report = fetch(tmp_path / "home", cfg, date(2019, 11, 29))
    assert report.ticker("TCS.NS").rows_revised == 1
    assert load_bars(tmp_path / "home", "TCS.NS").at[pd.Timestamp("2019-11-25"), "open"] == 2075.0


def test_required_ticker_without_the_session_fails_coverage_and_store_is_untouched(shared_market, tmp_path):
    cfg = csv_config(shared_market)
    fetch(tmp_path, cfg, date(2019, 11, 29))
    before = store_bytes(tmp_path)
    with pytest.raises(CoverageError, match=r"\^NSEI") as caught:  # ^NSEI's file ends 2019-12-02
        fetch(tmp_path, cfg, date(2019, 12, 6))
    assert store_bytes(tmp_path) == before
    assert not caught.value.report.committed and caught.value.report.ticker("^NSEI").error


def test_optional_ticker_may_lag_when_min_coverage_allows(shared_market, tmp_path):
    cfg = csv_config(shared_market, required_tickers=["^BSESN", "TCS.NS"], min_coverage=0.75)
    fetch(tmp_path, cfg, date(2019, 11, 29))
    nsei = store_bytes(tmp_path)["^NSEI.csv"]
    report = fetch(tmp_path, cfg, date(2019, 12, 6))  # ^NSEI's recorded file ends 2019-12-02
    assert report.committed and report.coverage == 0.75
    assert report.ticker("^NSEI").error and not report.ticker("^NSEI").has_session
    assert load_bars(tmp_path, "TCS.NS").index[-1] == pd.Timestamp("2019-12-06")
    assert store_bytes(tmp_path)["^NSEI.csv"] == nsei  # a failed ticker keeps what it had


def test_recorded_defects_are_dropped_flagged_or_kept(shared_market, tmp_path):
    report = fetch(tmp_path, csv_config(shared_market), date(2019, 11, 25))
    tcs, nsei, bsesn = report.ticker("TCS.NS"), report.ticker("^NSEI"), report.ticker("^BSESN")
    # the all-`null` Sunday Muhurat row of every stock file: junk, dropped with a reason
    assert any(d.session == date(2019, 10, 27) and "junk row" in d.reason for d in tcs.dropped)
    # NIFTY's real-priced Muhurat rows (a Sunday; a Wednesday XBOM lists as a holiday): not sessions
    assert {d.session for d in nsei.dropped} == {date(2018, 11, 7), date(2019, 10, 27)}
    # SENSEX's 50x+ volume jumps are flagged, and kept
    assert any("20-session median" in a for a in bsesn.anomalies)
    assert load_bars(tmp_path, "^BSESN").at[pd.Timestamp("2019-02-01"), "volume"] == 31815100
    # calendar sessions the source lacks (2019-02-13) are flagged
    assert any("2019-02-13" in a for a in tcs.anomalies)


def test_recorded_zero_index_volumes_are_accepted(shared_market, tmp_path):
    fetch(tmp_path, csv_config(shared_market, ["^BSESN"]), date(2003, 7, 11))
    assert (load_bars(tmp_path, "^BSESN")["volume"] == 0).all()


def test_adjusted_prices_use_adj_close_and_are_recorded(shared_market, tmp_path):
    fetch(tmp_path, csv_config(shared_market, ["TCS.NS"], adjusted_prices=True), date(2019, 11, 29))
    close = load_bars(tmp_path, "TCS.NS").at[pd.Timestamp("2019-11-29"), "close"]
    assert close == pytest.approx(2027.778198) and store_metadata(tmp_path, "TCS.NS")["adjusted"] is True


def test_a_store_from_another_source_is_not_mixed_in(shared_market, tmp_path):
    fetch(tmp_path, csv_config(shared_market, ["TCS.NS"]), date(2019, 11, 25))
    synthetic = csv_config(shared_market, ["TCS.NS"]).market.model_copy(update={"source": "synthetic"})
    with pytest.raises(PermanentFetchError, match="holds csv bars"):
        stage_new_bars(tmp_path, synthetic, "TCS.NS", resolve_session(date(2019, 11, 29), synthetic, now=NOW))


def test_synthetic_path_is_deterministic_and_a_later_as_of_extends_it():
    source = SyntheticSource(MarketConfig())
    early = source.fetch("TCS.NS", date(2024, 1, 1), date(2024, 6, 28))
    later = source.fetch("TCS.NS", date(2024, 3, 1), date(2024, 12, 31))
    pd.testing.assert_frame_equal(early.loc["2024-03-01":], later.loc[:"2024-06-28"])
    other_seed = SyntheticSource(MarketConfig(synthetic_seed=8)).fetch("TCS.NS", date(2024, 1, 1), date(2024, 6, 28))
    assert not early.equals(other_seed)


@pytest.mark.parametrize("symbol, level", [("^NSEI", 24_000), ("^BSESN", 80_000), ("GOLDBEES.NS", 65),
                                           ("TCS.NS", 4_000), ("ICICIBANK.NS", 1_300), ("NEWCO.NS", None)])
def test_synthetic_bars_are_realistic_and_labelled(symbol, level, tmp_path):
    tickers = [TickerSpec(symbol=symbol, name=symbol, kind="index" if symbol.startswith("^") else "stock")]
    cfg = Config(market=MarketConfig(source="synthetic", tickers=tickers, backfill_sessions=250))
    report = fetch(tmp_path, cfg, date(2025, 3, 28))
    bars = load_bars(tmp_path, symbol)  # validated on read: OHLC consistent, positive
    if level:
        assert level / 1.5 < bars["close"].iloc[-1] < level * 1.5
    daily = np.log(bars["close"]).diff().std()
    assert 0.004 < daily < 0.03
    assert report.synthetic and store_metadata(tmp_path, symbol)["synthetic"] is True
