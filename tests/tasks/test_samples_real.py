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
from tasks.market.data import load_bars, resolve_session
from tasks.market.data import commit_staged, stage_new_bars  # plain functions under the Prefect tasks
from tasks.answering.ground import MarketView, ground
from tasks.samples.families import FAMILIES
from tasks.samples.build import build_sample_set, build_samples, build_samples_from_bars, read_jsonl, select_window
from tests.tasks.test_samples import handwritten_questions

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
    return {s: {"session": b.index.to_numpy(), **{c: b[c].to_numpy() for c in ("open", "high", "low", "close", "volume")}}
            for s, b in bars.items()}


class Recompute:
    """The expected figures of an answer, from the bars up to the sample's session."""

    def __init__(self, columns: dict[str, Columns], cfg: Config, sample: dict):
        self.columns, self.sample, self.cfg = columns, sample, cfg
        self.session = np.datetime64(sample["session"], "ns")
        tickers = [s for s in sample["tickers"] if s != "market"]
        self.bars = {s: self.upto(s) for s in tickers}
        self.one = self.bars[tickers[0]] if tickers else None

    def upto(self, symbol: str) -> Columns:
        col = self.columns[symbol]
        end = int(np.searchsorted(col["session"], self.session, side="right"))
        return {k: v[:end] for k, v in col.items()}

    def close(self) -> list[float]:
        c, h, lo, v = (self.one[k] for k in ("close", "high", "low", "volume"))
        return [c[-1], 100 * (c[-1] / c[-2] - 1), h[-1], lo[-1], *([v[-1]] if v[-1] > 0 else [])]

    def change(self) -> list[float]:
        c = self.one["close"]
        return [100 * (c[-1] / c[-2] - 1), c[-2], c[-1]]

    def open(self) -> list[float]:
        return [self.one[k][-1] for k in ("open", "low", "high", "close")]

    def prev_close(self) -> list[float]:
        c = self.one["close"]
        return [c[-2], c[-1], 100 * (c[-1] / c[-2] - 1)]

    def day_range(self) -> list[float]:
        return [self.one["low"][-1], self.one["high"][-1]]

    def volume(self) -> list[float]:
        v = self.one["volume"][-20:]
        return [v[-1], 100 * (v[-1] / v.mean() - 1), 20, v.mean()]

    def performance(self, n: int) -> list[float]:
        c = self.one["close"]
        return [n, 100 * (c[-1] / c[-1 - n] - 1), c[-1]]

    def volatility(self) -> list[float]:
        c = self.one["close"][-21:]
        std = 100 * np.std(c[1:] / c[:-1] - 1, ddof=1)
        return [20, std, std * math.sqrt(252)]

    def trend(self) -> list[float]:
        c = self.one["close"]
        s10, s20 = c[-10:].mean(), c[-20:].mean()
        return [c[-1], 10, s10, 100 * (c[-1] / s10 - 1), 20, s20, 100 * (c[-1] / s20 - 1)]

    def _year(self) -> tuple[list[float], float, float]:
        """The span's counts (52 weeks, or the sessions of a shorter history), the high and the low."""
        start = self.session - np.timedelta64(364, "D")
        year = self.one["session"] > start
        full = self.one["session"][0] <= start + np.timedelta64(7, "D")
        return ([52] if full else [int(year.sum()), 52]), self.one["high"][year].max(), self.one["low"][year].min()

    def range_52w(self) -> list[float]:
        span, hi, lo = self._year()
        c = self.one["close"][-1]
        return [*span, lo, hi, c, 100 * (c / hi - 1), 100 * (c / lo - 1)]

    def high_52w(self) -> list[float]:
        span, hi, _ = self._year()
        c = self.one["close"][-1]
        return [*span, hi, c, 100 * (c / hi - 1)]

    def low_52w(self) -> list[float]:
        span, _, lo = self._year()
        c = self.one["close"][-1]
        return [*span, lo, c, 100 * (c / lo - 1)]

    def compare(self, n: int) -> list[float]:
        a, b = (self.bars[s]["close"] for s in self.sample["tickers"])
        return [n, 100 * (a[-1] / a[-1 - n] - 1), 100 * (b[-1] / b[-1 - n] - 1)]

    def day_change(self, symbol: str) -> float:
        c = self.upto(symbol)["close"]
        return 100 * (c[-1] / c[-2] - 1)

    def market_summary(self) -> list[float]:
        """Indices in universe order, then the top 2 gainers and the top 2 losers (worst first);
        with 6 or fewer stocks, every stock by change."""
        trading = [t for t in self.cfg.market.tickers
                   if len(self.upto(t.symbol)["session"]) >= 2 and self.upto(t.symbol)["session"][-1] == self.session]
        indices = [t.symbol for t in trading if t.kind == "index"]
        stocks = sorted((t.symbol for t in trading if t.kind != "index"), key=lambda s: (-self.day_change(s), s))
        named = indices + (stocks if len(stocks) <= 6 else stocks[:2] + stocks[:-3:-1])
        return [x for s in named for x in (self.upto(s)["close"][-1], self.day_change(s))]


def expected_figures(columns: dict[str, Columns], cfg: Config, sample: dict, shown: list[str]) -> list[float]:
    calc, family = Recompute(columns, cfg, sample), sample["family"]
    if family in ("performance", "compare"):
        assert shown[0] in ("1", "3", "5", "7", "10", "20")
        return getattr(calc, family)(int(shown[0]))
    if family == "session":
        return []
    return getattr(calc, family)()


def test_every_answer_number_rederives_from_the_bars_for_all_recorded_tickers(stored_bars, all_tickers):
    cfg, train, val = all_tickers
    names = [t.name for t in cfg.market.tickers]
    assert {s["family"] for s in train} == set(FAMILIES)
    columns, computed = as_columns(stored_bars), {}
    for sample in train + val:
        answer = sample["messages"][2]["content"]
        shown = numbers(answer, names)
        if sample["fact"] not in computed:  # samples of one fact (phrasings, modes) share one answer
            computed[sample["fact"]] = expected_figures(columns, cfg, sample, shown)
        expected = computed[sample["fact"]]
        assert len(shown) == len(expected), (sample["id"], answer, expected)
        for got, want in zip(shown, expected):
            # Two decimals: within one unit of the last place (float rounding at .005); whole numbers: volumes.
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
    newest = [s for s in train + val if s["session"] == PREVIOUS.isoformat() and s["family"] == "close"]
    assert newest and all("28 November 2019" in s["messages"][2]["content"] for s in newest)
    for sample in train + val:
        text = sample["messages"][1]["content"] + sample["messages"][2]["content"]
        assert "29 November 2019" not in text and "2019-11-29" not in text
        for symbol in set(sample["tickers"]) & set(SUBSET):
            close = f"{removed[symbol].close:,.2f}"
            if close not in seen_before[symbol]:  # the same figure on an earlier bar is no leak
                assert close not in text, (sample["id"], close)
            assert f"{round(removed[symbol].volume):,}" not in text


def test_stock_bars_with_a_null_row_and_differing_end_dates_still_build(recorded):
    cfg = config_for(["^BSESN", "TCS.NS"])
    train, val = build_sample_set(recorded, cfg, date(2019, 12, 31))
    assert max(s["session"] for s in train) == "2019-12-31"  # TCS trades on; SENSEX stops at 12-27
    bsesn = [s for s in train + val if s["tickers"] == ["^BSESN"]]
    assert bsesn and max(s["session"] for s in bsesn) == "2019-12-27"
    assert "2019-10-27" not in {s["session"] for s in train + val}  # the null (Muhurat) row
    assert not np.isnan([t["value"] for s in train + val for t in s["truth"]]).any()


def test_no_hand_written_benchmark_question_is_a_question_of_the_recorded_build(all_tickers):
    _, train, val = all_tickers
    benchmark = handwritten_questions()
    asked = {" ".join(s["messages"][1]["content"].rpartition("\n\nQuestion: ")[2].lower().split())
             for s in train + val}
    assert not asked & benchmark, sorted(asked & benchmark)[:5]


def test_every_grounded_question_of_the_recorded_build_re_grounds_to_its_tickers_and_session(stored_bars, all_tickers):
    cfg, train, val = all_tickers
    view = MarketView.from_bars(select_window(stored_bars, cfg, AS_OF), cfg.market.tickers)
    for sample in (s for s in train + val if s["mode"] == "grounded"):
        question = sample["messages"][1]["content"].rpartition("\n\nQuestion: ")[2]
        g = ground(question, view, date.fromisoformat(sample["today"]))
        assert g.refusal is None and g.session.isoformat() == sample["session"], (sample["id"], question, g.refusal)
        assert g.kind == "market" if sample["family"] == "market_summary" else sorted(g.symbols) == sorted(
            sample["tickers"]), (sample["id"], question)
