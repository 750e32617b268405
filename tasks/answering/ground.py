"""Grounding: from a question to the data sheet its answer is read from, or to a plain refusal.

    view = MarketView.from_bars(bars_by_symbol, cfg.market.tickers)
    g = ground("What did RIL close at yesterday?", view, today=date(2020, 6, 20))
    g.symbols, g.session, g.sheet          # ("RELIANCE.NS",), 2020-06-19, "Data sheet: ..."
    g.refusal                              # set instead when no sheet can be given: never a number

One ticker gets its full sheet, two to four tickers a brief sheet each (close, change, returns;
compared over the latest session they all hold), and a question naming no ticker but the market
("market", "indices", "movers", ...) the market sheet. Samples are grounded by this same function,
so training sees exactly the prompts that `ask` builds.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

import pandas as pd

from tasks.answering.dates import DateError, DayReference, find_day
from tasks.answering.facts import Series, TickerFacts, ticker_facts_at
from tasks.answering.sheet import brief_sheet, market_sheet, ticker_sheet
from tasks.answering.tickers import display_name, find_tickers
from tasks.config import TickerSpec
from tasks.samples.format import session_words

MAX_TICKERS = 4
MARKET_WORDS = re.compile(r"\b(markets?|indices|indexes|summary|summarise|summarize|wrap|movers?|gainers?|losers?)\b",
                          re.IGNORECASE)


@dataclass(frozen=True)
class Grounding:
    """What a question is about, and the sheet to answer it from (or why there is none)."""

    kind: Literal["ticker", "tickers", "market", "refusal"]
    symbols: tuple[str, ...] = ()
    session: date | None = None
    sheet: str | None = None
    refusal: str | None = None


class MarketView:
    """The bars a question can be answered from (the store, or the store as of a sample set)."""

    def __init__(self, series: Mapping[str, Series]):
        self.series = dict(series)
        self._facts = functools.lru_cache(maxsize=None)(self._compute)

    @classmethod
    def from_bars(cls, bars: Mapping[str, pd.DataFrame], universe: Sequence[TickerSpec]) -> "MarketView":
        """From store frames, for the universe's tickers that have bars."""
        return cls({s.symbol: Series.from_frame(s, bars[s.symbol]) for s in universe
                    if s.symbol in bars and len(bars[s.symbol])})

    @property
    def universe(self) -> list[TickerSpec]:
        return [s.spec for s in self.series.values()]

    def _compute(self, symbol: str, i: int) -> TickerFacts:
        return ticker_facts_at(self.series[symbol], i)

    def facts(self, symbol: str, session: date) -> TickerFacts | None:
        """The facts of `symbol` at `session`, None when the store has no bar then."""
        i = self.series[symbol].position.get(session)
        return None if i is None else self._facts(symbol, i)

    def latest(self, symbol: str) -> date:
        return self.series[symbol].dates[-1]

    def name(self, symbol: str) -> str:
        return self.series[symbol].spec.name


def _held(view: MarketView) -> str:
    return ", ".join(view.name(s) for s in view.series)


def _no_session(view: MarketView, symbol: str, day: DayReference) -> Grounding:
    s = view.series[symbol]
    before = [d for d in s.dates if d < day.day]
    text = f"The market store holds no session of {s.spec.name} on {session_words(day.day)}"
    if before:
        text += f"; the nearest earlier session is {session_words(before[-1])}"
    text += f" and the latest is {session_words(s.dates[-1])}." if before else (
        f"; its data starts on {session_words(s.dates[0])}.")
    return Grounding("refusal", (symbol,), None, None, text + " I give no figures for a day I have no data for.")


def _session_for(view: MarketView, symbols: Sequence[str], day: DayReference | None) -> date | Grounding:
    if day is None:
        latest = min(view.latest(s) for s in symbols)
        missing = [s for s in symbols if view.facts(s, latest) is None]
        return _no_session(view, missing[0], DayReference(latest, "")) if missing else latest
    for symbol in symbols:
        if view.facts(symbol, day.day) is None:
            return _no_session(view, symbol, day)
    return day.day


def _ground_market(view: MarketView, day: DayReference | None) -> Grounding:
    session = day.day if day else max(view.latest(s) for s in view.series)
    facts = [f for f in (view.facts(s, session) for s in view.series) if f is not None]
    if not facts:
        return Grounding("refusal", refusal=f"The market store holds no session on {session_words(session)}. "
                                            "I give no figures for a day I have no data for.")
    return Grounding("market", tuple(f.spec.symbol for f in facts), session, market_sheet(facts, session))


def _refuse_tickers(view: MarketView, unknown: Sequence[str]) -> Grounding:
    if unknown:
        names = ", ".join(f"{display_name(s)} ({s})" for s in unknown)
        text = f"I have no data on {names}: the market store holds {_held(view)}."
    else:
        text = f"I could not tell which ticker the question is about. The market store holds {_held(view)}."
    return Grounding("refusal", refusal=text + " I give no figures for data I do not have.")


def ground(question: str, view: MarketView, today: date) -> Grounding:
    """The grounding of `question` as asked on `today` (see the module docstring)."""
    match = find_tickers(question, view.universe)
    if match.unknown or not (match.symbols or MARKET_WORDS.search(question)):
        return _refuse_tickers(view, match.unknown)
    if len(match.symbols) > MAX_TICKERS:
        return Grounding("refusal", refusal=f"Please ask about at most {MAX_TICKERS} tickers at a time.")
    try:
        day = find_day(question, today)
    except DateError as exc:
        return Grounding("refusal", refusal=f"I cannot answer for that date: {exc}. I give no figures.")
    if not match.symbols:
        return _ground_market(view, day)
    session = _session_for(view, match.symbols, day)
    if isinstance(session, Grounding):
        return session
    # _session_for returned a session only if every symbol has facts at it: none is dropped here
    facts = [f for f in (view.facts(s, session) for s in match.symbols) if f is not None]
    if len(facts) == 1:
        return Grounding("ticker", match.symbols, session, ticker_sheet(facts[0]))
    return Grounding("tickers", match.symbols, session, "\n\n".join(brief_sheet(f) for f in facts))


def grounded_prompt(question: str, grounding: Grounding) -> str:
    """The user message of a grounded question: the question, the sheet, and the question again.
    Asked first, the question is in view while the sheet is read (a causal model's sheet tokens
    attend to it); asked last, it is next to the answer."""
    return f"Question: {question}\n\n{grounding.sheet}\n\nQuestion: {question}"
