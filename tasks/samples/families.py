"""Question families: the one answer text of each fact, written from the same figures as the data
sheet (tasks.answering.facts), so a right answer copies numbers the sheet states.

    facts = ticker_fact_set(view, "TCS.NS", day, windows=(5, 20), latest=True)
    facts[0].family, facts[0].answer, facts[0].truth

Families: close, change, open, prev_close, day_range, volume, performance (per window),
volatility, trend, range_52w, high_52w, low_52w, session (latest only), compare (two tickers
over one window) and market_summary. A family whose figures the bars cannot give yet (a first
session, 20 sessions of history) is left out for that ticker and session.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from tasks.answering.facts import VOLATILITY_SESSIONS, WINDOWS, TickerFacts
from tasks.answering.ground import MarketView
from tasks.answering.sheet import market_movers, mover_change
from tasks.samples.format import Figures, choose, session_words

WINDOWS_PER_HISTORY_SESSION = 2
"""Performance windows asked per ticker on an older session (the latest session gets all)."""
SUMMARY_MOVERS = 2
"""Top gainers and losers a market summary names (the sheet lists three of each)."""
CLOSED_BOOK_FAMILIES = frozenset({"close", "change", "open", "prev_close", "day_range", "volume", "performance",
                                  "volatility", "trend", "range_52w", "high_52w", "low_52w", "session"})
"""Families asked closed-book too (about the latest session): one ticker each."""


@dataclass(frozen=True)
class Fact:
    """One question's facts: the tickers and session it is about, its slots and its one answer."""

    family: str
    tickers: tuple[str, ...]
    session: date
    key: str
    slots: dict[str, str]
    answer: str
    truth: list[dict[str, float | str]]


def _fact(family: str, facts: Sequence[TickerFacts], key: str, answer: str, fig: Figures, **slots: str) -> Fact:
    return Fact(family, tuple(f.spec.symbol for f in facts), facts[0].session, key, slots, answer, fig.truth)


def close_answer(f: TickerFacts, fig: Figures) -> str | None:
    if f.change is None:  # no previous close
        return None
    k, name, day = f.spec.kind, f.spec.name, session_words(f.session)
    text = (f"{name} closed at {fig.level(f.close, k)} on {day} ({fig.change(f.change)} on the day), "
            f"with a high of {fig.level(f.high, k)}")
    if f.volume is None:
        return text + f" and a low of {fig.level(f.low, k)}; no volume is reported for it."
    return text + f", a low of {fig.level(f.low, k)} and volume of {fig.volume(f.volume)}."


def change_answer(f: TickerFacts, fig: Figures) -> str | None:
    if f.prev_close is None or f.change is None:
        return None
    return (f"{f.spec.name} moved {fig.change(f.change)} on {session_words(f.session)}, from a previous close of "
            f"{fig.level(f.prev_close, f.spec.kind)} to {fig.level(f.close, f.spec.kind)}.")


def open_answer(f: TickerFacts, fig: Figures) -> str:
    """The open, then the rest of the day's bar: people ask for the open together with the close
    ("open and close", "OHLC") more often than alone."""
    k = f.spec.kind
    return (f"{f.spec.name} opened at {fig.level(f.open, k)} on {session_words(f.session)}, traded between "
            f"{fig.level(f.low, k)} and {fig.level(f.high, k)} and closed at {fig.level(f.close, k)}.")


def prev_close_answer(f: TickerFacts, fig: Figures) -> str | None:
    if f.prev_close is None or f.change is None:
        return None
    k = f.spec.kind
    return (f"Before the session of {session_words(f.session)}, the previous close of {f.spec.name} was "
            f"{fig.level(f.prev_close, k)}; it then closed at {fig.level(f.close, k)} ({fig.change(f.change)}).")


def day_range_answer(f: TickerFacts, fig: Figures) -> str:
    k = f.spec.kind
    return (f"On {session_words(f.session)}, {f.spec.name} traded between a low of {fig.level(f.low, k)} and a "
            f"high of {fig.level(f.high, k)}.")


def volume_answer(f: TickerFacts, fig: Figures) -> str | None:
    if f.volume is None or f.avg_volume is None or f.volume_vs_avg is None:
        return None
    return (f"{f.spec.name} traded a volume of {fig.volume(f.volume)} on {session_words(f.session)}, "
            f"{fig.change(f.volume_vs_avg)} versus its {fig.count(20)}-session average of {fig.volume(f.avg_volume)}.")


def performance_answer(f: TickerFacts, fig: Figures, n: int) -> str | None:
    if n not in f.returns:
        return None
    return (f"Over {fig.sessions(n)} to {session_words(f.session)}, {f.spec.name} moved "
            f"{fig.change(f.returns[n])}, closing at {fig.level(f.close, f.spec.kind)}.")


def volatility_answer(f: TickerFacts, fig: Figures) -> str | None:
    if f.volatility_daily is None or f.volatility_annual is None:
        return None
    return (f"Over the {fig.count(VOLATILITY_SESSIONS)} sessions to {session_words(f.session)}, the daily returns "
            f"of {f.spec.name} had a standard deviation of {fig.magnitude(f.volatility_daily)}, or "
            f"{fig.magnitude(f.volatility_annual)} annualised: {f.risk} risk.")


def trend_answer(f: TickerFacts, fig: Figures) -> str | None:
    if f.trend is None:
        return None
    k = f.spec.kind
    text = f"On {session_words(f.session)} {f.spec.name} closed at {fig.level(f.close, k)}"
    for joiner, n in ((", ", 10), (" and ", 20)):
        side = "above" if f.close >= f.sma[n] else "below"
        text += (f"{joiner}{side} its {fig.count(n)}-session average of {fig.level(f.sma[n], k)} "
                 f"({fig.change(f.close_vs_sma(n))})")
    return text + f": {TREND_WORDS[f.trend]}."


TREND_WORDS = {"uptrend": "an uptrend", "downtrend": "a downtrend", "no clear trend": "no clear trend"}


def _span(f: TickerFacts, fig: Figures) -> str:
    y = f.year
    if y.full:
        return f"In the {fig.count(52)} weeks to {session_words(f.session)}"
    return (f"In the {fig.sessions(y.sessions)} of data since {session_words(y.since)} "
            f"(less than {fig.count(52)} weeks)")


def range_answer(f: TickerFacts, fig: Figures) -> str:
    y, k = f.year, f.spec.kind
    return (f"{_span(f, fig)}, {f.spec.name} ranged from a low of {fig.level(y.low, k)} on "
            f"{session_words(y.low_on)} to a high of {fig.level(y.high, k)} on {session_words(y.high_on)}; its "
            f"close of {fig.level(f.close, k)} is {fig.change(f.close_vs_year_high)} from the high and "
            f"{fig.change(f.close_vs_year_low)} from the low.")


def high_answer(f: TickerFacts, fig: Figures) -> str:
    y = f.year
    k = f.spec.kind
    return (f"{_span(f, fig)}, the highest price of {f.spec.name} was {fig.level(y.high, k)}, on "
            f"{session_words(y.high_on)}; its close of {fig.level(f.close, k)} is {fig.change(f.close_vs_year_high)} "
            f"from it.")


def low_answer(f: TickerFacts, fig: Figures) -> str:
    y = f.year
    k = f.spec.kind
    return (f"{_span(f, fig)}, the lowest price of {f.spec.name} was {fig.level(y.low, k)}, on "
            f"{session_words(y.low_on)}; its close of {fig.level(f.close, k)} is {fig.change(f.close_vs_year_low)} "
            f"from it.")


def session_answer(f: TickerFacts, fig: Figures) -> str:
    return f"The latest session I have for {f.spec.name} is {session_words(f.session)}."


SINGLE: dict[str, Callable[[TickerFacts, Figures], str | None]] = {
    "close": close_answer, "change": change_answer, "open": open_answer, "prev_close": prev_close_answer,
    "day_range": day_range_answer, "volume": volume_answer, "volatility": volatility_answer,
    "trend": trend_answer, "range_52w": range_answer, "high_52w": high_answer, "low_52w": low_answer,
}
"""The one-ticker families without a window, in the order samples are generated."""


def ticker_fact_set(f: TickerFacts, windows: Sequence[int], latest: bool) -> list[Fact]:
    """Every one-ticker fact at one session: the families above, `windows` of performance, and
    (about the newest data) the session."""
    found: list[Fact] = []
    for family, answer in SINGLE.items():
        fig = Figures()
        text = answer(f, fig)
        if text is not None:
            found.append(_fact(family, [f], family, text, fig, name=f.spec.name))
    for n in windows:
        fig = Figures()
        text = performance_answer(f, fig, n)
        if text is not None:
            found.append(_fact("performance", [f], f"n{n}", text, fig, name=f.spec.name, **window_slots(n)))
    if latest:
        fig = Figures()
        found.append(_fact("session", [f], "session", session_answer(f, fig), fig, name=f.spec.name))
    return found


PERIODS = {5: "week", 10: "fortnight", 20: "month"}
"""What people call a window of trading sessions (as the data sheet labels it: tasks.answering.sheet.SPANS);
templates with a `{period}` slot ("this week", "over the past month") ask only about these windows."""


def window_slots(n: int) -> dict[str, str]:
    slots = {"sessions": f"{n} session" + "s" * (n != 1), "n": str(n)}
    if n in PERIODS:
        slots["period"] = PERIODS[n]
    return slots


def compare_fact(a: TickerFacts, b: TickerFacts, n: int) -> Fact | None:
    """Returns of two tickers over the same `n` sessions, and which did better."""
    if n not in a.returns or n not in b.returns:
        return None
    fig, day = Figures(), session_words(a.session)
    ra, rb = a.returns[n], b.returns[n]
    text = (f"Over {fig.sessions(n)} to {day}, {a.spec.name} moved {fig.change(ra)} and {b.spec.name} "
            f"{fig.change(rb)}; ")
    if round(ra, 2) == round(rb, 2):
        text += "neither did better."
    else:
        text += f"{(a if ra > rb else b).spec.name} did better."
    return _fact("compare", [a, b], f"n{n}", text, fig, name=a.spec.name, other=b.spec.name, **window_slots(n))


def summary_fact(facts: Sequence[TickerFacts], session: date) -> Fact | None:
    """Indices, then the top gainers and losers (as the market sheet lists them), with the day's change."""
    indices, gainers, losers = market_movers([f for f in facts if f.session == session])
    groups = [("Indices", indices)]
    groups += ([("Top gainers", gainers[:SUMMARY_MOVERS]), ("Top losers", losers[:SUMMARY_MOVERS])] if losers
               else [("Stocks and funds", gainers)])
    fig, sentences, named = Figures(), [], []
    for title, entries in groups:
        if entries:
            items = [f"{f.spec.name} {fig.level(f.close, f.spec.kind)} ({fig.change(mover_change(f))})" for f in entries]
            sentences.append(f"{title}: {', '.join(items)}.")
            named += entries
    if not named:
        return None
    text = f"Market summary for {session_words(session)}. " + " ".join(sentences)
    return Fact("market_summary", ("market",), session, "summary", {}, text, fig.truth)


def market_fact_set(view: MarketView, day: date, seed: int, pairs: int) -> list[Fact]:
    """Comparisons of `pairs` seeded ticker pairs (each over a seeded window) and a market summary."""
    trading = [f for f in (view.facts(s, day) for s in view.series) if f is not None]
    candidates = [(a, b) for a in trading for b in trading if a is not b]
    found: list[Fact] = []
    for a, b in choose(seed, f"pairs|{day}", candidates, k=len(candidates)):
        if len(found) == pairs:
            break
        n = choose(seed, f"compare|{a.spec.symbol}|{b.spec.symbol}|{day}", WINDOWS)[0]
        fact = compare_fact(a, b, n)
        if fact is not None:
            found.append(fact)
    summary = summary_fact(trading, day)
    return found + ([summary] if summary else [])


FAMILIES: tuple[str, ...] = (*SINGLE, "performance", "session", "compare", "market_summary")
"""Every question family."""
