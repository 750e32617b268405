"""Answer a question with the promoted adapter (or a named version): grounded in the market store
by default, closed-book on request.

    answer = ask(home, "What did RIL close at yesterday?")
    answer.text, answer.version, answer.session, answer.grounding.sheet
    ask(home, "What did RIL close at?", closed_book=True)       # from what the adapter learned

Grounded: the question's ticker(s) and session are resolved (tasks.answering.ground), their data
sheet goes into the prompt as in training, and the answer is generated from it. A question about a
ticker or a session the store does not hold is answered with that statement and no figure: the
model is not called. `today` (default: today in Asia/Kolkata) is the day the question is asked,
for "yesterday" or "last Friday".
"""
from __future__ import annotations

import contextlib

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, overload

from tasks.answering.ground import Grounding, MarketView, ground, grounded_prompt
from tasks.market.calendar import today_in_kolkata
from tasks.config import Config, recorded_config

DEFAULT_MAX_NEW_TOKENS = 320
"""Enough for the longest answer (a market summary, ~220 tokens)."""


@dataclass(frozen=True)
class Answer:
    """An answer, who gave it and what it is based on."""

    text: str
    version: str
    """The registry version that answered (or would have, for a refusal); `base` for the base model."""
    grounding: Grounding | None
    """None for a closed-book answer."""

    @property
    def session(self) -> date | None:
        return self.grounding.session if self.grounding else None

    @property
    def refused(self) -> bool:
        return self.grounding is not None and self.grounding.refusal is not None


def market_view(home: Path, cfg: Config) -> MarketView:
    """The store's bars of the adapter's universe (tickers the store does not hold are left out)."""
    from tasks.market.store import bars_path, load_bars

    bars = {spec.symbol: load_bars(home, spec.symbol) for spec in cfg.market.tickers
            if bars_path(home, spec.symbol).is_file()}
    return MarketView.from_bars(bars, cfg.market.tickers)


@overload
def prompt_for(question: str, cfg: Config, view: MarketView, today: date) -> tuple[list[dict], Grounding]: ...
@overload
def prompt_for(question: str, cfg: Config, view: MarketView | None, today: date) -> tuple[list[dict], Grounding | None]: ...
def prompt_for(question: str, cfg: Config, view: MarketView | None, today: date) -> tuple[list[dict], Grounding | None]:
    """The conversation to generate from, and the grounding (None when closed-book)."""
    if view is None:
        return [{"role": "system", "content": cfg.samples.closed_book_system_prompt},
                {"role": "user", "content": question}], None
    grounding = ground(question, view, today)
    if grounding.refusal:
        return [], grounding
    return [{"role": "system", "content": cfg.samples.system_prompt},
            {"role": "user", "content": grounded_prompt(question, grounding)}], grounding


BASE = "base"
"""The `version` of an answer given by the base model (no champion: none promoted yet, or the
registry was rolled back to the base)."""


def config_for(home: Path, info: Any) -> Config:
    """The config a version answers with (its recorded one: universe and prompts); with no
    version (the base model answers), the newest registered version's, else the default profile's."""
    from adapters_registry import Registry
    from tasks.config import load_config

    if info is not None:
        return recorded_config(info.manifest.lineage.config)
    versions = Registry(home).list()
    if not versions:
        return load_config()
    lineage = versions[-1].manifest.lineage
    cfg = recorded_config(lineage.config)
    training = cfg.training.model_copy(update={"base_model": lineage.base_model.identity,
                                               "base_revision": lineage.base_model.revision})
    return cfg.model_copy(update={"training": training})


def _check_verified(home: Path, version: str) -> None:
    """RegistryIntegrityError when `version` fails what `registry verify` checks of it."""
    from adapters_registry import Registry, RegistryIntegrityError

    problems = Registry(home).verify_version(version)
    if problems:
        raise RegistryIntegrityError(f"refusing to answer with {version}: " + "; ".join(problems))


def load_base_model(home: Path, cfg: Config) -> tuple[Any, Any]:
    """The base model and tokenizer `cfg` names, ready to answer (no adapter)."""
    from tasks.training.base_model import load_base, resolve_base_model

    return load_base(resolve_base_model(cfg.training, home), cfg.training, for_training=False)


def ask(home: str | Path, question: str, version: str | None = None, *, closed_book: bool = False,
        today: date | None = None, max_new_tokens: int | None = None, loaded: Any = None) -> Answer:
    """A greedy answer from the champion (or `version`; the base model when nothing is promoted);
    see the module docstring. `loaded`: a (model, tokenizer, VersionInfo) from
    `load_promoted`, to answer many questions with one load."""
    from adapters_registry import Registry
    from tasks.answering.loading import load_promoted

    home = Path(home)
    info = loaded[2] if loaded else (Registry(home).get(version) if version else Registry(home).champion())
    cfg = config_for(home, info)
    view = None if closed_book else market_view(home, cfg)
    messages, grounding = prompt_for(question, cfg, view, today or today_in_kolkata())
    name = info.version if info else BASE
    if grounding is not None and grounding.refusal:
        if info is not None and not loaded:  # no model is loaded (which verifies): still never speak for a bad version
            _check_verified(home, info.version)
        return Answer(grounding.refusal, name, grounding)
    if info is None:
        model, tokenizer = load_base_model(home, cfg)
    else:
        model, tokenizer, info = loaded or load_promoted(home, info.version)
    from tasks.evaluation.generation import generate_answers, merged_adapter

    # A one-off answer folds the adapter into the weights, as scoring's probes do (one matmul a
    # layer instead of three); a model kept `loaded` for many questions is left as it is.
    with contextlib.nullcontext() if loaded else merged_adapter(model):
        text = generate_answers(model, tokenizer, [messages], max_new_tokens or DEFAULT_MAX_NEW_TOKENS)[0]
    return Answer(text, name, grounding)
