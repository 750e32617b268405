"""Question families: the facts of one session computed from the bars, and the one answer text.

Definitions (what every answer's numbers mean; tests recompute them the same way):
- a session's change is close / previous close - 1; an N-session return is close[t] / close[t-N] - 1
- volume is compared with the mean volume of the 20 sessions ending at the session (skipped when
  any of them is 0: index volumes are 0 for years in the recorded data)
- volatility is the sample standard deviation (ddof=1) of the last 20 daily close-to-close
  returns, annualised with sqrt(252); risk level from the annualised figure: below 15% low,
  below 25% moderate, below 40% high, else very high
- trend compares the close with the simple means of the last 10 and 20 closes: above both is
  an uptrend, below both a downtrend, else no clear trend
- the 52-week range is the highest high and lowest low of the sessions in the 364 days ending at
  the session; when the data starts later than the window's first week, the answer says how
  many sessions it covers instead
- prompt families compute from the closes as written in the prompt (rounded to 2 decimals), so
  the answer follows from the prompt alone
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from tasks.config import TickerSpec
from tasks.sample_format import Figures, choose, format_level, session_words

WINDOWS = (1, 3, 5, 7, 10, 20)
"""Session windows of the performance and comparison families."""
WINDOWS_PER_HISTORY_SESSION = 2
"""Performance windows asked per ticker on an older session (the latest session gets all)."""
VOLUME_SESSIONS = 20
VOLATILITY_SESSIONS = 20
TRADING_DAYS_PER_YEAR = 252
RISK_LEVELS = ((15.0, "low"), (25.0, "moderate"), (40.0, "high"), (math.inf, "very high"))
"""Upper bounds of annualised volatility (percent) for each plain risk level."""
SMA_SHORT, SMA_LONG = 10, 20
YEAR_DAYS = 364
"""52 weeks."""
FULL_YEAR_SLACK_DAYS = 7
"""A 52-week window counts as full when the data starts within its first week (holidays)."""
SUMMARY_MOVERS = 2
"""Top gainers and losers (stocks and funds) named in a market summary, besides the indices."""
PROMPT_CLOSES = (5, 6, 7, 8, 9, 10)
"""How many closes a prompt-answerable question lists."""


@dataclass(frozen=True)
class Series:
    """The bars of one ticker as arrays, for fast lookups by session."""

    spec: TickerSpec
    dates: tuple[date, ...]
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    position: dict[date, int] = field(repr=False)

    @classmethod
    def from_frame(cls, spec: TickerSpec, frame: pd.DataFrame) -> "Series":
        """From a store frame (DatetimeIndex `session`; open, high, low, close, volume)."""
        dates = tuple(ts.date() for ts in frame.index)
        column = {name: frame[name].to_numpy(dtype=float) for name in ("high", "low", "close", "volume")}
        return cls(spec, dates, **column, position={d: i for i, d in enumerate(dates)})


@dataclass(frozen=True)
class Moment:
    """When a question is asked: as of a named session, or (latest) about the newest data, undated."""

    session: date
    latest: bool

    def slots(self) -> dict[str, str]:
        """Template slots that say when."""
        if self.latest:
            return {"on": "in the latest session", "upto": "the latest session", "for": "for the latest session"}
        words = session_words(self.session)
        return {"on": f"on {words}", "upto": words, "for": f"for {words}"}


@dataclass(frozen=True)
class Fact:
    """One question's facts: the slots a template is filled with, and its one answer."""

    family: str
    tickers: tuple[str, ...]
    session: date
    key: str
    latest: bool
    slots: dict[str, str]
    answer: str
    truth: list[dict[str, float | str]]


def _fact(family: str, series: Sequence[Series], moment: Moment, key: str, answer: str, fig: Figures,
          **slots: str) -> Fact:
    names = {"name": series[0].spec.name, "other": series[1].spec.name} if len(series) == 2 else (
        {"name": series[0].spec.name} if len(series) == 1 else {})
    return Fact(family, tuple(s.spec.symbol for s in series), moment.session, key, moment.latest,
                {**moment.slots(), **names, **slots}, answer, fig.truth)


def _pct(new: float, old: float) -> float:
    return (new / old - 1.0) * 100.0


def close_fact(s: Series, i: int, m: Moment) -> Fact | None:
    """Close, day change, high, low and (when reported) volume."""
    if i < 1:
        return None
    fig, kind, name = Figures(), s.spec.kind, s.spec.name
    text = (f"{name} closed at {fig.level(s.close[i], kind)} on {session_words(s.dates[i])} "
            f"({fig.change(_pct(s.close[i], s.close[i - 1]))} on the day), with a high of "
            f"{fig.level(s.high[i], kind)}")
    if s.volume[i] > 0:
        text += f", a low of {fig.level(s.low[i], kind)} and volume of {fig.volume(s.volume[i])}."
    else:
        text += f" and a low of {fig.level(s.low[i], kind)}; no volume is reported for it."
    return _fact("close", [s], m, "close", text, fig)


def volume_fact(s: Series, i: int, m: Moment) -> Fact | None:
    """Volume against its 20-session mean."""
    window = s.volume[i - VOLUME_SESSIONS + 1:i + 1]
    if i < VOLUME_SESSIONS - 1 or not (window > 0).all():
        return None
    fig, mean = Figures(), float(window.mean())
    text = (f"{s.spec.name} traded a volume of {fig.volume(s.volume[i])} on {session_words(s.dates[i])}, "
            f"{fig.change(_pct(s.volume[i], mean))} versus its {fig.count(VOLUME_SESSIONS)}-session "
            f"average of {fig.volume(mean)}.")
    return _fact("volume", [s], m, "volume", text, fig)


def performance_fact(s: Series, i: int, n: int, m: Moment) -> Fact | None:
    """Return over the last `n` sessions."""
    if i < n:
        return None
    fig, kind = Figures(), s.spec.kind
    text = (f"Over {fig.sessions(n)} to {session_words(s.dates[i])}, {s.spec.name} moved "
            f"{fig.change(_pct(s.close[i], s.close[i - n]))}, from {fig.level(s.close[i - n], kind)} "
            f"on {session_words(s.dates[i - n])} to {fig.level(s.close[i], kind)}.")
    return _fact("performance", [s], m, f"n{n}", text, fig, sessions=f"{n} session" + "s" * (n != 1))


def risk_level(annualised_pct: float) -> str:
    """The plain risk level of an annualised volatility in percent."""
    return next(level for bound, level in RISK_LEVELS if annualised_pct < bound)


def volatility_fact(s: Series, i: int, m: Moment) -> Fact | None:
    """Daily and annualised volatility over 20 sessions, with a risk level."""
    n = VOLATILITY_SESSIONS
    if i < n:
        return None
    returns = s.close[i - n + 1:i + 1] / s.close[i - n:i] - 1.0
    daily = float(np.std(returns, ddof=1)) * 100.0
    annual = daily * math.sqrt(TRADING_DAYS_PER_YEAR)
    fig = Figures()
    text = (f"Over the {fig.count(n)} sessions to {session_words(s.dates[i])}, the daily returns of "
            f"{s.spec.name} had a standard deviation of {fig.magnitude(daily)}, or "
            f"{fig.magnitude(annual)} annualised: {risk_level(annual)} risk.")
    return _fact("volatility", [s], m, "volatility", text, fig)


def trend_fact(s: Series, i: int, m: Moment) -> Fact | None:
    """Close against its 10- and 20-session simple moving averages."""
    if i < SMA_LONG - 1:
        return None
    fig, kind, close = Figures(), s.spec.kind, s.close[i]
    close_text = fig.level(close, kind)  # first figure of the answer, so recorded first
    parts, above = [], []
    for n in (SMA_SHORT, SMA_LONG):
        sma = float(s.close[i - n + 1:i + 1].mean())
        above.append(close >= sma)
        parts.append(f"{'above' if close >= sma else 'below'} its {fig.count(n)}-session average of "
                     f"{fig.level(sma, kind)} ({fig.change(_pct(close, sma))})")
    label = "an uptrend" if all(above) else "a downtrend" if not any(above) else "no clear trend"
    text = f"On {session_words(s.dates[i])} {s.spec.name} closed at {close_text}, {parts[0]} and {parts[1]}: {label}."
    return _fact("trend", [s], m, "trend", text, fig)


def range_fact(s: Series, i: int, m: Moment) -> Fact:
    """52-week (or available-window) high and low, and the close's distance from them."""
    day, kind, fig = s.dates[i], s.spec.kind, Figures()
    start = day - timedelta(days=YEAR_DAYS)
    first = bisect.bisect_right(s.dates, start)
    high_at = first + int(np.argmax(s.high[first:i + 1]))
    low_at = first + int(np.argmin(s.low[first:i + 1]))
    if s.dates[0] <= start + timedelta(days=FULL_YEAR_SLACK_DAYS):
        span = f"In the {fig.count(52)} weeks to {session_words(day)}"
    else:
        span = (f"In the {fig.sessions(i - first + 1)} of data since {session_words(s.dates[first])} "
                f"(less than {fig.count(52)} weeks)")
    close, high, low = s.close[i], s.high[high_at], s.low[low_at]
    text = (f"{span}, {s.spec.name} ranged from a low of {fig.level(low, kind)} on "
            f"{session_words(s.dates[low_at])} to a high of {fig.level(high, kind)} on "
            f"{session_words(s.dates[high_at])}; its close of {fig.level(close, kind)} is "
            f"{fig.change(_pct(close, high))} from the high and {fig.change(_pct(close, low))} from the low.")
    return _fact("range_52w", [s], m, "range", text, fig)


def session_fact(s: Series, i: int, m: Moment) -> Fact:
    """The latest session in words (asked only about the newest data)."""
    text = f"The latest session I have for {s.spec.name} is {session_words(s.dates[i])}."
    return _fact("session", [s], m, "session", text, Figures())


def compare_fact(a: Series, b: Series, day: date, n: int, m: Moment) -> Fact | None:
    """Returns of two tickers over the same `n` sessions, and which did better."""
    ia, ib = a.position.get(day), b.position.get(day)
    if ia is None or ib is None or ia < n or ib < n or a.dates[ia - n] != b.dates[ib - n]:
        return None
    fig = Figures()
    ra, rb = _pct(a.close[ia], a.close[ia - n]), _pct(b.close[ib], b.close[ib - n])
    text = (f"Over {fig.sessions(n)} to {session_words(day)}, {a.spec.name} moved {fig.change(ra)} "
            f"and {b.spec.name} {fig.change(rb)}; ")
    if ra == rb:
        text += "neither outperformed the other."
    else:
        winner, loser = (a, b) if ra > rb else (b, a)
        text += (f"{winner.spec.name} outperformed {loser.spec.name} by "
                 f"{fig.percentage_points(abs(ra - rb))}.")
    return _fact("compare", [a, b], m, f"n{n}", text, fig, sessions=f"{n} session" + "s" * (n != 1))


def summary_fact(series: Sequence[Series], day: date, m: Moment) -> Fact | None:
    """Indices, then the top gainers and losers among stocks and funds, with the day's change."""
    moves = [(s, s.position[day]) for s in series if s.position.get(day, 0) >= 1]
    if not moves:
        return None
    change = {s.spec.symbol: _pct(s.close[i], s.close[i - 1]) for s, i in moves}
    indices = [(s, i) for s, i in moves if s.spec.kind == "index"]
    others = sorted((e for e in moves if e[0].spec.kind != "index"),
                    key=lambda e: (-change[e[0].spec.symbol], e[0].spec.symbol))
    groups = [("Indices", indices)]
    if len(others) > 2 * SUMMARY_MOVERS:
        groups += [("Top gainers", others[:SUMMARY_MOVERS]), ("Top losers", others[:-SUMMARY_MOVERS - 1:-1])]
    else:
        groups.append(("Stocks and funds", others))
    fig, sentences = Figures(), []
    for title, entries in groups:
        if entries:
            items = [f"{s.spec.name} {fig.level(s.close[i], s.spec.kind)} ({fig.change(change[s.spec.symbol])})"
                     for s, i in entries]
            sentences.append(f"{title}: {', '.join(items)}.")
    text = f"Market summary for {session_words(day)}. " + " ".join(sentences)
    return _fact("market_summary", [s for group in groups for s, _ in group[1]], m, "summary", text, fig)


def prompt_facts(s: Series, i: int, n: int) -> list[Fact]:
    """Change and simple mean of the last `n` closes, both answerable from the prompt's listing."""
    if i < n - 1:
        return []
    closes = [round(float(c), 2) for c in s.close[i - n + 1:i + 1]]
    listing = "\n".join(f"{d.isoformat()}: {format_level(c, s.spec.kind)}"
                        for d, c in zip(s.dates[i - n + 1:i + 1], closes))
    slots = {"n": str(n), "sessions": f"{n} sessions", "listing": listing}
    moment, kind = Moment(s.dates[i], latest=False), s.spec.kind
    fig = Figures()
    change = (f"From {fig.level(closes[0], kind)} to {fig.level(closes[-1], kind)}, {s.spec.name} "
              f"moved {fig.change(_pct(closes[-1], closes[0]))}.")
    change_fact = _fact("prompt_change", [s], moment, f"n{n}", change, fig, **slots)
    fig = Figures()
    sma = (f"The {fig.count(n)}-session simple moving average of {s.spec.name} is "
           f"{fig.level(sum(closes) / n, kind)}.")
    return [change_fact, _fact("prompt_sma", [s], moment, f"n{n}", sma, fig, **slots)]


def ticker_facts(s: Series, i: int, m: Moment, seed: int) -> list[Fact]:
    """Every per-ticker fact family for one moment: all performance windows for the latest
    session, a seeded few for an older one (they would otherwise outnumber every other family)."""
    key = f"windows|{s.spec.symbol}|{s.dates[i]}"
    windows = WINDOWS if m.latest else sorted(choose(seed, key, WINDOWS, k=WINDOWS_PER_HISTORY_SESSION))
    facts = [close_fact(s, i, m), volume_fact(s, i, m)]
    facts += [performance_fact(s, i, n, m) for n in windows]
    facts += [volatility_fact(s, i, m), trend_fact(s, i, m), range_fact(s, i, m)]
    if m.latest:
        facts.append(session_fact(s, i, m))
    return [f for f in facts if f is not None]


def market_facts(series: Sequence[Series], day: date, m: Moment, seed: int, pairs: int) -> list[Fact]:
    """Comparisons of `pairs` seeded ticker pairs (each over a seeded window) and a market summary."""
    trading = [s for s in series if day in s.position]
    candidates = [(a, b) for a in trading for b in trading if a is not b]
    facts: list[Fact] = []
    for a, b in choose(seed, f"pairs|{day}", candidates, k=len(candidates)):
        if len(facts) == pairs:
            break
        n = choose(seed, f"compare|{a.spec.symbol}|{b.spec.symbol}|{day}", WINDOWS)[0]
        fact = compare_fact(a, b, day, n, m)
        if fact is not None:
            facts.append(fact)
    summary = summary_fact(series, day, m)
    return facts + ([summary] if summary else [])
