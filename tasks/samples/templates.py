"""Question templates per family (tasks/samples/phrasings.py: the last 5 of each are held out for
validation) and the date phrases and ticker names that fill them.

    question, today = fill(template, fact_slots, phrase, name_variants)

A date phrase comes with the day the question is asked (`today`), so "yesterday" or "last
Friday" name the fact's session: a phrase about session d is asked on d ("today", "on 19 June"),
on the next calendar day ("yesterday") or a week later ("last Friday"). Undated phrases ask about
the latest session, so only the newest facts use them; closed-book questions (no data sheet) use
only phrases that need no `today`.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import date, timedelta

from tasks.samples.format import MONTHS, WEEKDAYS, session_words
from tasks.samples.phrasings import HELD_OUT_PER_FAMILY, PHRASINGS


@dataclass(frozen=True)
class Template:
    """One phrasing of a family's question."""

    id: str
    text: str

    @property
    def slots(self) -> set[str]:
        """The `str.format` fields the template needs."""
        return {field for _, field, _, _ in string.Formatter().parse(self.text) if field}


def _templates(family: str) -> list[Template]:
    return [Template(f"{family}.{k}", text) for k, text in enumerate(PHRASINGS[family], start=1)]


TRAIN_TEMPLATES: dict[str, list[Template]] = {f: _templates(f)[:-HELD_OUT_PER_FAMILY] for f in PHRASINGS}
"""Phrasings that training samples use."""
VAL_TEMPLATES: dict[str, list[Template]] = {f: _templates(f)[-HELD_OUT_PER_FAMILY:] for f in PHRASINGS}
"""Held-out phrasings: only validation samples use them."""

LATEST_ONLY = ("none", "latest")
"""Phrase kinds that mean the latest session (no date)."""
CLOSED_BOOK = ("none", "latest", "words", "day_month", "iso", "as_of")
"""Phrase kinds a closed-book question may use (none needs to know when it is asked)."""
DATED = ("today", "yesterday", "last_weekday", "weekday", "words", "day_month", "month_day", "iso", "as_of", "dmy")
"""Phrase kinds that name a session."""


def date_phrase(kind: str, day: date) -> tuple[str, date]:
    """(phrase, the day it is asked on) that names session `day`."""
    month, weekday = MONTHS[day.month - 1], WEEKDAYS[day.weekday()]
    phrases = {
        "none": ("", day), "latest": ("in the latest session", day), "today": ("today", day),
        "yesterday": ("yesterday", day + timedelta(days=1)),
        "last_weekday": (f"last {weekday}", day + timedelta(days=7)), "weekday": (f"on {weekday}", day),
        "words": (f"on {session_words(day)}", day), "day_month": (f"on {day.day} {month}", day),
        "month_day": (f"on {month} {day.day}", day), "iso": (f"on {day.isoformat()}", day),
        "as_of": (f"as of {day.day} {month} {day.year}", day), "dmy": (f"on {day:%d/%m/%Y}", day),
    }
    return phrases[kind]


def fill(template: Template, slots: dict[str, str], on: str) -> str:
    """The question: the template with its slots, spaces collapsed, no space before punctuation."""
    text = template.text.format(**{"on": on, **slots})
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"\s+([?.,!:;)])", r"\1", text).strip()
