"""Data sheets state the bars' figures: every number of a ticker's sheet is recomputed here with
pandas from the raw frame, independently of tasks.answering.facts, and must appear exactly as
tasks.samples.format writes it."""
from __future__ import annotations

import math
import re
from datetime import date

import numpy as np
import pandas as pd
import pytest

from tasks.answering.facts import Series, ticker_facts_at
from tasks.answering.sheet import brief_sheet, ticker_sheet
from tasks.config import TickerSpec
from tasks.samples.format import SESSION_WORDS, format_change, format_level
from tests.tasks.test_samples_real import read_recorded_bars

WINDOWS = (1, 3, 5, 7, 10, 20)
SHEET_NUMBER = re.compile(r"[+-]?\d[\d,]*(?:\.\d+)?%?")
COUNTS = {"1", "3", "5", "7", "10", "20", "52"}
"""Window lengths a sheet names (`20-session average`, `52-week high`): not figures of the bars."""

RECORDED = [  # (symbol, kind, session): a normal day, a crash day, an index, a short 52-week window
    ("TCS.NS", "stock", date(2019, 11, 29)),
    ("RELIANCE.NS", "stock", date(2020, 3, 23)),
    ("HDFCBANK.NS", "stock", date(2018, 6, 19)),
    ("^NSEI", "index", date(2019, 11, 29)),
    ("^BSESN", "index", date(2019, 6, 19)),
    ("INFY.NS", "stock", date(2015, 8, 14)),
]


def expected_figures(frame: pd.DataFrame, session: date, kind: str) -> dict[str, str]:
    """Every figure a full sheet states, by label, formatted as the sheet writes it."""
    bars = frame.loc[:pd.Timestamp(session)]
    close, volume = bars["close"], bars["volume"]
    c = float(close.iloc[-1])
    level = lambda v: format_level(float(v), kind)  # noqa: E731
    want = {"open": level(bars["open"].iloc[-1]), "high": level(bars["high"].iloc[-1]),
            "low": level(bars["low"].iloc[-1]), "close": level(c)}
    if len(bars) >= 2:
        want["previous close"] = level(close.iloc[-2])
        want["day change"] = format_change((c / close.iloc[-2] - 1) * 100)
    if volume.iloc[-1] > 0:
        want["volume"] = f"{round(volume.iloc[-1]):,}"
        last20 = volume.iloc[-20:]
        if len(last20) == 20 and (last20 > 0).all():
            want["20-session average volume"] = f"{round(last20.mean()):,}"
            want["volume vs average"] = format_change((volume.iloc[-1] / last20.mean() - 1) * 100)
    for n in WINDOWS:
        if len(bars) > n:
            want[f"{n} session{'s' * (n != 1)}"] = format_change((c / close.iloc[-1 - n] - 1) * 100)
    for n in (10, 20):
        if len(bars) >= n:
            sma = close.iloc[-n:].mean()
            want[f"{n}-session average"] = level(sma)
            want[f"{n}-session close vs average"] = format_change((c / sma - 1) * 100)
    if len(bars) > 20:
        daily = close.pct_change().iloc[-20:].std(ddof=1) * 100
        want["volatility daily"] = f"{daily:.2f}%"
        want["volatility annualised"] = f"{daily * math.sqrt(252):.2f}%"
    year = bars[bars.index > pd.Timestamp(session) - pd.Timedelta(days=364)]
    high, low = year["high"].max(), year["low"].min()
    if frame.index[0] > pd.Timestamp(session) - pd.Timedelta(days=364 - 7):  # data starts inside the 52 weeks
        want["52 weeks: only"] = str(len(year))
    want["52-week high"], want["52-week low"] = level(high), level(low)
    want["close vs 52-week high"] = format_change((c / high - 1) * 100)
    want["close vs 52-week low"] = format_change((c / low - 1) * 100)
    return want


def labelled(label: str, figure: str) -> re.Pattern[str]:
    """How the sheet writes a labelled figure (a return's window may carry a span in words)."""
    if label.endswith("close vs average"):
        text = f"(close {figure})"
    elif label == "52 weeks: only":
        text = f"52 weeks: only {figure} sessions of data"
    elif label.startswith("volatility "):
        text = f"{label.split()[1]} {figure}"
    else:
        text = f"{label} {figure}"
    pattern = re.escape(text) + (r"(?![\d,])" if text[-1].isdigit() else "")  # not the start of a longer number
    if re.fullmatch(r"\d+ sessions?", label):
        pattern = r"(?<!\d)" + re.escape(label) + r"(?: \([a-z ]+\))?:? " + re.escape(figure) + r"(?![\d,])"
    return re.compile(pattern)


def sheet_numbers(sheet: str, spec: TickerSpec) -> list[str]:
    """The numbers a sheet writes, dates in words and the header's symbol and name left out."""
    body = SESSION_WORDS.sub(" ", sheet.replace(spec.symbol, " ").replace(spec.name, " "))
    return [m.group() for m in SHEET_NUMBER.finditer(body)]


def sheet_of(frame: pd.DataFrame, spec: TickerSpec, session: date) -> str:
    series = Series.from_frame(spec, frame)
    return ticker_sheet(ticker_facts_at(series, series.position[session]))


def check_sheet(frame: pd.DataFrame, spec: TickerSpec, session: date) -> None:
    sheet = sheet_of(frame, spec, session)
    want = expected_figures(frame, session, spec.kind)
    for label, figure in want.items():
        assert labelled(label, figure).search(sheet), (spec.symbol, session, label, figure, sheet)
    # ... and nothing else: every number of the sheet is one of those figures or a window length.
    written = {f.replace("₹", "").replace(" points", "") for f in want.values()}
    extra = [n for n in sheet_numbers(sheet, spec) if n not in written and n not in COUNTS]
    assert not extra, (spec.symbol, session, extra, sheet)


@pytest.fixture(scope="module")
def recorded(shared_market) -> dict[str, pd.DataFrame]:
    return {symbol: read_recorded_bars(shared_market / f"{symbol}.csv") for symbol, _, _ in RECORDED}


@pytest.mark.parametrize("symbol,kind,session", RECORDED, ids=[f"{s}-{d}" for s, _, d in RECORDED])
def test_every_number_of_a_ticker_sheet_rederives_from_the_recorded_bars(recorded, symbol, kind, session):
    check_sheet(recorded[symbol], TickerSpec(symbol=symbol, name=symbol.strip("^").split(".")[0] + " Co",
                                             kind=kind), session)


def synthetic(volume: np.ndarray, sessions: int = 30) -> pd.DataFrame:
    days = pd.bdate_range("2024-01-01", periods=sessions, name="session")
    close = 100 * np.exp(np.cumsum(np.random.default_rng(7).normal(0, 0.01, sessions)))
    return pd.DataFrame({"open": close * 0.999, "high": close * 1.01, "low": close * 0.98, "close": close,
                         "volume": volume}, index=days)


def test_a_ticker_with_zero_volume_has_every_price_figure_and_no_volume_figure():
    frame, spec = synthetic(np.zeros(30)), TickerSpec(symbol="^TEST", name="Test Index", kind="index")
    session = frame.index[-1].date()
    check_sheet(frame, spec, session)
    sheet = sheet_of(frame, spec, session)
    assert "volume: not reported" in sheet and "average volume" not in sheet and "₹" not in sheet


def test_one_zero_volume_day_in_the_window_leaves_out_the_average_but_not_the_days_volume():
    volume = np.full(30, 1000.0)
    volume[-5] = 0.0
    frame, spec = synthetic(volume), TickerSpec(symbol="TEST.NS", name="Test Ltd", kind="stock")
    sheet = sheet_of(frame, spec, frame.index[-1].date())
    assert "volume 1,000" in sheet and "average volume" not in sheet
    check_sheet(frame, spec, frame.index[-1].date())


def test_the_first_session_has_no_previous_close_returns_or_averages():
    frame, spec = synthetic(np.full(30, 1000.0)), TickerSpec(symbol="TEST.NS", name="Test Ltd", kind="stock")
    sheet = sheet_of(frame, spec, frame.index[0].date())
    assert "previous close" not in sheet and "returns" not in sheet and "volatility" not in sheet
    check_sheet(frame, spec, frame.index[0].date())


def test_a_brief_sheet_states_the_close_day_change_and_returns_of_the_full_sheet(recorded):
    spec = TickerSpec(symbol="TCS.NS", name="TCS", kind="stock")
    series = Series.from_frame(spec, recorded["TCS.NS"])
    facts = ticker_facts_at(series, series.position[date(2019, 11, 29)])
    brief, full = brief_sheet(facts), ticker_sheet(facts)
    want = expected_figures(recorded["TCS.NS"], date(2019, 11, 29), "stock")
    for label in ("close", "day change", *(f"{n} session{'s' * (n != 1)}" for n in WINDOWS)):
        assert labelled(label, want[label]).search(brief) and labelled(label, want[label]).search(full)
    assert "52-week" not in brief and "volume" not in brief
