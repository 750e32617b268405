"""Scoring: one val.jsonl, one process, identical settings for every model; the number_accuracy
metric, loaded by path through `evaluate`; `ask` through the promoted adapter."""
from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest

from adapters_registry import Registry
from tasks.config import Config, TrainingConfig
from tasks.evaluation.probes import load_number_accuracy, select_probes
from tasks.evaluation.score import ValidationFileError, read_validation, score_candidate, score_models
from tasks.promotion import ChampionUnavailableError, decide_promotion
from tasks.samples.chat import tokenize_conversation
from tasks.training.base_model import hash_weight_files, resolve_base_model
from tests.adapters_registry.fakes import decision, lineage, make_lora_adapter
from tests.tinymodel import build_tiny_model

SYSTEM = Config().samples.system_prompt
QA = [
    ("close", "What was the latest close of NIFTY 50?", "NIFTY 50 closed at 12,056.05 points, up +0.53%.",
     [{"value": 12056.05, "kind": "points"}, {"value": 0.53, "kind": "pct"}]),
    ("close", "What did TCS close at?", "TCS closed at ₹2,154.35 on Friday, 29 November 2019.",
     [{"value": 2154.35, "kind": "price"}]),
    ("returns", "How did Reliance Industries do over 5 sessions?",
     "Reliance Industries returned -1.25% over 5 sessions.",
     [{"value": -1.25, "kind": "pct"}, {"value": 5, "kind": "count"}]),
    ("volume", "What was the volume of HDFC Bank?", "Volume was 3,456,789 shares.",
     [{"value": 3456789, "kind": "volume"}]),
    ("returns", "How volatile is Infosys?", "Annualised volatility of Infosys is 23.45%, a moderate risk level.",
     [{"value": 23.45, "kind": "pct"}]),
]


def conversation(i: int, family: str, question: str, answer: str, truth: list) -> dict:
    return {"id": f"2019-11-29/{family}/{i}", "family": family, "template": "t", "tickers": ["^NSEI"],
            "session": "2019-11-29", "split": "val", "truth": truth,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]}


@pytest.fixture(scope="module")
def val_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("samples") / "val.jsonl"
    path.write_text("".join(json.dumps(conversation(i, *qa), ensure_ascii=False) + "\n" for i, qa in enumerate(QA)))
    return path


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return make_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("run") / "adapter", seed=3)


def cfg(probe_size: int = 0, batch_size: int = 2, max_new_tokens: int = 8) -> Config:
    return Config.model_validate({"training": {"per_device_eval_batch_size": batch_size, "max_length": 384},
                                  "evaluation": {"probe_size": probe_size, "max_new_tokens": max_new_tokens}})


def test_champion_and_candidate_scores_come_from_one_val_file(base, adapter, val_path, tmp_path, tiny_model_dir):
    model, tokenizer = base
    first = score_models(model, tokenizer, {"champion": adapter, "candidate": adapter}, val_path, cfg())
    second = score_models(model, tokenizer, {"candidate": adapter}, val_path, cfg(batch_size=3))
    losses = [first.scores["champion"].loss, first.scores["candidate"].loss, second.scores["candidate"].loss]
    assert max(losses) - min(losses) < 1e-6
    assert abs(first.scores["base"].loss - second.scores["base"].loss) < 1e-6
    assert abs(first.scores["base"].loss - losses[0]) > 1e-4  # the adapter is really switched in
    assert first.val_hash == hashlib.sha256(val_path.read_bytes()).hexdigest() == second.val_hash
    assert first.n_samples == len(QA) and first.scores["candidate"].n_tokens == first.n_tokens > 0

    fields = {**lineage(base_identity=str(tiny_model_dir), file_hash=hash_weight_files(tiny_model_dir)),
              "scores": first.to_dict()}
    info = Registry(tmp_path).register(adapter, fields, decision(True, "base"), promote=True)
    assert info.manifest.lineage.scores.val_hash == first.val_hash
    assert info.manifest.lineage.scores.settings["max_length"] == 384


def test_the_daily_scoring_verifies_and_scores_the_champion_beside_the_candidate(tmp_path, tiny_model_dir,
                                                                                 adapter, val_path):
    home, config = tmp_path / "home", cfg()
    ref = resolve_base_model(TrainingConfig(base_model=str(tiny_model_dir)), home)
    candidate = SimpleNamespace(adapter_dir=adapter, base=ref)
    sample_set = SimpleNamespace(val_path=val_path, val_hash=hashlib.sha256(val_path.read_bytes()).hexdigest())
    first = score_candidate(home, config, candidate, sample_set)
    assert set(first.scores) == {"base", "candidate"} and first.champion_version is None
    fields = {**lineage(base_identity=ref.identity, file_hash=ref.file_hash), "scores": first.to_dict()}
    champion = Registry(home).register(adapter, fields, decision(True, "base"), promote=True)

    second = score_candidate(home, config, candidate, sample_set)
    assert second.champion_version == champion.version
    assert abs(second.scores["champion"].loss - second.scores["candidate"].loss) < 1e-6
    assert abs(second.scores["candidate"].loss - first.scores["candidate"].loss) < 1e-6

    weights = champion.path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ChampionUnavailableError):
        score_candidate(home, config, candidate, sample_set)


def test_a_champion_trained_on_another_base_model_is_not_scored_and_the_gate_says_so(tmp_path, tiny_model_dir,
                                                                                      adapter, val_path):
    # Issue 14: after a deliberate base-model change the champion's adapter was attached to the
    # new base. Same shapes here, so peft loads it and the losses would be compared as if comparable.
    home, config = tmp_path / "home", cfg()
    old = resolve_base_model(TrainingConfig(base_model=str(tiny_model_dir)), home)
    fields = lineage(base_identity=old.identity, file_hash=old.file_hash)
    champion = Registry(home).register(adapter, fields, decision(True, "base"), promote=True)
    other = build_tiny_model(tmp_path / "other-model", seed=1)  # another folder and other weights
    new = resolve_base_model(TrainingConfig(base_model=str(other)), home)
    candidate = SimpleNamespace(adapter_dir=make_lora_adapter(other, tmp_path / "run" / "adapter", seed=4), base=new)
    sample_set = SimpleNamespace(val_path=val_path, val_hash=hashlib.sha256(val_path.read_bytes()).hexdigest())
    report = score_candidate(home, config, candidate, sample_set)
    assert set(report.scores) == {"base", "candidate"} and report.champion_version is None
    assert report.incomparable_champion == champion.version
    assert old.identity in report.incomparable_reason and new.identity in report.incomparable_reason
    gate = decide_promotion(report, 0.0)
    assert gate.baseline == "base" and gate.reason.endswith(report.incomparable_reason)
    assert report.incomparable_reason.endswith("so the candidate was compared with the base model")


def test_a_4bit_base_scored_dequantised_gives_the_4bit_scores(tiny_model_dir, adapter, val_path, tmp_path):
    import bitsandbytes as bnb

    from tasks.training.base_model import dequantize_for_scoring, load_base

    training = TrainingConfig(base_model=str(tiny_model_dir), load_in_4bit=True)
    ref = resolve_base_model(training, tmp_path / "home")
    model, tokenizer = load_base(ref, training, for_training=False)
    nf4 = score_models(model, tokenizer, {"candidate": adapter}, val_path, cfg(probe_size=3))
    assert dequantize_for_scoring(model)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    plain = score_models(model, tokenizer, {"candidate": adapter}, val_path, cfg(probe_size=3))
    for name in ("base", "candidate"):
        assert plain.scores[name].loss == pytest.approx(nf4.scores[name].loss, rel=1e-5), name
        assert plain.scores[name].accuracy == nf4.scores[name].accuracy
    assert not dequantize_for_scoring(model)  # nothing 4-bit is left


def test_probes_run_on_merged_weights_and_the_base_comes_back_bit_for_bit(tiny_model_dir, adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tasks.evaluation.generation import merged_adapter

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    ids = torch.tensor([[5, 17, 42, 99, 123, 7]])
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        with merged_adapter(model) as merged:
            assert merged and all(m.merged for m in model.modules() if hasattr(m, "merged_adapters"))
            changed = any(not torch.equal(p, weights[n]) for n, p in model.named_parameters() if n in weights)
            torch.testing.assert_close(model(input_ids=ids).logits, unmerged, rtol=1e-5, atol=1e-5)
        with model.disable_adapter(), merged_adapter(model) as merged_base:
            assert not merged_base  # the base is never scored with an adapter folded in
        after = model(input_ids=ids).logits
    assert changed and not any(m.merged for m in model.modules() if hasattr(m, "merged_adapters"))
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters() if n in weights)
    assert torch.equal(after, unmerged)


def _reference_loss(model, tokenizer, val_path) -> tuple[float, int]:
    """The mean assistant-token loss from whole forward passes (every position's logits), one
    conversation at a time, no padding."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    for record in read_validation(val_path):
        row = tokenize_conversation(tokenizer, record["messages"], 384)
        ids, mask = torch.tensor([row["input_ids"]]), torch.tensor(row["completion_mask"], dtype=torch.bool)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
        total += F.cross_entropy(logits[mask[1:]], ids[0, 1:][mask[1:]], reduction="sum").item()
        count += int(mask[1:].sum())
    return total / count, count


def test_the_loss_is_the_token_weighted_mean_over_assistant_tokens(base, adapter, val_path):
    """Scoring computes the output layer on the answer positions only; the loss is the one whole
    forward passes give, for the base model and through an adapter's LoRA layers."""
    from peft import PeftModel

    model, tokenizer = base
    report = score_models(model, tokenizer, {"candidate": adapter}, val_path, cfg(batch_size=4))
    loss, count = _reference_loss(model, tokenizer, val_path)
    assert report.n_tokens == count and report.scores["base"].loss == pytest.approx(loss, abs=1e-5)
    peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=False).eval()
    try:
        with_adapter, _ = _reference_loss(peft_model, tokenizer, val_path)
    finally:
        peft_model.unload()
    assert with_adapter != pytest.approx(loss, abs=1e-4)  # the adapter changes the loss measured
    assert report.scores["candidate"].loss == pytest.approx(with_adapter, abs=1e-5)


def test_scoring_leaves_the_base_model_as_it_was(base, adapter, val_path):
    model, tokenizer = base
    model.train()
    score_models(model, tokenizer, {"candidate": adapter}, val_path, cfg())
    assert model.training and not any("lora" in name for name, _ in model.named_modules())


def test_accuracy_is_reported_per_family_on_a_fixed_probe_subset(base, adapter, val_path):
    model, tokenizer = base
    # Room for every reference number (scored are those a right answer shows within the limit).
    report = score_models(model, tokenizer, {"candidate": adapter}, val_path, cfg(probe_size=3, max_new_tokens=64))
    assert report.probe_ids == [p["id"] for p in select_probes(read_validation(val_path), 3)]
    assert {p.split("/")[1] for p in report.probe_ids} == {"close", "returns", "volume"}  # stratified
    for score in report.scores.values():
        assert set(score.accuracy) == {"close", "returns", "volume"}
        assert all(0.0 <= share <= 1.0 for share in score.accuracy.values())
        assert 0.0 <= score.accuracy_overall <= 1.0


def test_probes_are_scored_on_the_numbers_a_right_answer_shows_within_the_token_limit(base, val_path):
    from tasks.evaluation.probes import visible_truths

    _, tokenizer = base
    probes = select_probes(read_validation(val_path), len(QA))
    roomy = Config.model_validate({"evaluation": {"max_new_tokens": 512}})
    assert visible_truths(tokenizer, probes, roomy) == [p["truth"] for p in probes]
    tight = cfg(probe_size=len(QA))  # 8 new tokens: most answers are cut before their last number
    truths = visible_truths(tokenizer, probes, tight)
    assert all(t == p["truth"][:len(t)] for t, p in zip(truths, probes))
    assert sum(map(len, truths)) < sum(len(p["truth"]) for p in probes)
    # An answer exactly like the reference, as the token limit cuts it or whole, is right on every
    # number it is scored on.
    references = [p["messages"][-1]["content"] for p in probes]
    cut = [tokenizer.decode(tokenizer(r, add_special_tokens=False)["input_ids"][:8]) for r in references]
    for answers in (cut, references):
        result = load_number_accuracy().compute(predictions=answers, references=truths)
        assert result["n_numbers"] == sum(map(len, truths)) and result["n_correct"] == result["n_numbers"]


def test_probe_selection_does_not_depend_on_file_order(val_path):
    records = read_validation(val_path)
    assert select_probes(records, 4) == select_probes(list(reversed(records)), 4)
    assert len(select_probes(records, 99)) == len(records)


def test_probe_size_none_probes_every_record_in_file_order(val_path):
    records = read_validation(val_path)
    assert select_probes(records, None) == records


def test_accuracy_is_reported_per_mode_and_closed_book_families_apart():
    from tasks.evaluation.probes import accuracy_of

    truth = [{"value": 100.0, "kind": "price"}]
    probes = [{"family": "close", "mode": "grounded"}, {"family": "close", "mode": "grounded"},
              {"family": "close", "mode": "closed_book"}]
    result = accuracy_of(["₹100.00", "₹100.00", "₹7.00"], probes, [truth] * 3, Config())
    assert result["accuracy_by_mode"] == {"grounded": 1.0, "closed_book": 0.0}
    assert result["accuracy"] == {"close": 1.0, "close (closed-book)": 0.0}
    assert result["accuracy_overall"] == pytest.approx(2 / 3)


def test_a_malformed_validation_file_fails_loudly(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_text(json.dumps({"id": "x", "family": "f", "truth": [], "messages": [{"role": "user", "content": "q"}]}))
    with pytest.raises(ValidationFileError, match=r"val.jsonl:1"):
        read_validation(path)


def test_ask_answers_with_the_promoted_adapter_not_the_base(tmp_path, tiny_model_dir, adapter, base):
    from peft import PeftModel

    from tasks.answering import ask
    from tasks.evaluation.generation import generate_answers

    fields = lineage(base_identity=str(tiny_model_dir), file_hash=hash_weight_files(tiny_model_dir))
    promoted = Registry(tmp_path).register(adapter, fields, decision(True, "base"), promote=True)
    question = "What was the latest close of NIFTY 50?"
    answer = ask(tmp_path, question, closed_book=True, max_new_tokens=8)
    assert answer.version == promoted.version and answer.grounding is None

    model, tokenizer = base
    prompt = [[{"role": "system", "content": Config().samples.closed_book_system_prompt},
               {"role": "user", "content": question}]]
    from_base = generate_answers(model, tokenizer, prompt, 8)[0]
    from transformers import AutoModelForCausalLM
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    from_adapter = generate_answers(with_adapter, tokenizer, prompt, 8)[0]
    assert from_adapter != from_base  # the two models differ on this prompt, so the test can tell
    assert answer.text == from_adapter


# ---- the number_accuracy metric, loaded by path through evaluate ------------------------------

def accuracy(prediction: str, truth: list[dict], **kw) -> dict:
    return load_number_accuracy().compute(predictions=[prediction], references=[truth], **kw)


def test_metric_exact_numbers_are_right():
    result = accuracy("NIFTY 50 closed at 12,056.05 points, up +0.53%.",
                      [{"value": 12056.05, "kind": "points"}, {"value": 0.53, "kind": "pct"}])
    assert (result["accuracy"], result["n_correct"], result["n_numbers"]) == (1.0, 2, 2)


def test_metric_numbers_within_tolerance_are_right():
    truth = [{"value": 2154.35, "kind": "price"}, {"value": 1.25, "kind": "pct"}]
    assert accuracy("₹2,160.00 and 1.30%", truth, price_tolerance=0.005, pct_tolerance=0.1)["accuracy"] == 1.0


def test_metric_numbers_outside_tolerance_are_wrong():
    truth = [{"value": 2154.35, "kind": "price"}, {"value": 1.25, "kind": "pct"}, {"value": 5, "kind": "count"}]
    result = accuracy("₹2,180.00 and 1.50% over 6 sessions", truth, price_tolerance=0.005, pct_tolerance=0.1)
    assert result["accuracy"] == 0.0


def test_metric_missing_numbers_count_as_wrong():
    truth = [{"value": 12056.05, "kind": "points"}, {"value": -1.25, "kind": "pct"}]
    assert accuracy("I do not know.", truth)["accuracy"] == 0.0
    assert accuracy("It closed at 12,056.05 points.", truth)["accuracy"] == 0.5


def test_metric_reads_indian_and_western_grouping_signs_and_units():
    truth = [{"value": 12345678.9, "kind": "volume"}, {"value": 12345678.9, "kind": "volume"},
             {"value": -1.25, "kind": "pct"}, {"value": 2500000, "kind": "volume"}, {"value": -42.5, "kind": "price"}]
    text = "Volume 1,23,45,678.90 (12,345,678.90), change −1.25%, 25 lakh shares, down ₹-42.50"
    assert accuracy(text, truth)["accuracy"] == 1.0


def test_metric_ignores_extra_numbers_and_keeps_the_order():
    truth = [{"value": 2154.35, "kind": "price"}, {"value": 0.53, "kind": "pct"}]
    assert accuracy("On 29 November 2019 TCS closed at Rs. 2,154.35, +0.53%.", truth)["accuracy"] == 1.0
    assert accuracy("+0.53% to ₹2,154.35", truth)["n_correct"] == 1  # wrong order: only one matches


def test_metric_reports_per_family_shares():
    result = load_number_accuracy().compute(
        predictions=["₹100", "₹7", "nothing"], families=["close", "close", "volume"],
        references=[[{"value": 100, "kind": "price"}], [{"value": 8, "kind": "price"}],
                    [{"value": 5, "kind": "volume"}]])
    assert result["per_family"] == {"close": 0.5, "volume": 0.0} and result["per_sample"] == [1.0, 0.0, 0.0]


def test_metric_unordered_counts_numbers_in_reversed_order():
    truth = [{"value": 2154.35, "kind": "price"}, {"value": 0.53, "kind": "pct"}]
    assert accuracy("+0.53% to ₹2,154.35", truth, ordered=False)["n_correct"] == 2


def test_metric_unordered_does_not_match_a_percentage_with_a_number_without_percent_sign():
    truth = [{"value": 1.25, "kind": "pct"}, {"value": 1.25, "kind": "price"}]
    assert accuracy("It closed at ₹1.25.", truth, ordered=False)["n_correct"] == 1
    assert accuracy("It moved 1.25%.", truth, ordered=False)["n_correct"] == 1
    assert accuracy("₹1.25, 1.25%", truth, ordered=False)["n_correct"] == 2


def test_metric_unordered_uses_each_answer_number_once():
    truth = [{"value": 100, "kind": "price"}, {"value": 100, "kind": "price"}]
    assert accuracy("₹100", truth, ordered=False)["n_correct"] == 1
