"""Sample builder on a synthetic market of the default universe: size, families, split, files."""
from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.answering.dates import find_day
from tasks.answering.ground import MarketView, ground, grounded_prompt
from tasks.samples.chat import render_prompt, tokenize_conversation
from tasks.config import DEFAULT_UNIVERSE, Config, TickerSpec, load_config
from tasks.samples.families import CLOSED_BOOK_FAMILIES, FAMILIES, PERIODS
from tasks.samples.format import figures_in, format_change, format_level
from tasks.samples.store import SampleSetError, jsonl_bytes
from tasks.samples.templates import DATED, TRAIN_TEMPLATES, VAL_TEMPLATES
from tasks.samples.build import (SampleDataError, SampleSet, build_sample_set, build_samples_from_bars,
                           format_sample_report, read_jsonl, select_window)
from tests.tinymodel import build_tiny_tokenizer

AS_OF = date(2026, 11, 20)
ZERO_VOLUME = {"^BSESN", "NIFTY_MIDCAP_100.NS"}


def synthetic_bars(specs: list[TickerSpec], end: date = AS_OF, sessions: int = 300, seed: int = 3) -> dict[str, pd.DataFrame]:
    """~300 weekdays of plausible OHLCV per ticker; some indices report no volume."""
    days = pd.bdate_range(end=end, periods=sessions, name="session")
    rng = np.random.default_rng(seed)
    bars = {}
    for spec in specs:
        start = rng.uniform(8000, 60000) if spec.kind == "index" else rng.uniform(50, 4000)
        close = start * np.exp(np.cumsum(rng.normal(0.0003, 0.013, sessions)))
        open_ = close * (1 + rng.normal(0, 0.004, sessions))
        spread = np.abs(rng.normal(0, 0.006, sessions)) * close
        volume = np.zeros(sessions) if spec.symbol in ZERO_VOLUME else rng.lognormal(14, 0.5, sessions).round()
        bars[spec.symbol] = pd.DataFrame(
            {"open": open_, "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread,
             "close": close, "volume": volume}, index=days)
    return bars


@pytest.fixture(scope="module")
def built() -> tuple[list[dict], list[dict]]:
    return build_sample_set(synthetic_bars(DEFAULT_UNIVERSE), Config(), AS_OF)


def _question(sample: dict) -> str:
    """The user's message: for a grounded sample the data sheet, then the question."""
    return sample["messages"][1]["content"]


def _asked(sample: dict) -> str:
    """The question as the user wrote it (without the data sheet)."""
    return _question(sample).rpartition("\n\nQuestion: ")[2]


def _answer(sample: dict) -> str:
    return sample["messages"][2]["content"]


def test_default_universe_gives_over_1000_training_samples_in_8_or_more_families(built):
    train, val = built
    assert len(train) >= 1000
    assert len(set(FAMILIES)) >= 8
    assert {s["family"] for s in train} == set(FAMILIES)
    assert {s["family"] for s in val} == set(FAMILIES)


def test_every_family_has_three_training_paraphrases_and_held_out_validation_ones(built):
    train, val = built
    for family in FAMILIES:
        assert len(TRAIN_TEMPLATES[family]) >= 3 and len(VAL_TEMPLATES[family]) >= 1
        texts = [t.text for t in TRAIN_TEMPLATES[family] + VAL_TEMPLATES[family]]
        assert len(set(texts)) == len(texts)
    train_templates = {s["template"] for s in train}
    val_templates = {s["template"] for s in val}
    assert not train_templates & val_templates
    assert val_templates <= {t.id for ts in VAL_TEMPLATES.values() for t in ts}


def test_no_validation_question_or_its_answer_is_in_training(built):
    train, val = built
    trained = {(_question(s), _answer(s)) for s in train}
    train_questions = {_question(s) for s in train}
    assert not any(_question(s) in train_questions for s in val)
    assert not any((_question(s), _answer(s)) in trained for s in val)


def test_same_question_never_has_two_answers(built):
    answers: dict[str, set[str]] = {}
    for sample in built[0] + built[1]:
        answers.setdefault(_question(sample), set()).add(_answer(sample))
    assert all(len(a) == 1 for a in answers.values())


def test_validation_asks_the_newest_sessions_trained_facts_in_held_out_phrasings(built):
    train, val = built
    held_out = {t.id for ts in VAL_TEMPLATES.values() for t in ts}
    assert {s["session"] for s in val} == {AS_OF.isoformat()}
    assert all(s["template"] in held_out for s in val)
    assert {s["fact"] for s in val} <= {s["fact"] for s in train}  # the facts are trained, the words are new


def test_validation_asks_grounded_and_closed_book(built):
    _, val = built
    assert {s["mode"] for s in val} == {"grounded", "closed_book"}
    closed = [s for s in val if s["mode"] == "closed_book"]
    assert {s["family"] for s in closed} == set(CLOSED_BOOK_FAMILIES)
    grounded_facts = {s["fact"] for s in val if s["mode"] == "grounded"}
    assert {s["fact"] for s in closed} <= grounded_facts


def test_a_grounded_sample_asks_with_the_system_prompt_and_a_data_sheet(built):
    samples = Config().samples
    for sample in (s for s in built[0] + built[1] if s["mode"] == "grounded"):
        system, user = sample["messages"][0]["content"], _question(sample)
        assert system == samples.system_prompt, sample["id"]
        question, rest = user.split("\n\n", 1)
        sheet, again = rest.rsplit("\n\n", 1)
        assert question.startswith("Question: ") and again == question, sample["id"]
        assert sheet.startswith(("Data sheet: ", "Market data sheet")), sample["id"]


def test_a_closed_book_sample_asks_with_the_closed_book_prompt_and_no_sheet(built):
    samples = Config().samples
    closed = [s for s in built[0] + built[1] if s["mode"] == "closed_book"]
    assert closed and {s["session"] for s in closed} == {AS_OF.isoformat()}
    for sample in closed:
        assert sample["messages"][0]["content"] == samples.closed_book_system_prompt, sample["id"]
        assert "Data sheet" not in _question(sample) and "Question: " not in _question(sample), sample["id"]


def test_every_sample_has_the_documented_schema(built):
    keys = {"id", "fact", "family", "template", "phrase", "mode", "tickers", "session", "today", "split",
            "messages", "truth"}
    for split, samples in zip(("train", "val"), built):
        for sample in samples:
            assert set(sample) == keys, sample["id"]
            assert sample["split"] == split and sample["mode"] in ("grounded", "closed_book")
            assert sample["id"].startswith(sample["fact"] + "/") and sample["fact"].startswith(sample["family"] + "/")
            assert sample["template"].startswith(sample["family"] + ".")
            assert sample["session"] <= sample["today"], sample["id"]


def test_older_sessions_are_trained_grounded_with_a_phrase_that_names_their_day(built):
    train, val = built
    older = [s for s in train if s["session"] != AS_OF.isoformat()]
    assert older and not [s for s in val if s["session"] != AS_OF.isoformat()]
    for sample in older:
        assert sample["mode"] == "grounded" and sample["phrase"] in DATED, sample["id"]
        named = find_day(_asked(sample), date.fromisoformat(sample["today"]))
        assert named is not None and named.day.isoformat() == sample["session"], (sample["id"], _asked(sample))


def test_every_grounded_question_re_grounds_to_its_own_tickers_session_and_prompt(built):
    cfg = Config()
    view = MarketView.from_bars(select_window(synthetic_bars(DEFAULT_UNIVERSE), cfg, AS_OF), cfg.market.tickers)
    for sample in (s for s in built[0] + built[1] if s["mode"] == "grounded"):
        g = ground(_asked(sample), view, date.fromisoformat(sample["today"]))
        assert g.refusal is None and g.session.isoformat() == sample["session"], (sample["id"], g.refusal)
        if sample["family"] == "market_summary":
            assert g.kind == "market", sample["id"]
        else:
            assert sorted(g.symbols) == sorted(sample["tickers"]), sample["id"]  # compare may name them either way
        assert grounded_prompt(_asked(sample), g) == _question(sample), sample["id"]


def _as_written(truth: dict) -> list[str]:
    """How a data sheet may write a truth value."""
    value, kind = truth["value"], truth["kind"]
    if kind in ("price", "points"):
        return [format_level(value, "index" if kind == "points" else "stock")]
    if kind == "volume":
        return [f"{round(value):,}"]
    return [format_change(value), f"{value:.2f}%"]  # a change, or a magnitude (volatility)


def test_every_number_of_a_grounded_answer_is_stated_in_its_data_sheet(built):
    for sample in (s for s in built[0] + built[1] if s["mode"] == "grounded"):
        sheet = _question(sample).rpartition("\n\nQuestion: ")[0]
        for truth in sample["truth"]:
            if truth["kind"] == "count":  # window lengths (5 sessions, 52 weeks) are words of the question
                continue
            assert any(re.search(re.escape(w) + r"(?![\d,])", sheet) for w in _as_written(truth)), (
                sample["id"], truth, sheet)


def test_two_builds_write_byte_identical_files(built, tmp_path: Path):
    again = build_samples_from_bars(tmp_path, synthetic_bars(DEFAULT_UNIVERSE), Config(), AS_OF)
    assert again.train_path.read_bytes() == jsonl_bytes(built[0])
    assert again.val_path.read_bytes() == jsonl_bytes(built[1])


def _template_pattern(text: str) -> re.Pattern[str]:
    """A template as a pattern of the questions it can fill: any text for a slot, spaces optional."""
    literal = [re.escape(part).replace(r"\ ", r"\s*") for part in re.split(r"\{\w+\}", text)]
    return re.compile(r"\s*(?:.*?)\s*".join(literal), re.DOTALL)


def test_a_template_that_names_a_period_asks_only_about_a_window_people_call_by_it(built):
    templates = {t.id: t for ts in TRAIN_TEMPLATES.values() for t in ts}
    windows = Counter()
    for sample in built[0]:
        if "period" in templates[sample["template"]].slots:
            window = int(sample["fact"].rsplit("/n", 1)[1])
            assert window in PERIODS, (sample["id"], _asked(sample))
            assert PERIODS[window] in _asked(sample), _asked(sample)
            windows[window] += 1
    assert set(windows) == set(PERIODS), windows


def test_no_training_question_uses_a_held_out_phrasing(built):
    train, val = built
    held_out = {t.id for ts in VAL_TEMPLATES.values() for t in ts}
    assert not {s["template"] for s in train} & held_out
    assert not {_asked(s) for s in train} & {_asked(s) for s in val}
    patterns = {t.id: _template_pattern(t.text) for ts in VAL_TEMPLATES.values() for t in ts}
    for question in {_asked(s) for s in train}:
        assert not [i for i, p in patterns.items() if p.fullmatch(question)], question


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


QUESTIONS = Path(__file__).resolve().parents[2] / "benchmarks" / "questions"
HANDWRITTEN = (QUESTIONS / "handwritten.jsonl", QUESTIONS / "handwritten2.jsonl")
"""The two hand-written held-out sets (benchmarks/questions/README.md)."""


def handwritten_questions() -> set[str]:
    return {_normalised(json.loads(line)["question"])
            for path in HANDWRITTEN for line in path.read_text().splitlines() if line.strip()}


def test_no_hand_written_benchmark_question_is_a_sample_question(built):
    benchmark = handwritten_questions()
    assert benchmark
    asked = {_normalised(_asked(s)) for s in built[0] + built[1]}
    assert not asked & benchmark, sorted(asked & benchmark)[:5]


def test_truth_lists_every_number_of_each_answer_in_order(built):
    names = [t.name for t in DEFAULT_UNIVERSE]
    for sample in built[0] + built[1]:
        shown = figures_in(_answer(sample), names)
        assert len(shown) == len(sample["truth"]), sample["id"]
        for number, truth in zip(shown, sample["truth"]):
            assert truth["kind"] in {"price", "points", "pct", "volume", "count"}
            assert abs(number - truth["value"]) <= 0.005 + 1e-9 * abs(number) or (
                truth["kind"] == "volume" and abs(number - truth["value"]) <= 0.5), (sample["id"], number, truth)


def test_indices_are_in_points_and_zero_volume_indices_get_no_volume_figures(built):
    indices = {t.symbol for t in DEFAULT_UNIVERSE if t.kind == "index"}
    for sample in built[0] + built[1]:
        if sample["family"] == "market_summary" or sample["tickers"][0] not in indices:
            continue
        if sample["family"] not in {"compare"}:
            assert "₹" not in _answer(sample) + _question(sample), sample["id"]
        if sample["tickers"][0] in ZERO_VOLUME:
            assert sample["family"] != "volume" and not any(t["kind"] == "volume" for t in sample["truth"])
    volume_tickers = {s["tickers"][0] for s in built[0] if s["family"] == "volume"}
    assert volume_tickers == {t.symbol for t in DEFAULT_UNIVERSE} - ZERO_VOLUME


CAPPED = {"samples": {"max_train_samples": 220, "max_val_samples": 40}}


@pytest.fixture(scope="module")
def capped() -> tuple[list[dict], list[dict]]:
    return build_sample_set(synthetic_bars(DEFAULT_UNIVERSE), Config.model_validate(CAPPED), AS_OF)


def test_cap_subsamples_grounded_training_samples_of_every_family_newest_facts_first(capped):
    train, val = capped
    grounded = [s for s in train if s["mode"] == "grounded"]
    assert (len(grounded), len(val)) == (220, 40)
    assert {s["family"] for s in grounded} == set(FAMILIES) == {s["family"] for s in val}
    assert max(Counter(s["family"] for s in grounded).values()) <= 220 // len(FAMILIES) + 1
    close = [s for s in grounded if s["family"] == "close"]  # ~14 slots: first the 12 newest facts, once each
    assert {s["tickers"][0] for s in close if s["session"] == AS_OF.isoformat()} == {t.symbol for t in DEFAULT_UNIVERSE}


def test_cap_keeps_every_closed_book_training_sample(built, capped):
    closed = [s for s in capped[0] if s["mode"] == "closed_book"]
    assert closed and closed == [s for s in built[0] if s["mode"] == "closed_book"]


def test_a_capped_build_is_deterministic(capped):
    assert capped == build_sample_set(synthetic_bars(DEFAULT_UNIVERSE), Config.model_validate(CAPPED), AS_OF)


def test_cap_smaller_than_the_number_of_families_fails():
    cfg = Config.model_validate({"samples": {"max_train_samples": 3}})
    with pytest.raises(ValueError, match="families"):
        build_sample_set(synthetic_bars(DEFAULT_UNIVERSE), cfg, AS_OF)


def test_missing_or_malformed_bars_fail_loudly():
    bars = synthetic_bars(DEFAULT_UNIVERSE)
    with pytest.raises(SampleDataError, match="TCS.NS"):
        build_sample_set({k: v for k, v in bars.items() if k != "TCS.NS"}, Config(), AS_OF)
    bars["INFY.NS"] = bars["INFY.NS"].iloc[::-1]
    with pytest.raises(SampleDataError, match="INFY.NS"):
        build_sample_set(bars, Config(), AS_OF)
    with pytest.raises(SampleDataError, match="no bars on or before"):
        build_sample_set(synthetic_bars(DEFAULT_UNIVERSE), Config(), date(2020, 1, 1))


def test_assistant_only_mask_covers_exactly_the_answer_in_the_chat_template(built):
    tokenizer = build_tiny_tokenizer()
    one_per_family_and_split = {(s["family"], s["split"]): s for s in built[0] + built[1]}
    for sample in one_per_family_and_split.values():
        ids = tokenize_conversation(tokenizer, sample["messages"], max_length=4096)
        answer = [t for t, m in zip(ids["input_ids"], ids["completion_mask"]) if m]
        prompt = [t for t, m in zip(ids["input_ids"], ids["completion_mask"]) if not m]
        assert tokenizer.decode(answer, skip_special_tokens=False) == _answer(sample) + "<|im_end|>\n"
        assert tokenizer.decode(prompt, skip_special_tokens=False) == render_prompt(tokenizer, sample["messages"][:-1])
        assert [m["role"] for m in sample["messages"]] == ["system", "user", "assistant"]


@pytest.mark.slow
def test_every_conversation_fits_the_max_length_of_the_cpu_and_gpu_profiles(built):
    # The real SmolLM2 tokenizer (loaded from the embedded GGUF, ~10 s): the tiny test tokenizer's
    # 400-token vocabulary needs ~1.6x the tokens, so it cannot stand in for a length budget.
    # The longest conversations need ~650 tokens. Tokens grow with characters for these texts, so
    # the 300 longest by characters include the longest in tokens.
    from transformers import AutoTokenizer

    from tasks.training.embedded import find_embedded_gguf

    gguf = find_embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    longest = sorted(built[0] + built[1], key=lambda s: -sum(len(m["content"]) for m in s["messages"]))[:300]
    needed = max(len(tokenize_conversation(tokenizer, s["messages"], max_length=4096)["input_ids"]) for s in longest)
    for profile in ("cpu", "gpu"):
        limit = load_config(profile).training.max_length
        assert needed <= limit, f"{profile} profile: max_length {limit} < {needed} tokens of the longest conversation"


def _small_config(**samples) -> Config:
    return Config.model_validate({"samples": {"max_train_samples": 150, "max_val_samples": 30, **samples}})


def test_sample_files_are_written_hashed_and_reused_when_unchanged(tmp_path: Path):
    bars = synthetic_bars(DEFAULT_UNIVERSE)
    first = build_samples_from_bars(tmp_path, bars, _small_config(), AS_OF)
    assert first.dir == tmp_path / "samples" / AS_OF.isoformat() and first.session == AS_OF
    assert read_jsonl(first.train_path)[0]["split"] == "train" and len(read_jsonl(first.val_path)) == first.n_val
    assert sum(n["train"] for n in first.counts.values()) == first.n_train
    assert sum(s["mode"] == "grounded" for s in read_jsonl(first.train_path)) == 150
    assert first.data_window["TCS.NS"][1] == AS_OF.isoformat()
    meta = json.loads((first.dir / "samples.json").read_text())
    assert meta["config"]["samples"]["max_train_samples"] == 150 and meta["content_hash"] == first.content_hash
    inode = first.train_path.stat().st_ino
    again = build_samples_from_bars(tmp_path, bars, _small_config(), AS_OF)
    assert again == first and again.train_path.stat().st_ino == inode
    assert SampleSet.from_dir(first.dir) == first


def test_changed_samples_replace_the_folder_and_leave_no_temporaries(tmp_path: Path):
    bars = synthetic_bars(DEFAULT_UNIVERSE)
    first = build_samples_from_bars(tmp_path, bars, _small_config(), AS_OF)
    second = build_samples_from_bars(tmp_path, bars, _small_config(seed=1), AS_OF)
    assert second.content_hash != first.content_hash and second.dir == first.dir
    assert [p.name for p in (tmp_path / "samples").iterdir()] == [AS_OF.isoformat()]


def test_a_tampered_sample_file_is_refused(tmp_path: Path):
    sample_set = build_samples_from_bars(tmp_path, synthetic_bars(DEFAULT_UNIVERSE), _small_config(), AS_OF)
    with open(sample_set.val_path, "a", encoding="utf-8") as out:
        out.write("{}\n")
    with pytest.raises(SampleSetError, match="sha256"):
        SampleSet.from_dir(sample_set.dir)


def test_report_shows_counts_hashes_and_two_example_conversations(tmp_path: Path):
    sample_set = build_samples_from_bars(tmp_path, synthetic_bars(DEFAULT_UNIVERSE), _small_config(), AS_OF)
    plain = format_sample_report(sample_set)
    assert sample_set.content_hash in plain and sample_set.train_hash in plain
    assert all(family in plain for family in FAMILIES)
    assert plain.count("assistant: ") == 2 and "Example (train" in plain and "Example (val" in plain
    rendered = format_sample_report(sample_set, build_tiny_tokenizer())
    assert rendered.count("<|im_start|>assistant\n") == 2
