"""Sample builder on the recorded market (../shared/data/market) as of 2019-11-29: every number
of every answer is recomputed here from the bars, independently of the builder's code."""
from __future__ import annotations

import math
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import DEFAULT_UNIVERSE, Config, MarketConfig, TickerSpec
from tasks.market_data import load_bars, resolve_session
from tasks.market_data import commit_staged, stage_new_bars  # plain functions under the Prefect tasks
from tasks.samples import build_sample_set, build_samples, build_samples_from_bars, read_jsonl

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
    """Every recorded file read here, whole (bars after as_of included)."""
    return {p.name.removesuffix(".csv"): read_recorded_bars(p) for p in sorted(shared_market.glob("*.csv"))}


def config_for(symbols: list[str], csv_dir: Path | None = None) -> Config:
    return Config(market=MarketConfig(tickers=[spec_of(s) for s in symbols], source="csv" if csv_dir else "yahoo",
                                      csv_dir=csv_dir))


@pytest.fixture(scope="module")
def store(shared_market: Path, tmp_path_factory) -> tuple[Path, Config]:
    """A market store filled from the recorded files (csv source) as of 2019-11-29, all tickers."""
    symbols = sorted(p.name.removesuffix(".csv") for p in shared_market.glob("*.csv"))
    home, cfg = tmp_path_factory.mktemp("home"), config_for(symbols, shared_market)
    session = resolve_session(AS_OF, cfg.market)
    staged = {symbol: stage_new_bars(home, cfg.market, symbol, session) for symbol in symbols}
    commit_staged(home, cfg, session, staged, failures={})
    return home, cfg


@pytest.fixture(scope="module")
def stored_bars(store) -> dict[str, pd.DataFrame]:
    home, cfg = store
    return {t.symbol: load_bars(home, t.symbol) for t in cfg.market.tickers}


@pytest.fixture(scope="module")
def all_tickers(store) -> tuple[Config, list[dict], list[dict]]:
    home, cfg = store
    sample_set = build_samples(home, cfg, AS_OF)
    return cfg, read_jsonl(sample_set.train_path), read_jsonl(sample_set.val_path)


def numbers(text: str, names: list[str]) -> list[str]:
    """The numbers of an answer as written, dates in words and display names left out."""
    for name in sorted(names, key=len, reverse=True):
        text = text.replace(name, " ")
    return NUMBER.findall(DATE_WORDS.sub(" ", text))


def value(number: str) -> float:
    return float(number.replace(",", ""))


Columns = dict[str, np.ndarray]


def as_columns(bars: dict[str, pd.DataFrame]) -> dict[str, Columns]:
    """Per ticker, numpy arrays of the sessions and each column (fast to slice per sample)."""
    return {s: {"session": b.index.to_numpy(), **{c: b[c].to_numpy() for c in ("high", "low", "close", "volume")}}
            for s, b in bars.items()}


class Recompute:
    """The expected figures of an answer, from the bars up to the sample's session."""

    def __init__(self, columns: dict[str, Columns], cfg: Config, sample: dict):
        self.columns, self.sample, self.cfg = columns, sample, cfg
        self.session = np.datetime64(sample["session"], "ns")
        self.bars = {s: self.upto(s) for s in sample["tickers"]}
        self.one = self.bars[sample["tickers"][0]]

    def upto(self, symbol: str) -> Columns:
        col = self.columns[symbol]
        end = int(np.searchsorted(col["session"], self.session, side="right"))
        return {k: v[:end] for k, v in col.items()}

    def close(self) -> list[float]:
        c, h, lo, v = (self.one[k] for k in ("close", "high", "low", "volume"))
        return [c[-1], 100 * (c[-1] / c[-2] - 1), h[-1], lo[-1], *([v[-1]] if v[-1] > 0 else [])]

    def volume(self) -> list[float]:
        v = self.one["volume"][-20:]
        return [v[-1], 100 * (v[-1] / v.mean() - 1), 20, v.mean()]

    def performance(self, n: int) -> list[float]:
        c = self.one["close"]
        return [n, 100 * (c[-1] / c[-1 - n] - 1), c[-1 - n], c[-1]]

    def volatility(self) -> list[float]:
        c = self.one["close"][-21:]
        std = 100 * np.std(c[1:] / c[:-1] - 1, ddof=1)
        return [20, std, std * math.sqrt(252)]

    def trend(self) -> list[float]:
        c = self.one["close"]
        s10, s20 = c[-10:].mean(), c[-20:].mean()
        return [c[-1], 10, s10, 100 * (c[-1] / s10 - 1), 20, s20, 100 * (c[-1] / s20 - 1)]

    def range_52w(self) -> list[float]:
        year = self.one["session"] > self.session - np.timedelta64(364, "D")
        hi, lo, c = self.one["high"][year].max(), self.one["low"][year].min(), self.one["close"][-1]
        return [52, lo, hi, c, 100 * (c / hi - 1), 100 * (c / lo - 1)]

    def compare(self, n: int) -> list[float]:
        a, b = (self.bars[s]["close"] for s in self.sample["tickers"])
        ra, rb = 100 * (a[-1] / a[-1 - n] - 1), 100 * (b[-1] / b[-1 - n] - 1)
        return [n, ra, rb, abs(ra - rb)]

    def day_change(self, symbol: str) -> float:
        c = self.upto(symbol)["close"]
        return 100 * (c[-1] / c[-2] - 1)

    def market_summary(self) -> list[float]:
        named_stocks = [s for s in self.sample["tickers"] if not s.startswith("^")]
        trading = [t.symbol for t in self.cfg.market.tickers
                   if not t.symbol.startswith("^") and self.upto(t.symbol)["session"][-1] == self.session]
        best = sorted(trading, key=lambda s: -self.day_change(s))
        assert named_stocks == best[:2] + best[:-3:-1]  # the top 2 gainers, then the top 2 losers
        return [x for s in self.sample["tickers"] for x in (self.bars[s]["close"][-1], self.day_change(s))]

    def prompt_change(self, n: int) -> list[float]:
        c = self.one["close"][-n:]
        return [c[0], c[-1], 100 * (c[-1] / c[0] - 1)]

    def prompt_sma(self, n: int) -> list[float]:
        return [n, self.one["close"][-n:].mean()]


def expected_figures(columns: dict[str, Columns], cfg: Config, sample: dict, shown: list[str]) -> list[float]:
    calc, family = Recompute(columns, cfg, sample), sample["family"]
    if family in ("performance", "compare"):
        assert shown[0] in ("1", "3", "5", "7", "10", "20")
        return getattr(calc, family)(int(shown[0]))
    if family.startswith("prompt_"):
        listed = len(re.findall(r"^\d{4}-\d\d-\d\d: ", sample["messages"][1]["content"], flags=re.M))
        return getattr(calc, family)(listed)
    if family == "session":
        return []
    return getattr(calc, family)()


def fact_of(sample: dict, shown: list[str]) -> tuple:
    """What an answer is about: samples that share it (paraphrases) share their figures."""
    return (sample["family"], tuple(sample["tickers"]), sample["session"], tuple(shown[:1]),
            sample["messages"][1]["content"].count("\n"))


def test_every_answer_number_rederives_from_the_bars_for_all_recorded_tickers(stored_bars, all_tickers):
    cfg, train, val = all_tickers
    names = [t.name for t in cfg.market.tickers]
    assert {s["family"] for s in train} >= {"close", "volume", "performance", "volatility", "trend",
                                            "range_52w", "compare", "market_summary", "prompt_change", "prompt_sma"}
    columns, computed = as_columns(stored_bars), {}
    for sample in train + val:
        answer = sample["messages"][2]["content"]
        shown = numbers(answer, names)
        key = fact_of(sample, shown)
        if key not in computed:
            computed[key] = expected_figures(columns, cfg, sample, shown)
        expected = computed[key]
        assert len(shown) == len(expected), (sample["id"], answer, expected)
        for got, want in zip(shown, expected):
            # Two decimals: within one unit of the last place (float rounding at .005, and prompt
            # families compute from the closes as rounded in the prompt); whole numbers: volumes.
            tolerance = 0.0101 if "." in got else 0.5
            assert abs(value(got) - want) <= tolerance + 1e-9 * abs(want), (sample["id"], answer, got, want)


def test_dates_in_answers_are_sessions_up_to_as_of(stored_bars, all_tickers):
    cfg, train, val = all_tickers
    sessions = set().union(*(b.index for b in stored_bars.values()))
    for sample in train + val:
        for day, month, year in DATE_WORDS.findall(sample["messages"][2]["content"]):
            stamp = pd.Timestamp(f"{day} {month} {year}")
            assert stamp in sessions and stamp <= pd.Timestamp(sample["session"]) <= pd.Timestamp(AS_OF)


def test_latest_session_answer_names_the_latest_session(all_tickers):
    cfg, train, _ = all_tickers
    session_answers = [s for s in train if s["family"] == "session" and s["tickers"] == ["TCS.NS"]]
    assert session_answers and all("Friday, 29 November 2019" in s["messages"][2]["content"] for s in session_answers)


SUBSET = ["^NSEI", "^BSESN", "TCS.NS", "RELIANCE.NS", "INFY.NS", "ICICIBANK.NS"]


def test_build_is_deterministic_with_the_same_files_hash_twice(store, stored_bars, tmp_path: Path):
    home, cfg = store
    first = build_samples(home, cfg, AS_OF)
    second = build_samples_from_bars(tmp_path, stored_bars, cfg, AS_OF)
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
