"""Sample builder on the recorded market (../shared/data/market) as of 2019-11-29: every number
of every answer is recomputed here from the bars, independently of the builder's code."""
from __future__ import annotations

import math
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import DEFAULT_UNIVERSE, Config, MarketConfig, TickerSpec
from tasks.samples import build_sample_set, build_samples_from_bars

AS_OF = date(2019, 11, 29)
PREVIOUS = date(2019, 11, 28)
KNOWN_NAMES = {t.symbol: t.name for t in DEFAULT_UNIVERSE}
WEEKDAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
DATE_WORDS = re.compile(WEEKDAY + r", (\d{1,2}) ([A-Z][a-z]+) (\d{4})")
NUMBER = re.compile(r"[+-]?\d[\d,]*(?:\.\d+)?")


def read_recorded_bars(path: Path) -> pd.DataFrame:
    """A yfinance-format CSV as the store's schema; rows whose fields are `null` dropped."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    raw = raw[~raw.eq("null").any(axis=1)]
    frame = raw.rename(columns=str.lower).set_index("date")[["open", "high", "low", "close", "volume"]].astype(float)
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index), name="session")
    return frame


def spec_of(symbol: str) -> TickerSpec:
    name = KNOWN_NAMES.get(symbol, symbol.removesuffix(".NS"))
    return TickerSpec(symbol=symbol, name=name, kind="index" if symbol.startswith("^") else "stock")


@pytest.fixture(scope="module")
def recorded(shared_market: Path) -> dict[str, pd.DataFrame]:
    return {p.name.removesuffix(".csv"): read_recorded_bars(p) for p in sorted(shared_market.glob("*.csv"))}


def config_for(symbols: list[str]) -> Config:
    return Config(market=MarketConfig(tickers=[spec_of(s) for s in symbols]))


@pytest.fixture(scope="module")
def all_tickers(recorded) -> tuple[Config, list[dict], list[dict]]:
    cfg = config_for(sorted(recorded))
    return (cfg, *build_sample_set(recorded, cfg, AS_OF))


def numbers(text: str, names: list[str]) -> list[str]:
    """The numbers of an answer as written, dates in words and display names left out."""
    for name in sorted(names, key=len, reverse=True):
        text = text.replace(name, " ")
    return NUMBER.findall(DATE_WORDS.sub(" ", text))


def value(number: str) -> float:
    return float(number.replace(",", ""))


class Recompute:
    """The expected figures of an answer, from the bars up to the sample's session."""

    def __init__(self, recorded: dict[str, pd.DataFrame], cfg: Config, sample: dict):
        self.recorded, self.sample, self.cfg = recorded, sample, cfg
        self.session = pd.Timestamp(sample["session"])
        self.bars = {s: self.full(s) for s in sample["tickers"]}

    def one(self) -> pd.DataFrame:
        return self.bars[self.sample["tickers"][0]]

    def close(self) -> list[float]:
        b = self.one()
        day, prev = b.iloc[-1], b.iloc[-2]
        vol = [day.volume] if day.volume > 0 else []
        return [day.close, 100 * (day.close / prev.close - 1), day.high, day.low, *vol]

    def volume(self) -> list[float]:
        v = self.one().volume.iloc[-20:]
        return [v.iloc[-1], 100 * (v.iloc[-1] / v.mean() - 1), 20, v.mean()]

    def performance(self, n: int) -> list[float]:
        c = self.one().close
        return [n, 100 * (c.iloc[-1] / c.iloc[-1 - n] - 1), c.iloc[-1 - n], c.iloc[-1]]

    def volatility(self) -> list[float]:
        r = self.one().close.pct_change().iloc[-20:]
        return [20, 100 * r.std(), 100 * r.std() * math.sqrt(252)]

    def trend(self) -> list[float]:
        c = self.one().close
        s10, s20 = c.iloc[-10:].mean(), c.iloc[-20:].mean()
        return [c.iloc[-1], 10, s10, 100 * (c.iloc[-1] / s10 - 1), 20, s20, 100 * (c.iloc[-1] / s20 - 1)]

    def range_52w(self) -> list[float]:
        b = self.one()
        year = b[b.index > self.session - timedelta(days=364)]
        hi, lo, c = year.high.max(), year.low.min(), b.close.iloc[-1]
        return [52, lo, hi, c, 100 * (c / hi - 1), 100 * (c / lo - 1)]

    def compare(self, n: int) -> list[float]:
        a, b = (self.bars[s].close for s in self.sample["tickers"])
        ra, rb = 100 * (a.iloc[-1] / a.iloc[-1 - n] - 1), 100 * (b.iloc[-1] / b.iloc[-1 - n] - 1)
        return [n, ra, rb, abs(ra - rb)]

    def market_summary(self) -> list[float]:
        moves = {s: b.close.iloc[-2:] for s, b in self.bars.items()}
        changes = {s: 100 * (c.iloc[-1] / c.iloc[-2] - 1) for s, c in moves.items()}
        named_stocks = [s for s in self.sample["tickers"] if not s.startswith("^")]
        universe = [t.symbol for t in self.cfg.market.tickers]
        trading = [s for s in universe if not s.startswith("^") and self.session in self.full(s).index]
        best = sorted(trading, key=lambda s: -self.change_of(s))
        assert named_stocks == best[:2] + best[:-3:-1]  # the top 2 gainers, then the top 2 losers
        return [x for s in self.sample["tickers"] for x in (moves[s].iloc[-1], changes[s])]

    def full(self, symbol: str) -> pd.DataFrame:
        bars = self.recorded[symbol]
        return bars.iloc[:bars.index.searchsorted(self.session, side="right")]

    def change_of(self, symbol: str) -> float:
        c = self.full(symbol).close
        return 100 * (c.iloc[-1] / c.iloc[-2] - 1)

    def prompt_change(self, n: int) -> list[float]:
        c = self.one().close.iloc[-n:]
        return [c.iloc[0], c.iloc[-1], 100 * (c.iloc[-1] / c.iloc[0] - 1)]

    def prompt_sma(self, n: int) -> list[float]:
        return [n, self.one().close.iloc[-n:].mean()]


def expected_figures(recorded: dict[str, pd.DataFrame], cfg: Config, sample: dict, shown: list[str]) -> list[float]:
    calc = Recompute(recorded, cfg, sample)
    family = sample["family"]
    if family in ("performance", "compare"):
        assert shown[0] in ("1", "3", "5", "7", "10", "20")
        return getattr(calc, family)(int(shown[0]))
    if family.startswith("prompt_"):
        listed = len(re.findall(r"^\d{4}-\d\d-\d\d: ", sample["messages"][1]["content"], flags=re.M))
        return getattr(calc, family)(listed)
    if family == "session":
        return []
    return getattr(calc, family)()


def test_every_answer_number_rederives_from_the_bars_for_all_recorded_tickers(recorded, all_tickers):
    cfg, train, val = all_tickers
    names = [t.name for t in cfg.market.tickers]
    assert {s["family"] for s in train} >= {"close", "volume", "performance", "volatility", "trend",
                                            "range_52w", "compare", "market_summary", "prompt_change", "prompt_sma"}
    for sample in train + val:
        answer = sample["messages"][2]["content"]
        shown = numbers(answer, names)
        expected = expected_figures(recorded, cfg, sample, shown)
        assert len(shown) == len(expected), (sample["id"], answer, expected)
        for got, want in zip(shown, expected):
            # Two decimals: within one unit of the last place (float rounding at .005, and prompt
            # families compute from the closes as rounded in the prompt); whole numbers: volumes.
            tolerance = 0.0101 if "." in got else 0.5
            assert abs(value(got) - want) <= tolerance + 1e-9 * abs(want), (sample["id"], answer, got, want)


def test_dates_in_answers_are_sessions_up_to_as_of(recorded, all_tickers):
    cfg, train, val = all_tickers
    sessions = set().union(*(b.index for b in recorded.values()))
    for sample in train + val:
        for day, month, year in DATE_WORDS.findall(sample["messages"][2]["content"]):
            stamp = pd.Timestamp(f"{day} {month} {year}")
            assert stamp in sessions and stamp <= pd.Timestamp(sample["session"]) <= pd.Timestamp(AS_OF)


def test_latest_session_answer_names_the_latest_session(all_tickers):
    cfg, train, _ = all_tickers
    session_answers = [s for s in train if s["family"] == "session" and s["tickers"] == ["TCS.NS"]]
    assert session_answers and all("Friday, 29 November 2019" in s["messages"][2]["content"] for s in session_answers)


SUBSET = ["^NSEI", "^BSESN", "TCS.NS", "RELIANCE.NS", "INFY.NS", "ICICIBANK.NS"]


def test_build_is_deterministic_with_the_same_files_hash_twice(recorded, tmp_path: Path):
    cfg = config_for(SUBSET)
    first = build_samples_from_bars(tmp_path / "a", recorded, cfg, AS_OF)
    second = build_samples_from_bars(tmp_path / "b", recorded, cfg, AS_OF)
    assert first.content_hash == second.content_hash and first.session == AS_OF
    assert first.train_path.read_bytes() == second.train_path.read_bytes()
    assert first.data_window["TCS.NS"][1] == "2019-11-29" and first.data_window["^NSEI"][1] == "2019-11-29"


def test_bars_after_as_of_change_nothing(recorded):
    cfg = config_for(SUBSET)
    cut = {s: b[b.index <= pd.Timestamp(AS_OF)] for s, b in recorded.items()}
    assert build_sample_set(recorded, cfg, AS_OF) == build_sample_set(cut, cfg, AS_OF)


def test_moving_as_of_back_one_session_removes_every_fact_of_that_session(recorded):
    cfg = config_for(SUBSET)
    train, val = build_sample_set(recorded, cfg, PREVIOUS)
    removed = {s: recorded[s].loc[pd.Timestamp(AS_OF)] for s in SUBSET}
    seen_before = {s: {f"{v:,.2f}" for v in recorded[s].loc[:pd.Timestamp(PREVIOUS), ["open", "high", "low", "close"]].to_numpy().ravel()}
                   for s in SUBSET}
    assert {s["session"] for s in train + val} <= {d.date().isoformat() for d in recorded["^NSEI"].index
                                                    if d <= pd.Timestamp(PREVIOUS)}
    latest = [s for s in train + val if s["session"] == PREVIOUS.isoformat() and "latest" in s["id"]]
    assert latest and all("28 November 2019" in s["messages"][2]["content"] for s in latest if s["family"] == "close")
    for sample in train + val:
        text = sample["messages"][1]["content"] + sample["messages"][2]["content"]
        assert "29 November 2019" not in text and "2019-11-29" not in text
        for symbol in sample["tickers"]:
            close = f"{removed[symbol].close:,.2f}"
            if close not in seen_before[symbol]:  # the same figure on an earlier bar is no leak
                assert close not in text, (sample["id"], close)
            assert f"{round(removed[symbol].volume):,}" not in text


def test_stock_bars_with_a_null_row_and_differing_end_dates_still_build(recorded):
    cfg = config_for(["^BSESN", "TCS.NS"])
    train, val = build_sample_set(recorded, cfg, date(2019, 12, 31))
    assert max(s["session"] for s in train) == "2019-12-31"  # TCS trades on; SENSEX stops at 12-27
    bsesn = [s for s in train + val if s["tickers"] == ["^BSESN"] and s["family"] == "session"]
    assert bsesn and all("Friday, 27 December 2019" in s["messages"][2]["content"] for s in bsesn)
    assert not np.isnan([t["value"] for s in train for t in s["truth"]]).any()
