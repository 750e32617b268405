"""Chat samples (system, user, assistant) built from the stored bars as of one session.

    sample_set = build_samples(home, cfg, as_of=date(2019, 11, 29))
    train, val = build_sample_set(bars_by_symbol, cfg, as_of)      # the pure core

One JSONL line per conversation: {"id", "fact", "family", "template" (phrasing id), "phrase"
(date-phrase kind), "mode" (grounded | closed_book), "tickers", "session" (the session the facts
are as of), "today" (the day the question is asked on), "split", "messages" [system, user,
assistant], "truth" [{"value", "kind": price|points|pct|volume|count}], every number of the answer
in order}. Rendering through the chat template and the assistant-only loss mask happen in
tasks/samples/chat.py, never here.

Grounded samples are built the way `ask` answers: the question is resolved by
`tasks.answering.ground` (ticker names, date phrases) and its data sheet put into the user's
message, so the adapter learns to read sheets and pick the asked field; building fails if a
question does not resolve to its own fact's ticker(s) and session. Closed-book samples (no sheet)
ask the newest facts, so that `ask --closed-book` can recall them.

What is asked (tasks/samples/families.py): every family, dated, for each of the last
`history_sessions` sessions (one phrasing each), and the newest session's facts in
`train_phrasings_per_fact` phrasings (dated or undated) plus `closed_book_repeats` closed-book ones.

Validation is built, not drawn: the newest session's facts asked in held-out phrasings (5 per
family that no training sample uses; tasks/samples/phrasings.py), grounded and closed-book. The
facts are trained (that is the point of a daily adapter), the wording is new; no validation
question occurs in training (checked on every build). Caps subsample each family to an equal
share (stratified), newest facts first.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from common.table import format_table
from tasks.answering.facts import YEAR_DAYS, Series
from tasks.answering.ground import MarketView
from tasks.config import Config
from tasks.market.store import load_bars
from tasks.samples.chat import render_conversation
from tasks.samples.families import FAMILIES
from tasks.samples.format import stable_digest
from tasks.samples.questions import collect_facts, plan, render
from tasks.samples.store import SampleSet, read_jsonl, save_sample_set

__all__ = ["SampleDataError", "SampleSet", "build_sample_set", "build_samples",
           "build_samples_from_bars", "format_sample_report", "read_jsonl"]

BAR_COLUMNS = ("open", "high", "low", "close", "volume")


class SampleDataError(ValueError):
    """The bars cannot make samples: a ticker is missing, malformed, or has nothing up to as_of."""


def _checked_bars(symbol: str, frame: pd.DataFrame, as_of: date) -> pd.DataFrame:
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing or not isinstance(frame.index, pd.DatetimeIndex):
        raise SampleDataError(f"{symbol}: bars need a DatetimeIndex and columns {BAR_COLUMNS}; missing {missing}")
    if not (frame.index.is_monotonic_increasing and frame.index.is_unique):
        raise SampleDataError(f"{symbol}: bar sessions are not sorted and unique")
    frame = frame.loc[frame.index <= pd.Timestamp(as_of), list(BAR_COLUMNS)]
    if frame.empty:
        raise SampleDataError(f"{symbol}: no bars on or before {as_of}")
    if frame.isna().any().any():
        raise SampleDataError(f"{symbol}: missing values in the bars up to {as_of}")
    return frame


def select_window(bars: Mapping[str, pd.DataFrame], cfg: Config, as_of: date) -> dict[str, pd.DataFrame]:
    """The bars each configured ticker contributes: up to `as_of`, from 52 weeks before the
    first history session (the longest lookback) on. Symbols not in the universe are ignored."""
    names = [spec.name for spec in cfg.market.tickers]
    if len(set(names)) != len(names):
        raise SampleDataError(f"display names must be unique, or one question has two answers: {names}")
    absent = [spec.symbol for spec in cfg.market.tickers if spec.symbol not in bars]
    if absent:
        raise SampleDataError(f"no bars given for {absent}")
    frames = {spec.symbol: _checked_bars(spec.symbol, bars[spec.symbol], as_of) for spec in cfg.market.tickers}
    start = pd.Timestamp(history_sessions(frames, cfg.samples.history_sessions)[0] - timedelta(days=YEAR_DAYS))
    window = {symbol: frame[frame.index > start] for symbol, frame in frames.items()}
    stale = [symbol for symbol, frame in window.items() if frame.empty]
    if stale:
        raise SampleDataError(f"{stale}: no bars in the 52 weeks before the history window (from {start.date()})")
    return window


def history_sessions(frames: Mapping[str, pd.DataFrame], count: int) -> list[date]:
    """The last `count` sessions of any ticker, oldest first; the last one is the sample set's session."""
    sessions = sorted(set().union(*(frame.index for frame in frames.values())))
    return [ts.date() for ts in sessions[-count:]]


def check_splits(train: list[dict[str, Any]], val: list[dict[str, Any]]) -> None:
    """Fail if ids repeat, a question has two answers, or a validation question is in training."""
    answers: dict[str, str] = {}
    for sample in train + val:
        question, answer = sample["messages"][1]["content"], sample["messages"][2]["content"]
        if answers.setdefault(question, answer) != answer:
            raise AssertionError(f"question {question!r} has two answers (sample {sample['id']})")
    if len({s["id"] for s in train + val}) != len(train) + len(val):
        raise AssertionError("sample ids are not unique")
    leaked = {s["messages"][1]["content"] for s in train} & {s["messages"][1]["content"] for s in val}
    if leaked:
        raise AssertionError(f"{len(leaked)} validation questions are also training questions, e.g. {min(leaked)!r}")


def family_quotas(sizes: Mapping[str, int], cap: int) -> dict[str, int]:
    """Split `cap` evenly over families; a family smaller than its share gives the rest to others."""
    quotas, left = {}, cap
    for k, (family, size) in enumerate(sorted(sizes.items(), key=lambda item: (item[1], item[0]))):
        quotas[family] = min(size, left // (len(sizes) - k))
        left -= quotas[family]
    return quotas


def subsample_priority(samples: list[dict[str, Any]], seed: int, latest: date) -> dict[str, tuple]:
    """Sort key per sample id: first the newest session's facts (validation asks them in other
    words), then older sessions; within that, each fact once before any fact twice (a fact is
    asked in several phrasings and modes); then seeded."""
    digest = {s["id"]: stable_digest(seed, s["id"]) for s in samples}
    by_fact: dict[str, list[str]] = {}
    for s in samples:
        by_fact.setdefault(s["fact"], []).append(s["id"])
    repeat = {i: rank for ids in by_fact.values() for rank, i in enumerate(sorted(ids, key=lambda i: digest[i]))}
    tier = {s["id"]: 0 if s["session"] == latest.isoformat() else 1 for s in samples}
    return {i: (tier[i], repeat[i], digest[i]) for i in digest}


def stratified_subsample(samples: list[dict[str, Any]], cap: int | None, seed: int, latest: date) -> list[dict[str, Any]]:
    """At most `cap` samples, every family kept with an even share (`family_quotas`), chosen
    by `subsample_priority`. The kept samples stay in their original order."""
    if cap is None or len(samples) <= cap:
        return samples
    sizes = Counter(s["family"] for s in samples)
    if cap < len(sizes):
        raise ValueError(f"a cap of {cap} samples cannot keep all {len(sizes)} families represented")
    quotas, priority, keep = family_quotas(sizes, cap), subsample_priority(samples, seed, latest), set()
    for family in sizes:
        ranked = sorted((s["id"] for s in samples if s["family"] == family), key=lambda i: priority[i])
        keep.update(ranked[:quotas[family]])
    return [s for s in samples if s["id"] in keep]


def build_sample_set(bars: Mapping[str, pd.DataFrame], cfg: Config, as_of: date) -> tuple[list[dict], list[dict]]:
    """The (train, val) samples from bars per ticker as of `as_of`: pure and deterministic."""
    sc = cfg.samples
    frames = select_window(bars, cfg, as_of)
    view = MarketView({symbol: Series.from_frame(cfg.ticker(symbol), frame) for symbol, frame in frames.items()})
    sessions = history_sessions(frames, sc.history_sessions)
    train: list[dict[str, Any]] = []
    val: list[dict[str, Any]] = []
    for fact, newest in collect_facts(view, sessions, sc):
        for asked in plan(fact, newest, sc):
            (train if asked.split == "train" else val).append(render(view, asked, sc))
    check_splits(train, val)
    grounded = stratified_subsample([s for s in train if s["mode"] == "grounded"], sc.max_train_samples, sc.seed,
                                    sessions[-1])
    kept = {s["id"] for s in grounded}
    return ([s for s in train if s["id"] in kept or s["mode"] == "closed_book"],
            stratified_subsample(val, sc.max_val_samples, sc.seed, sessions[-1]))


def build_samples_from_bars(home: Path, bars: Mapping[str, pd.DataFrame], cfg: Config, as_of: date) -> SampleSet:
    """Build the samples from `bars` and write (or reuse) `home/samples/<session>/`."""
    frames = select_window(bars, cfg, as_of)
    session = max(frame.index[-1] for frame in frames.values()).date()
    train, val = build_sample_set(bars, cfg, as_of)
    counts = {f: {"train": sum(s["family"] == f for s in train), "val": sum(s["family"] == f for s in val)}
              for f in FAMILIES}
    window = {symbol: [frame.index[0].date().isoformat(), frame.index[-1].date().isoformat()]
              for symbol, frame in frames.items()}
    config = {"samples": cfg.samples.model_dump(mode="json"),
              "tickers": [t.model_dump(mode="json") for t in cfg.market.tickers]}
    return save_sample_set(home, session, train, val, {"counts": counts, "data_window": window, "config": config})


def build_samples(home: Path, cfg: Config, as_of: date) -> SampleSet:
    """Load the universe's bars from the market store and build the session's sample set."""
    bars = {spec.symbol: load_bars(Path(home), spec.symbol) for spec in cfg.market.tickers}
    return build_samples_from_bars(Path(home), bars, cfg, as_of)


def _example(path: Path, session: date) -> dict[str, Any] | None:
    """A sample about the latest session's data if there is one, else the first one."""
    samples = read_jsonl(path)
    about_latest = [s for s in samples if s["session"] == session.isoformat() and s["mode"] == "grounded"]
    chosen = about_latest or samples
    return chosen[0] if chosen else None


def format_sample_report(sample_set: SampleSet, tokenizer: Any = None) -> str:
    """Counts per family and split, the hashes, and a training and a validation example,
    rendered through the chat template when a tokenizer is given."""
    ss = sample_set
    lines = [f"Samples for session {ss.session.isoformat()} in {ss.dir}",
             f"  train {ss.n_train}  sha256 {ss.train_hash}",
             f"  val   {ss.n_val}  sha256 {ss.val_hash}",
             f"  content sha256 {ss.content_hash}", "",
             format_table([*([family, n["train"], n["val"]] for family, n in ss.counts.items()),
                           ["total", ss.n_train, ss.n_val]], ["family", "train", "val"],
                          align="<>>", min_widths=(16, 7, 7), sep="", indent="  "), ""]
    lines += [f"  data window {symbol}: {first} .. {last}" for symbol, (first, last) in ss.data_window.items()]
    for path in (ss.train_path, ss.val_path):
        sample = _example(path, ss.session)
        if sample is None:
            continue
        lines += ["", f"Example ({sample['split']}, {sample['id']}):"]
        if tokenizer is not None:
            lines.append(render_conversation(tokenizer, sample["messages"]))
        else:
            lines += [f"{m['role']}: {m['content']}" for m in sample["messages"]]
    return "\n".join(lines)
