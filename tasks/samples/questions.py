"""The questions of a sample set: which facts are asked, in which phrasings, dates and names,
grounded or closed-book, and each rendered as one JSONL record (schema: tasks/samples/build.py).

    facts = collect_facts(view, sessions, cfg.samples)
    records = [render(view, asked, cfg.samples) for fact, newest in facts for asked in plan(fact, newest, sc)]
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from tasks.answering.facts import WINDOWS
from tasks.answering.ground import MarketView, ground, grounded_prompt
from tasks.answering.tickers import names_of
from tasks.config import SamplesConfig
from tasks.samples.families import (CLOSED_BOOK_FAMILIES, WINDOWS_PER_HISTORY_SESSION, Fact, market_fact_set,
                                   ticker_fact_set)
from tasks.samples.format import choose
from tasks.samples.templates import CLOSED_BOOK, DATED, LATEST_ONLY, TRAIN_TEMPLATES, VAL_TEMPLATES, Template, \
    date_phrase, fill

DISPLAY_NAME_WEIGHT = 3
"""How many times the display name is among a question's name choices (symbols, aliases and a
lower-case name are the others): most people write the name."""


class SampleBuildError(AssertionError):
    """A generated question does not resolve to its own fact: a template or the resolver is wrong."""


@dataclass(frozen=True)
class Asked:
    """One fact asked one way."""

    fact: Fact
    template: Template
    phrase: str
    mode: str
    split: str


def fact_id(fact: Fact) -> str:
    return f"{fact.family}/{'+'.join(fact.tickers)}/{fact.session.isoformat()}/{fact.key}"


def collect_facts(view: MarketView, sessions: list[date], sc: SamplesConfig) -> list[tuple[Fact, bool]]:
    """(fact, about the newest session) for every family as of every history session."""
    found: list[tuple[Fact, bool]] = []
    for day in sessions:
        newest = day == sessions[-1]
        for symbol in view.series:
            f = view.facts(symbol, day)
            if f is None:
                continue
            windows = WINDOWS if newest else sorted(
                choose(sc.seed, f"windows|{symbol}|{day}", WINDOWS, k=WINDOWS_PER_HISTORY_SESSION))
            found += [(fact, newest) for fact in ticker_fact_set(f, windows, latest=newest)]
        found += [(fact, newest) for fact in market_fact_set(view, day, sc.seed, sc.comparisons_per_session)]
    return found


def usable(templates: list[Template], fact: Fact) -> list[Template]:
    """The templates whose slots this fact fills (a `{period}` template needs a window people name)."""
    fits = [t for t in templates if t.slots <= fact.slots.keys() | {"name", "other", "on"}]
    if not fits:
        raise SampleBuildError(f"no template of {fact.family} fits the slots {sorted(fact.slots)}")
    return fits


def _phrase(fact: Fact, key: str, kinds: tuple[str, ...], seed: int) -> str:
    return "none" if fact.family == "session" else choose(seed, key, kinds)[0]


def plan(fact: Fact, newest: bool, sc: SamplesConfig) -> list[Asked]:
    """How one fact is asked (split, mode, phrasing, date phrase); see tasks/samples/build.py."""
    fid, seed, family = fact_id(fact), sc.seed, fact.family
    if not newest:
        t = choose(seed, f"{fid}|train", usable(TRAIN_TEMPLATES[family], fact))[0]
        return [Asked(fact, t, _phrase(fact, f"{fid}|{t.id}", DATED, seed), "grounded", "train")]
    anytime = LATEST_ONLY + DATED
    asked = [Asked(fact, t, _phrase(fact, f"{fid}|{t.id}", anytime, seed), "grounded", "train")
             for t in choose(seed, f"{fid}|train", usable(TRAIN_TEMPLATES[family], fact), k=sc.train_phrasings_per_fact)]
    v = choose(seed, f"{fid}|val", usable(VAL_TEMPLATES[family], fact))[0]
    asked.append(Asked(fact, v, _phrase(fact, f"{fid}|{v.id}", anytime, seed), "grounded", "val"))
    if family in CLOSED_BOOK_FAMILIES:
        asked += [Asked(fact, t, _phrase(fact, f"{fid}|{t.id}|closed", CLOSED_BOOK, seed), "closed_book", "train")
                  for t in choose(seed, f"{fid}|closed", usable(TRAIN_TEMPLATES[family], fact),
                                  k=sc.closed_book_repeats)]
        v = choose(seed, f"{fid}|val-closed", usable(VAL_TEMPLATES[family], fact))[0]
        asked.append(Asked(fact, v, _phrase(fact, f"{fid}|{v.id}|closed", CLOSED_BOOK, seed), "closed_book", "val"))
    return asked


def name_variant(view: MarketView, symbol: str, seed: int, key: str) -> str:
    """How a question names `symbol`: mostly its display name, else a symbol, alias or lower case."""
    spec = view.series[symbol].spec
    options = [spec.name] * DISPLAY_NAME_WEIGHT + names_of(spec)[1:] + [spec.name.lower()]
    return choose(seed, key, options)[0]


def _question(view: MarketView, asked: Asked, seed: int) -> tuple[str, date]:
    fact, key = asked.fact, f"{fact_id(asked.fact)}|{asked.template.id}|{asked.mode}"
    slots = dict(fact.slots)
    for slot, symbol in zip(("name", "other"), fact.tickers if fact.family != "market_summary" else ()):
        slots[slot] = name_variant(view, symbol, seed, f"{key}|{slot}")
    on, today = date_phrase(asked.phrase, fact.session)
    return fill(asked.template, slots, on), today


def _check(question: str, fact: Fact, grounding: Any) -> None:
    if fact.family == "market_summary":
        ok = grounding.kind == "market"
    else:
        ok = grounding.kind in ("ticker", "tickers") and set(grounding.symbols) == set(fact.tickers)
    if not ok or grounding.session != fact.session:
        raise SampleBuildError(f"question {question!r} resolves to {grounding.kind} {grounding.symbols} "
                               f"{grounding.session} ({grounding.refusal}), but asks about {fact.tickers} "
                               f"{fact.session}")


def render(view: MarketView, asked: Asked, sc: SamplesConfig) -> dict[str, Any]:
    """One JSONL record (grounded: the data sheet `ask` would give, then the question)."""
    fact = asked.fact
    question, today = _question(view, asked, sc.seed)
    if asked.mode == "grounded":
        grounding = ground(question, view, today)
        _check(question, fact, grounding)
        system, user = sc.system_prompt, grounded_prompt(question, grounding)
    else:
        system, user = sc.closed_book_system_prompt, question
    fid = fact_id(fact)
    return {"id": f"{fid}/{asked.mode}/{asked.template.id}/{asked.phrase}", "fact": fid, "family": fact.family,
            "template": asked.template.id, "phrase": asked.phrase, "mode": asked.mode,
            "tickers": list(fact.tickers), "session": fact.session.isoformat(), "today": today.isoformat(),
            "split": asked.split,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                         {"role": "assistant", "content": fact.answer}],
            "truth": fact.truth}
