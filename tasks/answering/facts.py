"""The facts of one ticker at one session, computed from its bars: what a data sheet states and
what every answer's numbers are.

    series = Series.from_frame(spec, frame)            # store frame: open, high, low, close, volume
    facts = ticker_facts_at(series, series.position[date(2020, 6, 19)])
    facts.close, facts.returns[5], facts.field("high_52w")

Definitions (tests recompute each from the bars independently):
- the day's change is close / previous close - 1; an N-session return is close[t] / close[t-N] - 1
- volume is compared with the mean volume of the 20 sessions ending at the session (absent when
  any of them is 0: index volumes are 0 for years in the recorded data)
- volatility is the sample standard deviation (ddof=1) of the last 20 daily close-to-close
  returns, annualised with sqrt(252); risk level: below 15% low, below 25% moderate, below 40%
  high, else very high
- trend compares the close with the simple means of the last 10 and 20 closes: above both is an
  uptrend, below both a downtrend, else no clear trend
- the 52-week range is the highest high and lowest low of the sessions in the 364 days ending at
  the session; when the data starts later than the window's first week it covers fewer sessions
  and says so
A figure that needs more history than the store holds is None and left out of sheets and answers.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from tasks.config import TickerSpec

WINDOWS = (1, 3, 5, 7, 10, 20)
"""Session windows of returns (performance and comparison questions)."""
VOLUME_SESSIONS = 20
VOLATILITY_SESSIONS = 20
TRADING_DAYS_PER_YEAR = 252
RISK_LEVELS = ((15.0, "low"), (25.0, "moderate"), (40.0, "high"), (math.inf, "very high"))
"""Upper bounds of annualised volatility (percent) for each plain risk level."""
SMA_WINDOWS = (10, 20)
YEAR_DAYS = 364
"""52 weeks."""
FULL_YEAR_SLACK_DAYS = 7
"""A 52-week window counts as full when the data starts within its first week (holidays)."""


@dataclass(frozen=True)
class Series:
    """The bars of one ticker as arrays, for fast lookups by session."""

    spec: TickerSpec
    dates: tuple[date, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    position: dict[date, int] = field(repr=False)

    @classmethod
    def from_frame(cls, spec: TickerSpec, frame: pd.DataFrame) -> "Series":
        """From a store frame (DatetimeIndex `session`; open, high, low, close, volume)."""
        dates = tuple(ts.date() for ts in frame.index)
        column = {name: frame[name].to_numpy(dtype=float) for name in ("open", "high", "low", "close", "volume")}
        return cls(spec, dates, **column, position={d: i for i, d in enumerate(dates)})


def pct(new: float, old: float) -> float:
    """Percentage change from `old` to `new`."""
    return (new / old - 1.0) * 100.0


def risk_level(annualised_pct: float) -> str:
    """The plain risk level of an annualised volatility in percent."""
    return next(level for bound, level in RISK_LEVELS if annualised_pct < bound)


@dataclass(frozen=True)
class YearRange:
    """High and low over the 52 weeks (or the data available) to a session."""

    high: float
    high_on: date
    low: float
    low_on: date
    full: bool
    """False when the data starts inside the 52 weeks: then `sessions` since `since` are covered."""
    sessions: int
    since: date


@dataclass(frozen=True)
class TickerFacts:
    """Everything a data sheet says about one ticker at one session."""

    spec: TickerSpec
    session: date
    open: float
    high: float
    low: float
    close: float
    prev_close: float | None
    prev_session: date | None
    volume: float | None
    """None when the source reports no volume (0)."""
    avg_volume: float | None
    returns: dict[int, float]
    start_close: dict[int, float]
    sma: dict[int, float]
    volatility_daily: float | None
    year: YearRange

    @property
    def change(self) -> float | None:
        return None if self.prev_close is None else pct(self.close, self.prev_close)

    @property
    def volume_vs_avg(self) -> float | None:
        return None if self.volume is None or self.avg_volume is None else pct(self.volume, self.avg_volume)

    @property
    def volatility_annual(self) -> float | None:
        return None if self.volatility_daily is None else self.volatility_daily * math.sqrt(TRADING_DAYS_PER_YEAR)

    @property
    def risk(self) -> str | None:
        annual = self.volatility_annual
        return None if annual is None else risk_level(annual)

    def close_vs_sma(self, n: int) -> float:
        """The close's distance from the `n`-session average, in percent (KeyError without one)."""
        return pct(self.close, self.sma[n])

    @property
    def trend(self) -> str | None:
        if len(self.sma) < len(SMA_WINDOWS):
            return None
        above = [self.close >= self.sma[n] for n in SMA_WINDOWS]
        return "uptrend" if all(above) else "downtrend" if not any(above) else "no clear trend"

    @property
    def close_vs_year_high(self) -> float:
        """The close's distance from the 52-week high, in percent."""
        return pct(self.close, self.year.high)

    @property
    def close_vs_year_low(self) -> float:
        """The close's distance from the 52-week low, in percent."""
        return pct(self.close, self.year.low)

    def field(self, name: str) -> float | None:
        """A figure by its name in the hand-written question set's vocabulary (benchmarks/questions)."""
        if name.startswith("return_") and name.endswith("_pct"):
            return self.returns.get(int(name.split("_")[1]))
        if name in ("sma_10", "sma_20"):
            return self.sma.get(int(name[4:]))
        if name in ("close_vs_sma_10_pct", "close_vs_sma_20_pct"):
            n = int(name.split("_")[3])
            return self.close_vs_sma(n) if n in self.sma else None
        simple = {"open": self.open, "high": self.high, "low": self.low, "close": self.close,
                  "prev_close": self.prev_close, "change_pct": self.change, "volume": self.volume,
                  "avg_volume_20": self.avg_volume, "volume_vs_avg_pct": self.volume_vs_avg,
                  "volatility_daily_pct": self.volatility_daily, "volatility_annual_pct": self.volatility_annual,
                  "high_52w": self.year.high, "low_52w": self.year.low,
                  "close_vs_high_52w_pct": self.close_vs_year_high,
                  "close_vs_low_52w_pct": self.close_vs_year_low}
        if name not in simple:
            raise KeyError(f"unknown fact field {name!r}")
        return simple[name]


def year_range(s: Series, i: int) -> YearRange:
    """The 52-week (or available-window) high and low to session `i`."""
    day = s.dates[i]
    start = day - timedelta(days=YEAR_DAYS)
    first = bisect.bisect_right(s.dates, start)
    high_at = first + int(np.argmax(s.high[first:i + 1]))
    low_at = first + int(np.argmin(s.low[first:i + 1]))
    full = s.dates[0] <= start + timedelta(days=FULL_YEAR_SLACK_DAYS)
    return YearRange(float(s.high[high_at]), s.dates[high_at], float(s.low[low_at]), s.dates[low_at], full,
                     i - first + 1, s.dates[first])


def _volatility(s: Series, i: int) -> float | None:
    n = VOLATILITY_SESSIONS
    if i < n:
        return None
    returns = s.close[i - n + 1:i + 1] / s.close[i - n:i] - 1.0
    return float(np.std(returns, ddof=1)) * 100.0


def _avg_volume(s: Series, i: int) -> float | None:
    window = s.volume[i - VOLUME_SESSIONS + 1:i + 1]
    if i < VOLUME_SESSIONS - 1 or not (window > 0).all():
        return None
    return float(window.mean())


def ticker_facts_at(s: Series, i: int) -> TickerFacts:
    """The facts of ticker `s` at its `i`-th session."""
    close = float(s.close[i])
    return TickerFacts(
        spec=s.spec, session=s.dates[i], open=float(s.open[i]), high=float(s.high[i]), low=float(s.low[i]),
        close=close, prev_close=float(s.close[i - 1]) if i >= 1 else None,
        prev_session=s.dates[i - 1] if i >= 1 else None,
        volume=float(s.volume[i]) if s.volume[i] > 0 else None, avg_volume=_avg_volume(s, i),
        returns={n: pct(close, float(s.close[i - n])) for n in WINDOWS if i >= n},
        start_close={n: float(s.close[i - n]) for n in WINDOWS if i >= n},
        sma={n: float(s.close[i - n + 1:i + 1].mean()) for n in SMA_WINDOWS if i >= n - 1},
        volatility_daily=_volatility(s, i), year=year_range(s, i))
