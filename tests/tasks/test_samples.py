"""Sample builder on a synthetic market of the default universe: size, families, split, files."""
from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.chat import render_prompt, tokenize_conversation
from tasks.config import DEFAULT_UNIVERSE, Config, TickerSpec
from tasks.sample_format import figures_in
from tasks.sample_store import SampleSetError
from tasks.sample_templates import FAMILIES, TRAIN_TEMPLATES, VAL_TEMPLATES
from tasks.samples import (SampleDataError, SampleSet, build_sample_set, build_samples_from_bars,
                           format_sample_report, read_jsonl)
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
    return sample["messages"][1]["content"]


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


def test_validation_asks_the_latest_session_and_a_recent_time_slice_of_prompt_families(built):
    train, val = built
    cfg = Config()
    recent = sorted({s["session"] for s in val if s["family"].startswith("prompt_")})
    assert len(recent) == cfg.samples.val_recent_sessions and recent[-1] == AS_OF.isoformat()
    assert all(s["session"] < recent[0] for s in train if s["family"].startswith("prompt_"))
    assert {s["session"] for s in val if not s["family"].startswith("prompt_")} == {AS_OF.isoformat()}
    assert all("latest" in _question(s) or s["family"] == "session" or s["family"].startswith("prompt_") for s in val)


def test_older_sessions_are_asked_with_their_date(built):
    older = [s for s in built[0] if s["session"] != AS_OF.isoformat() and not s["family"].startswith("prompt_")]
    assert older and all("2026" in _question(s) for s in older)


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


def test_cap_subsamples_every_family_deterministically_latest_session_first():
    bars, cfg = synthetic_bars(DEFAULT_UNIVERSE), Config.model_validate(
        {"samples": {"max_train_samples": 220, "max_val_samples": 40}})
    train, val = build_sample_set(bars, cfg, AS_OF)
    assert (len(train), len(val)) == (220, 40)
    assert {s["family"] for s in train} == set(FAMILIES) == {s["family"] for s in val}
    assert max(Counter(s["family"] for s in train).values()) <= 220 // len(FAMILIES) + 1
    close = [s for s in train if s["family"] == "close"]  # 20 slots; 12 facts asked in validation
    assert {s["tickers"][0] for s in close if "latest" in _question(s)} == {t.symbol for t in DEFAULT_UNIVERSE}
    assert (train, val) == build_sample_set(bars, cfg, AS_OF)


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


def test_no_hand_rolled_instruction_format(built):
    for sample in built[0] + built[1]:
        text = "".join(m["content"] for m in sample["messages"])
        assert "###" not in text and "### Instruction" not in text


def test_conversations_are_short_enough_for_a_512_token_context(built):
    # ~3.5 characters per token for these texts with a 49k-vocabulary BPE (SmolLM2): 1,400 chars < 512.
    assert max(sum(len(m["content"]) for m in s["messages"]) for s in built[0] + built[1]) < 1400


def _small_config(**samples) -> Config:
    return Config.model_validate({"samples": {"max_train_samples": 150, "max_val_samples": 30, **samples}})


def test_sample_files_are_written_hashed_and_reused_when_unchanged(tmp_path: Path):
    bars = synthetic_bars(DEFAULT_UNIVERSE)
    first = build_samples_from_bars(tmp_path, bars, _small_config(), AS_OF)
    assert first.dir == tmp_path / "samples" / AS_OF.isoformat() and first.session == AS_OF
    assert read_jsonl(first.train_path)[0]["split"] == "train" and len(read_jsonl(first.val_path)) == first.n_val
    assert sum(n["train"] for n in first.counts.values()) == first.n_train == 150
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
