"""What happens to bad bars before anything is stored: drop with a reason, or reject."""
from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest

from tasks.market import data as market_data
from tasks.market.calendar import IST, resolve_session, sessions_between
from tasks.config import MarketConfig, TickerSpec
from tasks.market.data import clean_bars, stage_new_bars
from tasks.market.sources import CsvSource
from tasks.market.store import BarValidationError, read_bars_file, session_index

MARKET = MarketConfig(tickers=[TickerSpec(symbol="TCS.NS", name="TCS", kind="stock")], backfill_sessions=140)
AS_OF = date(2019, 11, 29)
SESSION = resolve_session(AS_OF, MARKET, now=datetime(2019, 12, 2, tzinfo=IST))


def good_bars(end: date = AS_OF, n: int = 150) -> pd.DataFrame:
    """`n` consistent bars on the sessions up to `end`, in the store's schema."""
    days = sessions_between(date(2018, 1, 1), end, MARKET)[-n:]
    close = 2000 + 10 * np.sin(np.arange(n))
    return pd.DataFrame({"open": close - 2, "high": close + 5, "low": close - 6, "close": close,
                         "volume": np.full(n, 2.0e6)}, index=session_index(days))


class StubSource:
    """A source that returns a fixed frame, whatever range is asked."""

    name, synthetic = "csv", False

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def fetch(self, symbol: str, start: date, end: date) -> pd.DataFrame:
        return self.frame


def _set(bars: pd.DataFrame, day: str, **values) -> pd.DataFrame:
    for column, value in values.items():
        bars.loc[pd.Timestamp(day), column] = value
    return bars


def _duplicate(bars: pd.DataFrame, day: str) -> pd.DataFrame:
    return pd.concat([bars, bars.loc[[pd.Timestamp(day)]]]).sort_index()


def _future(bars: pd.DataFrame, day: str) -> pd.DataFrame:
    extra = bars.iloc[[-1]].copy()
    extra.index = session_index([day])
    return pd.concat([bars, extra])


CORRUPTIONS = {
    "price is missing (NaN)": lambda b: _set(b, "2019-11-20", close=np.nan),
    "price is not positive": lambda b: _set(b, "2019-11-20", low=-5.0),
    "high < low": lambda b: _set(b, "2019-11-20", high=1900.0, low=2100.0),
    "high < max(open, close)": lambda b: _set(b, "2019-11-20", high=1990.0),
    "volume is negative": lambda b: _set(b, "2019-11-20", volume=-1.0),
    "duplicate date": lambda b: _duplicate(b, "2019-11-20"),
    "bar dated after as_of": lambda b: _future(b, "2019-12-02"),
}


@pytest.mark.parametrize("rule", list(CORRUPTIONS))
def test_corrupt_bar_is_rejected_naming_ticker_date_and_rule(rule, tmp_path, monkeypatch):
    corrupt = CORRUPTIONS[rule](good_bars())
    monkeypatch.setattr(market_data, "make_source", lambda market, home=None: StubSource(corrupt))
    with pytest.raises(BarValidationError) as caught:
        stage_new_bars(tmp_path, MARKET, "TCS.NS", SESSION)
    day = "2019-12-02" if "after" in rule else "2019-11-20"
    assert caught.value.rule == rule
    assert str(caught.value).startswith(f"TCS.NS {day}: {rule}")
    assert not (tmp_path / "market" / "TCS.NS.csv").exists()


def test_null_and_junk_rows_of_a_csv_file_are_dropped_with_a_reason(tmp_path):
    lines = good_bars().rename(columns=str.title).to_csv(index_label="Date").splitlines()
    lines = [line if not line.startswith("2019-11-20") else "2019-11-20,null,null,null,null,null" for line in lines]
    (tmp_path / "TCS.NS.csv").write_text("\n".join(lines + ["not-a-date,1,2,0.5,1.5,10", ""]))
    raw = CsvSource(tmp_path, adjusted=False).fetch("TCS.NS", date(2019, 11, 1), AS_OF)
    bars, dropped = clean_bars(raw, "TCS.NS", SESSION, MARKET)
    assert pd.Timestamp("2019-11-20") not in bars.index and bars.index[-1] == pd.Timestamp(AS_OF)
    assert [(d.session, d.reason.split(":")[0]) for d in dropped] == [(date(2019, 11, 20), "junk row"),
                                                                      (None, "unreadable date")]


def test_row_on_a_non_session_date_is_dropped_unless_a_special_session():
    sunday = _future(good_bars(), "2019-10-27").sort_index()
    bars, dropped = clean_bars(sunday, "TCS.NS", SESSION, MARKET)
    assert pd.Timestamp("2019-10-27") not in bars.index
    assert "not a session (Sunday)" in dropped[0].reason
    special = MARKET.model_copy(update={"special_sessions": [date(2019, 10, 27)]})
    kept, none_dropped = clean_bars(sunday, "TCS.NS", SESSION, special)
    assert pd.Timestamp("2019-10-27") in kept.index and not none_dropped


def test_todays_bar_before_the_close_is_dropped_as_not_final(tmp_path, monkeypatch):
    today = resolve_session(date(2019, 11, 29), MARKET, now=datetime(2019, 11, 29, 11, 0, tzinfo=IST))
    monkeypatch.setattr(market_data, "make_source", lambda market, home=None: StubSource(good_bars()))
    bars, meta = read_bars_file(stage_new_bars(tmp_path, MARKET, "TCS.NS", today), "TCS.NS")
    assert bars.index[-1] == pd.Timestamp("2019-11-28")
    assert meta["dropped"] == [["2019-11-29", "not final: 2019-11-29 before the close plus margin"]]
