"""Data sheets: the facts of the asked ticker(s) and session as compact text for the prompt.

    ticker_sheet(facts)              # one ticker: every figure the question families answer from
    brief_sheet(facts)               # one of two compared tickers: close, day change, returns
    market_sheet(all_facts, session) # no ticker named: indices, top gainers and losers

Figures are written exactly as answers write them (tasks.samples.format), so a right answer copies
them. Samples and `ask` put the same sheets into the prompt (tasks.answering.ground).
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from tasks.answering.facts import SMA_WINDOWS, VOLATILITY_SESSIONS, VOLUME_SESSIONS, TickerFacts
from tasks.samples.format import format_change, format_level, session_words

MARKET_MOVERS = 3
"""Gainers and losers listed in a market sheet (answers name the first two of each)."""
SPANS = {5: " (a week)", 10: " (two weeks)", 20: " (a month)"}
"""What people call a window of trading sessions."""
UNITS = {"index": "index, points", "stock": "stock, rupees", "fund": "fund, rupees"}


def _level(f: TickerFacts, value: float) -> str:
    return format_level(value, f.spec.kind)


def _header(f: TickerFacts) -> str:
    return (f"Data sheet: {f.spec.name} ({f.spec.symbol}, {UNITS[f.spec.kind]}), "
            f"session {session_words(f.session)}")


def _returns_lines(f: TickerFacts) -> list[str]:
    """One line per window: a small model picks the asked window more reliably from its own line."""
    return [f"return over {n} session{'s' * (n != 1)}{SPANS.get(n, '')}: {format_change(r)}"
            for n, r in f.returns.items()]


def _day_lines(f: TickerFacts) -> list[str]:
    lines = [f"open {_level(f, f.open)} | high {_level(f, f.high)} | low {_level(f, f.low)} | "
             f"close {_level(f, f.close)}"]
    if f.prev_close is not None and f.change is not None:
        lines.append(f"previous close {_level(f, f.prev_close)} | day change {format_change(f.change)}")
    if f.volume is None:
        lines.append("volume: not reported")
    elif f.avg_volume is None or f.volume_vs_avg is None:
        lines.append(f"volume {round(f.volume):,}")
    else:
        lines.append(f"volume {round(f.volume):,} | {VOLUME_SESSIONS}-session average volume "
                     f"{round(f.avg_volume):,} | volume vs average {format_change(f.volume_vs_avg)}")
    return lines


def _average_lines(f: TickerFacts) -> list[str]:
    lines = []
    if f.sma:
        parts = [f"{n}-session average {_level(f, f.sma[n])} (close {format_change(f.close_vs_sma(n))})"
                 for n in SMA_WINDOWS if n in f.sma]
        lines.append(" | ".join(parts + ([f"trend: {f.trend}"] if f.trend else [])))
    if f.volatility_daily is not None:
        lines.append(f"volatility over {VOLATILITY_SESSIONS} sessions: daily {f.volatility_daily:.2f}% | "
                     f"annualised {f.volatility_annual:.2f}% | risk: {f.risk}")
    return lines


def _year_lines(f: TickerFacts) -> list[str]:
    y = f.year
    lines = [] if y.full else [f"52 weeks: only {y.sessions} sessions of data, since {session_words(y.since)}"]
    return lines + [
        f"52-week high {_level(f, y.high)} on {session_words(y.high_on)} | "
        f"52-week low {_level(f, y.low)} on {session_words(y.low_on)}",
        f"close vs 52-week high {format_change(f.close_vs_year_high)} | "
        f"close vs 52-week low {format_change(f.close_vs_year_low)}"]


def ticker_sheet(f: TickerFacts) -> str:
    """The full sheet of one ticker at one session."""
    lines = [_header(f), *_day_lines(f), *_returns_lines(f), *_average_lines(f), *_year_lines(f)]
    return "\n".join(lines)


def brief_sheet(f: TickerFacts) -> str:
    """The sheet of one of several tickers asked about together: close, day change, returns."""
    day = f"close {_level(f, f.close)}"
    if f.prev_close and f.change is not None:
        day += f" | day change {format_change(f.change)}"
    return "\n".join([_header(f), day, *_returns_lines(f)])


def _mover(f: TickerFacts) -> str:
    return f"{f.spec.name} {_level(f, f.close)} ({format_change(mover_change(f))})"


def mover_change(f: TickerFacts) -> float:
    """The day's change of a ticker `market_movers` returned (it keeps only those that have one)."""
    if f.change is None:
        raise ValueError(f"{f.spec.symbol} has no previous close before {f.session}, so no day's change")
    return f.change


def market_movers(facts: Sequence[TickerFacts]) -> tuple[list[TickerFacts], list[TickerFacts], list[TickerFacts]]:
    """(indices, gainers, losers) of a session; when few stocks and funds, all of them are
    `gainers` (by change, best first) and `losers` is empty."""
    moved = [f for f in facts if f.prev_close is not None]
    indices = [f for f in moved if f.spec.kind == "index"]
    others = sorted((f for f in moved if f.spec.kind != "index"), key=lambda f: (-mover_change(f), f.spec.symbol))
    if len(others) <= 2 * MARKET_MOVERS:
        return indices, others, []
    return indices, others[:MARKET_MOVERS], others[:-MARKET_MOVERS - 1:-1]


def market_sheet(facts: Sequence[TickerFacts], session: date) -> str:
    """Indices, then the top gainers and losers (worst first) of one session."""
    indices, gainers, losers = market_movers([f for f in facts if f.session == session])
    lines = [f"Market data sheet, session {session_words(session)}"]
    if indices:
        lines.append("indices: " + " | ".join(_mover(f) for f in indices))
    if losers:
        lines += ["top gainers: " + " | ".join(_mover(f) for f in gainers),
                  "top losers: " + " | ".join(_mover(f) for f in losers)]
    elif gainers:
        lines.append("stocks and funds by day change: " + " | ".join(_mover(f) for f in gainers))
    return "\n".join(lines)
