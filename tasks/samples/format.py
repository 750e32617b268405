"""How numbers and dates read in samples: one format per kind of number, each recorded as truth.

    fig = Figures()
    text = f"TCS closed at {fig.level(2053.25, 'stock')} ({fig.change(-1.16)} on the day)"
    fig.truth  # [{"value": 2053.25, "kind": "price"}, {"value": -1.16, "kind": "pct"}]

- prices (stocks, funds): rupee sign, Western digit grouping, two decimals: ₹1,234.56
- index levels are points, never rupees: 24,310.55 points
- changes are signed percentages with two decimals: +1.25%, -0.40% (a change that rounds to
  zero reads 0.00%); magnitudes that are not changes (volatility, a gap between two returns in
  percentage points) are unsigned: 1.23%
- volumes are whole numbers with grouping: 3,456,789; session counts are plain integers
- dates are words, "Friday, 29 November 2019": they are not figures and never enter `truth`

Western grouping (not lakh/crore) because that is how Yahoo Finance and the exchanges' English
data feeds print prices, so it is what a base model has mostly seen. Every figure goes through
`Figures`, so an answer's `truth` lists its numbers in the order they appear: f-string fields
are evaluated left to right.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from datetime import date
from typing import TypeVar

from tasks.config import AssetKind

T = TypeVar("T")

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")


def session_words(day: date) -> str:
    """A session date in words, independent of the locale: `Friday, 29 November 2019`."""
    return f"{WEEKDAYS[day.weekday()]}, {day.day} {MONTHS[day.month - 1]} {day.year}"


SESSION_WORDS = re.compile(r"\b(?:%s), \d{1,2} (?:%s) \d{4}\b" % ("|".join(WEEKDAYS), "|".join(MONTHS)))
"""A date in words, as `session_words` writes it."""
FIGURE = re.compile(r"[+-]?\d[\d,]*(?:\.\d+)?")
"""A number as answers write it (sign, grouping, decimals); ₹, % and units around it."""


def figures_in(text: str, names: Iterable[str] = ()) -> list[float]:
    """The numbers of an answer in order, as `truth` lists them: dates in words and the given
    display names (`NIFTY 50`) are not figures and are skipped. For comparing a model's answer
    with `truth`."""
    for name in sorted(names, key=len, reverse=True):
        text = text.replace(name, " ")
    text = SESSION_WORDS.sub(" ", text)
    return [float(m.group().replace(",", "")) for m in FIGURE.finditer(text)]


def format_level(value: float, asset: AssetKind) -> str:
    """A price in rupees for stocks and funds, a level in points for indices."""
    return f"{value:,.2f} points" if asset == "index" else f"₹{value:,.2f}"


def format_change(pct: float) -> str:
    """A signed percentage change with two decimals: +1.25%, -0.40%, 0.00%."""
    text = f"{pct:+.2f}%"
    return "0.00%" if text in ("+0.00%", "-0.00%") else text


class Figures:
    """The numbers of one answer: each method formats one and appends it to `truth`."""

    def __init__(self) -> None:
        self.truth: list[dict[str, float | str]] = []

    def _record(self, value: float, kind: str) -> None:
        self.truth.append({"value": float(value), "kind": kind})

    def level(self, value: float, asset: AssetKind) -> str:
        """A close, high, low or average: points for an index, rupees otherwise."""
        self._record(value, "points" if asset == "index" else "price")
        return format_level(value, asset)

    def change(self, pct: float) -> str:
        """A signed percentage change (`pct` in percent units)."""
        self._record(pct, "pct")
        return format_change(pct)

    def magnitude(self, pct: float) -> str:
        """An unsigned percentage such as a volatility."""
        self._record(pct, "pct")
        return f"{pct:.2f}%"

    def percentage_points(self, gap: float) -> str:
        """An unsigned gap between two percentages."""
        self._record(gap, "pct")
        return f"{gap:.2f} percentage points"

    def volume(self, value: float) -> str:
        """A traded volume, whole, with grouping."""
        self._record(value, "volume")
        return f"{round(value):,}"

    def count(self, n: int) -> str:
        """A plain integer such as the length of a window."""
        self._record(n, "count")
        return str(n)

    def sessions(self, n: int) -> str:
        """`5 sessions`, `1 session`."""
        return f"{self.count(n)} session" + ("" if n == 1 else "s")


def choose(seed: int, key: str, options: Sequence[T], k: int = 1) -> list[T]:
    """`k` of `options` picked by a hash of (seed, key): the same inputs always pick the same,
    whatever else is generated (unlike a shared RNG, whose draws depend on call order)."""
    ranked = sorted(range(len(options)), key=lambda i: stable_digest(seed, f"{key}|{i}"))
    return [options[i] for i in ranked[:k]]


def stable_digest(seed: int, key: str) -> str:
    """A hex digest of (seed, key), stable across processes and Python versions."""
    return hashlib.sha256(f"{seed}|{key}".encode()).hexdigest()
