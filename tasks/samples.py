"""Chat samples (system, user, assistant) built from the stored bars as of one session.

    sample_set = build_samples(home, cfg, as_of=date(2019, 11, 29))
    train, val = build_sample_set(bars_by_symbol, cfg, as_of)      # the pure core

One JSONL line per conversation: {"id", "family", "template" (paraphrase id), "tickers",
"session" (the session the facts are as of), "split", "messages" [system, user, assistant],
"truth" [{"value", "kind": price|points|pct|volume|count}], every number of the answer in
order (dates are words, not numbers)}. Rendering through the base model's chat template and
the assistant-only loss mask happen in tasks/chat.py, never here.

What is asked (tasks/sample_families.py): every family, dated ("as of Friday, 29 November
2019"), for each of the last `history_sessions` sessions, so the same question never has two
answers; plus, about the newest data, the undated questions people ask ("the latest close").

Split design. A random split of these samples would leak three ways: (1) the same fact is
asked many ways, so a random validation sample's answer string is usually in training too
(the loss then measures recall of a string seen, not knowledge); (2) paraphrases of one
question differ by a word or two, so near-duplicates straddle the split; (3) questions about
later sessions would train the model on information from after the validation questions'
sessions. So validation is built, not drawn:
- held-out paraphrases: the latest session's undated questions, asked with templates that no
  training sample uses (2 of the 5 per family; sample_templates.py); the facts are trained
  (that is the point of a daily adapter), the wording is new;
- a time-ordered slice: questions of the prompt-answerable families (the prompt lists the
  closes; the answer is their change or mean) for the most recent `val_recent_sessions`
  sessions, never in training, where training only has those families for older sessions.
Every validation question is new text: no validation prompt occurs in training, so no
validation answer is a training answer to the same question (checked on every build).
Caps subsample each family to an equal share (stratified), latest-session samples first.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.chat import render_conversation
from tasks.config import Config, SamplesConfig
from tasks.market_data import load_bars
from tasks.sample_families import PROMPT_CLOSES, YEAR_DAYS, Fact, Moment, Series, market_facts, prompt_facts, ticker_facts
from tasks.sample_format import choose, stable_digest
from tasks.sample_store import SampleSet, read_jsonl, save_sample_set
from tasks.sample_templates import FAMILIES, PROMPT_FAMILIES, TRAIN_TEMPLATES, VAL_TEMPLATES, Template

__all__ = ["SampleDataError", "SampleSet", "build_sample_files", "build_sample_set", "build_samples",
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


def collect_facts(series: list[Series], sessions: list[date], sc: SamplesConfig) -> list[Fact]:
    """Every fact: each family as of each history session, then the undated latest questions."""
    facts: list[Fact] = []
    for day in sessions:
        moment = Moment(day, latest=False)
        for s in series:
            i = s.position.get(day)
            if i is not None:
                facts += ticker_facts(s, i, moment, sc.seed)
                facts += prompt_facts(s, i, choose(sc.seed, f"closes|{s.spec.symbol}|{day}", PROMPT_CLOSES)[0])
        facts += market_facts(series, day, moment, sc.seed, sc.comparisons_per_session)
    for s in series:
        facts += ticker_facts(s, len(s.dates) - 1, Moment(s.dates[-1], latest=True), sc.seed)
    return facts + market_facts(series, sessions[-1], Moment(sessions[-1], latest=True), sc.seed,
                                sc.comparisons_per_session)


def assign_templates(fact: Fact, recent: set[date], seed: int) -> list[tuple[str, Template]]:
    """(split, template) of each sample made from a fact; see the module docstring."""
    family, key = fact.family, f"{fact.family}|{'+'.join(fact.tickers)}|{fact.session}|{fact.key}"
    if family in PROMPT_FAMILIES:
        split = "val" if fact.session in recent else "train"
        pool = VAL_TEMPLATES if split == "val" else TRAIN_TEMPLATES
        return [(split, choose(seed, key, pool[family])[0])]
    if fact.latest:  # the newest facts: trained in every training paraphrase, validated in a held-out one
        return [("train", t) for t in TRAIN_TEMPLATES[family]] + [("val", choose(seed, key, VAL_TEMPLATES[family])[0])]
    return [("train", choose(seed, key, TRAIN_TEMPLATES[family])[0])]


def render_sample(fact: Fact, template: Template, split: str, system_prompt: str) -> dict[str, Any]:
    """One JSONL record."""
    who = "market" if len(fact.tickers) > 2 else "+".join(fact.tickers)
    when = "latest" if fact.latest else "dated"
    return {"id": f"{fact.family}/{who}/{fact.session.isoformat()}/{fact.key}/{when}/{template.id}",
            "family": fact.family, "template": template.id, "tickers": list(fact.tickers),
            "session": fact.session.isoformat(), "split": split,
            "messages": [{"role": "system", "content": system_prompt},
                         {"role": "user", "content": template.text.format(**fact.slots)},
                         {"role": "assistant", "content": fact.answer}],
            "truth": fact.truth}


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
    """Sort key per sample id: first the undated latest questions (validation asks them in
    other words), then the latest session's dated ones, then older sessions; within that, each
    fact once before any fact twice (paraphrases share the id up to the template); then seeded."""
    digest = {s["id"]: stable_digest(seed, s["id"]) for s in samples}
    by_fact: dict[str, list[str]] = {}
    for s in samples:
        by_fact.setdefault(s["id"].rsplit("/", 1)[0], []).append(s["id"])
    repeat = {i: rank for ids in by_fact.values() for rank, i in enumerate(sorted(ids, key=digest.get))}
    tier = {s["id"]: 0 if "/latest/" in s["id"] else 1 if s["session"] == latest.isoformat() else 2 for s in samples}
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
        ranked = sorted((s["id"] for s in samples if s["family"] == family), key=priority.get)
        keep.update(ranked[:quotas[family]])
    return [s for s in samples if s["id"] in keep]


def build_sample_set(bars: Mapping[str, pd.DataFrame], cfg: Config, as_of: date) -> tuple[list[dict], list[dict]]:
    """The (train, val) samples from bars per ticker as of `as_of`: pure and deterministic."""
    sc = cfg.samples
    if sc.history_sessions <= sc.val_recent_sessions:
        raise ValueError(f"samples.history_sessions ({sc.history_sessions}) must exceed val_recent_sessions "
                         f"({sc.val_recent_sessions}), or training has no prompt-answerable questions")
    frames = select_window(bars, cfg, as_of)
    series = [Series.from_frame(cfg.ticker(symbol), frame) for symbol, frame in frames.items()]
    sessions = history_sessions(frames, sc.history_sessions)
    recent = set(sessions[-sc.val_recent_sessions:])
    train: list[dict[str, Any]] = []
    val: list[dict[str, Any]] = []
    for fact in collect_facts(series, sessions, sc):
        for split, template in assign_templates(fact, recent, sc.seed):
            (train if split == "train" else val).append(render_sample(fact, template, split, sc.system_prompt))
    check_splits(train, val)
    return (stratified_subsample(train, sc.max_train_samples, sc.seed, sessions[-1]),
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
    about_latest = [s for s in samples if s["session"] == session.isoformat() and s["family"] not in PROMPT_FAMILIES]
    return (about_latest or samples or [None])[0]


def format_sample_report(sample_set: SampleSet, tokenizer: Any = None) -> str:
    """Counts per family and split, the hashes, and a training and a validation example,
    rendered through the chat template when a tokenizer is given."""
    ss = sample_set
    lines = [f"Samples for session {ss.session.isoformat()} in {ss.dir}",
             f"  train {ss.n_train}  sha256 {ss.train_hash}",
             f"  val   {ss.n_val}  sha256 {ss.val_hash}",
             f"  content sha256 {ss.content_hash}", "",
             f"  {'family':<16}{'train':>7}{'val':>7}"]
    lines += [f"  {family:<16}{n['train']:>7}{n['val']:>7}" for family, n in ss.counts.items()]
    lines += [f"  {'total':<16}{ss.n_train:>7}{ss.n_val:>7}", ""]
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


@task(name="build-samples", cache_policy=NO_CACHE)
def build_sample_files(home: Path, cfg: Config, as_of: date) -> SampleSet:
    """Build (or reuse) the session's sample files and log their counts and hash."""
    sample_set = build_samples(home, cfg, as_of)
    get_run_logger().info("samples %s: %d train, %d val, content sha256 %s", sample_set.session,
                          sample_set.n_train, sample_set.n_val, sample_set.content_hash[:12])
    return sample_set
