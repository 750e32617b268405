"""Question phrasings: enough per family, distinct, only the allowed slots, the required slots used."""
from __future__ import annotations

import re
import string

import pytest

from tasks.samples.phrasings import HELD_OUT_PER_FAMILY, PHRASINGS

FAMILIES = ("close", "change", "open", "prev_close", "day_range", "volume", "performance", "volatility",
            "trend", "range_52w", "high_52w", "low_52w", "compare", "market_summary", "session")
MIN_TEMPLATES = 25

ALL_SLOTS = {"name", "other", "on", "sessions", "n", "period"}
WINDOW_FAMILIES = {"performance", "compare"}
MARKET_WORDS = re.compile(r"\b(market|markets|indices|summary|wrap|movers|gainers|losers)\b", re.IGNORECASE)

DATE_PHRASES = ("", "today", "yesterday", "last Friday", "on 19 June", "on Friday, 19 June 2020",
                "on 2020-06-19", "as of 19 June 2020", "in the latest session")
DUMMY = {"name": "Reliance Industries", "other": "TCS", "on": "today", "sessions": "5 sessions", "n": "5",
         "period": "week"}


def allowed_slots(family: str) -> set[str]:
    """The fields a template of `family` may use."""
    slots = {"name", "on"}
    if family == "compare":
        slots.add("other")
    if family in WINDOW_FAMILIES:
        slots |= {"sessions", "n", "period"}
    if family == "market_summary":
        slots.discard("name")
    if family == "session":
        slots.discard("on")
    return slots


def required_slots(family: str) -> set[str]:
    """The fields every template of `family` must use ({sessions}/{n}/{period} checked separately)."""
    return allowed_slots(family) - {"sessions", "n", "period"}


def fields(template: str) -> list[str]:
    """The field names of a template, in order, literal text skipped."""
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def normalise(text: str) -> str:
    """What the sample builder does after formatting: collapse spaces, no space before punctuation."""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r" +([?.,!:;])", r"\1", text)


def test_every_family_present() -> None:
    assert set(PHRASINGS) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_enough_templates(family: str) -> None:
    assert len(PHRASINGS[family]) >= MIN_TEMPLATES
    assert len(PHRASINGS[family]) - HELD_OUT_PER_FAMILY >= MIN_TEMPLATES - HELD_OUT_PER_FAMILY


@pytest.mark.parametrize("family", FAMILIES)
def test_no_duplicates(family: str) -> None:
    seen: dict[str, str] = {}
    for template in PHRASINGS[family]:
        key = " ".join(template.lower().split())
        assert key not in seen, f"{family}: {template!r} duplicates {seen[key]!r}"
        seen[key] = template


@pytest.mark.parametrize("family", FAMILIES)
def test_only_allowed_slots_and_formats(family: str) -> None:
    allowed = allowed_slots(family)
    for template in PHRASINGS[family]:
        used = fields(template)
        assert all(f for f in used), f"{family}: positional or empty field in {template!r}"
        assert set(used) <= allowed, f"{family}: {set(used) - allowed} not allowed in {template!r}"
        text = template.format(**DUMMY)
        assert "{" not in text and "}" not in text, f"{family}: literal brace in {template!r}"


@pytest.mark.parametrize("family", FAMILIES)
def test_required_slots(family: str) -> None:
    required = required_slots(family)
    for template in PHRASINGS[family]:
        used = set(fields(template))
        assert required <= used, f"{family}: {template!r} lacks {required - used}"
        if family in WINDOW_FAMILIES:
            assert used & {"sessions", "n", "period"}, f"{family}: {template!r} names no window"
        if family == "session":
            assert "on" not in used


def test_market_summary_words_and_no_name() -> None:
    for template in PHRASINGS["market_summary"]:
        assert MARKET_WORDS.search(template), f"market_summary: no market word in {template!r}"
        assert "name" not in fields(template)


@pytest.mark.parametrize("family", FAMILIES)
def test_date_phrase_never_starts_a_sentence(family: str) -> None:
    for template in PHRASINGS[family]:
        if "on" not in fields(template):
            continue
        before = template.split("{on}")[0].rstrip()
        assert before and before[-1] not in ".?!;", f"{family}: {{on}} starts a sentence in {template!r}"


@pytest.mark.parametrize("family", FAMILIES)
def test_renders_cleanly_with_every_date_phrase(family: str) -> None:
    for template in PHRASINGS[family]:
        for on in DATE_PHRASES:
            text = normalise(template.format(**{**DUMMY, "on": on}))
            assert "  " not in text
            assert not re.search(r"[,:;][?.!]|,$|,,", text), f"{family}: {text!r} from {template!r}"


def test_held_out_differ_from_training() -> None:
    """A held-out phrasing is not a training one with a word or two changed."""
    for family, templates in PHRASINGS.items():
        train = [set(t.lower().split()) for t in templates[:-HELD_OUT_PER_FAMILY]]
        for held in templates[-HELD_OUT_PER_FAMILY:]:
            words = set(held.lower().split())
            for other in train:
                overlap = len(words & other) / len(words | other)
                assert overlap < 0.75, f"{family}: held-out {held!r} is close to a training phrasing"
