"""Which session a question is about, from the words people use for dates.

    find_day("What did TCS close at on 19 June?", today=date(2020, 6, 20))  # -> DayReference(date(2020, 6, 19))
    find_day("How is Infosys doing?", today=...)                            # -> None: the latest session

Understood, case-insensitive: ISO dates (2020-06-19), day/month/year (19/06/2020, Indian order),
"19 June 2020", "19th June", "June 19, 2020", "Jun 19" (without a year: the latest such date on or
before `today`), "today", "yesterday", "day before yesterday", "last Friday" (the latest Friday
before `today`), "on Friday" / "Friday" alone (the latest Friday on or before `today`), "on the
15th" (that day of today's month, else of the month before). "The latest session", "previous
close", "last 5 sessions" and "change vs yesterday" (a comparison) are not dates. `today` is the day the question is
asked (for `ask`, today in Asia/Kolkata unless given; for a sample, a day chosen with its question).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from tasks.samples.format import MONTHS, WEEKDAYS

_MONTH = {m.lower(): k for k, m in enumerate(MONTHS, start=1)} | {m[:3].lower(): k for k, m in enumerate(MONTHS, 1)}
_MONTH["sept"] = 9
_MONTH_WORD = r"(?P<month>" + "|".join(sorted(_MONTH, key=len, reverse=True)) + r")\.?"
_WEEKDAY = {w.lower(): k for k, w in enumerate(WEEKDAYS)}
_WEEKDAY_WORD = r"(?P<weekday>" + "|".join(_WEEKDAY) + r")"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{4})"

PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("iso", re.compile(r"\b" + _YEAR + r"-(?P<month>\d{1,2})-(?P<day>\d{1,2})\b")),
    ("dmy", re.compile(r"\b(?P<day>\d{1,2})/(?P<month>\d{1,2})/" + _YEAR + r"\b")),
    ("day month", re.compile(r"\b" + _DAY + r"\s+(?:of\s+)?" + _MONTH_WORD + r"(?:,?\s+" + _YEAR + r")?\b", re.I)),
    ("month day", re.compile(r"\b" + _MONTH_WORD + r"\s+" + _DAY + r"(?:,?\s+" + _YEAR + r")?\b", re.I)),
]
NTH = re.compile(r"\bthe\s+(?P<day>\d{1,2})(?:st|nd|rd|th)\b(?!\s+(?:of\s+)?[a-z])", re.I)
""""on the 15th": that day of today's month (of the month before when it is still to come)."""
BASELINE = re.compile(r"\b(?:vs\.?|versus|compared\s+(?:to|with))\s+(?:yesterday|the\s+previous\s+day)\b", re.I)
""""change vs yesterday" compares with the day before; it does not ask about it."""
RELATIVE: list[tuple[re.Pattern[str], int]] = [
    (re.compile(r"\b(?:the\s+)?day\s+before\s+yesterday\b", re.I), 2),
    (re.compile(r"\byesterday'?s?\b", re.I), 1),
    (re.compile(r"\btoday'?s?\b", re.I), 0),
]
LAST_WEEKDAY = re.compile(r"\b(?:last|previous|past)\s+" + _WEEKDAY_WORD + r"\b", re.I)
WEEKDAY = re.compile(r"\b(?:on\s+|this\s+)?" + _WEEKDAY_WORD + r"\b(?!,?\s+\d)", re.I)


class DateError(ValueError):
    """The question names a date that does not exist (31 June) or lies after `today`."""


@dataclass(frozen=True)
class DayReference:
    """A calendar day named by a question, and the words that named it."""

    day: date
    words: str


def _month(value: str) -> int:
    return int(value) if value.isdigit() else _MONTH[value.lower().rstrip(".")]


def _explicit(question: str, today: date) -> DayReference | None:
    for _, pattern in PATTERNS:
        m = pattern.search(question)
        if not m:
            continue
        month, day = _month(m["month"]), int(m["day"])
        year = int(m["year"]) if m["year"] else today.year
        try:
            found = date(year, month, day)
            if not m["year"] and found > today:
                found = date(year - 1, month, day)
        except ValueError:
            raise DateError(f"{m.group(0)!r} is not a date") from None
        return DayReference(found, m.group(0))
    return None


def _nth(question: str, today: date) -> DayReference | None:
    m = NTH.search(question)
    if not m:
        return None
    day = int(m["day"])
    year, month = (today.year, today.month) if day <= today.day else (
        (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12))
    try:
        return DayReference(date(year, month, day), m.group(0))
    except ValueError:
        raise DateError(f"{m.group(0)!r} is not a date in {MONTHS[month - 1]} {year}") from None


def _weekday_before(today: date, weekday: int, strictly: bool) -> date:
    back = (today.weekday() - weekday) % 7
    return today - timedelta(days=7 if strictly and back == 0 else back)


def find_day(question: str, today: date) -> DayReference | None:
    """The day `question` is about, or None when it names none (then: the latest session)."""
    question = BASELINE.sub(" ", question)
    found = _explicit(question, today) or _nth(question, today)
    if found is None:
        for pattern, days in RELATIVE:
            m = pattern.search(question)
            if m:
                found = DayReference(today - timedelta(days=days), m.group(0))
                break
    if found is None:
        m = LAST_WEEKDAY.search(question)
        if m:
            found = DayReference(_weekday_before(today, _WEEKDAY[m["weekday"].lower()], True), m.group(0))
    if found is None:
        m = WEEKDAY.search(question)
        if m:
            found = DayReference(_weekday_before(today, _WEEKDAY[m["weekday"].lower()], False), m.group(0))
    if found is not None and found.day > today:
        raise DateError(f"{found.words!r} ({found.day.isoformat()}) is after today ({today.isoformat()})")
    return found
