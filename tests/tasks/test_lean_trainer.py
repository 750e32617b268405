"""The lean trainer (tasks.training.lean_trainer) trains exactly what trl's SFTTrainer trains: the
same losses at every step, the same validation losses, the same adapter, the same token count,
the same logged entropy and token accuracy; padded and packed (padding-free) batches."""
from __future__ import annotations

import contextlib
import json

import pytest
import torch

import tasks.training.lean_trainer as lean
from tasks.training.train import train_adapter
from tests.tasks.test_training import lora_tensors, tiny_config, write_samples

COMPARED = ("loss", "eval_loss", "entropy", "mean_token_accuracy", "num_tokens", "num_input_tokens_seen",
            "eval_entropy", "eval_mean_token_accuracy", "grad_norm")


def run(tmp_path, model_dir, name: str, use_lean: bool, monkeypatch, **training) -> tuple[list[dict], dict, dict]:
    import tasks.training.train as training_module

    monkeypatch.setattr(lean, "LEAN", use_lean)
    deferred, add = [], lean.LeanSFTTrainer._add
    monkeypatch.setattr(lean.LeanSFTTrainer, "_add", lambda self, mode, **v: deferred.append(mode) or add(self, mode, **v))
    kept, build = [], training_module._build_trainer
    monkeypatch.setattr(training_module, "_build_trainer", lambda *a, **k: kept.append(build(*a, **k)) or kept[-1])
    samples = write_samples(tmp_path / f"samples-{name}", n_train=20)
    # logging every step: trl's per-step averages and the lean per-window ones are then the same
    cfg = tiny_config(model_dir, max_steps=6, eval_steps=3, logging_steps=1, **training)
    cand = train_adapter(tmp_path / f"home-{name}", cfg, samples, run_id=name, progress=False)
    trainer = kept[0]
    assert isinstance(trainer, lean.LeanSFTTrainer) == use_lean
    # the lean path took every training step and every validation batch (none went to trl's)
    assert (deferred.count("train") >= 6 and "eval" in deferred) if use_lean else not deferred
    logs = [{k: v for k, v in entry.items() if k in COMPARED} for entry in trainer.state.log_history]
    return logs, lora_tensors(cand.adapter_dir), json.loads(cand.training_json.read_text())


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_lean_trainer_trains_what_trl_trains(tmp_path, tiny_model_dir, monkeypatch, packing):
    extra = {"packing": True, "attn_implementation": "sdpa"} if packing else {}
    ref_logs, ref_adapter, ref_record = run(tmp_path, tiny_model_dir, "trl", False, monkeypatch, **extra)
    logs, adapter, record = run(tmp_path, tiny_model_dir, "lean", True, monkeypatch, **extra)

    train_logs = [e for e in logs if "loss" in e]
    assert len(train_logs) == 6 and len([e for e in logs if "eval_loss" in e]) == 3  # steps 0, 3, 6
    assert all(0 <= e["mean_token_accuracy"] <= 1 and e["entropy"] > 0 for e in train_logs)
    assert len(logs) == len(ref_logs)
    for got, want in zip(logs, ref_logs):
        assert got.keys() == want.keys()
        for key in got:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), (key, got, want)
    assert record["tokens_seen"] == ref_record["tokens_seen"] > 0
    assert adapter.keys() == ref_adapter.keys()
    for name in adapter:
        torch.testing.assert_close(adapter[name], ref_adapter[name], rtol=1e-5, atol=1e-7, msg=name)


def test_a_nan_loss_is_logged_as_nan_not_hidden(tmp_path, tiny_model_dir):
    """With transformers' NaN filter off, a non-finite step loss reaches the log (where
    NonFiniteLossError stops the run) instead of being replaced by an average of earlier ones."""
    from tasks.training.train import build_sft_config

    args = build_sft_config(tiny_config(tiny_model_dir), tmp_path / "out", compute_dtype=torch.float32,
                            progress=False)
    assert args.logging_nan_inf_filter is False


def test_the_cpu_head_scores_only_labelled_positions(tiny_model_dir, monkeypatch):
    """On the CPU the lean trainer's LM head projects only the positions with a label (trl scores
    every position there), with the same loss and gradients as trl's full projection."""
    import trl.trainer.utils as trl_utils
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    rows_seen: list[int] = []
    apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                        lambda hidden, *rest: rows_seen.append(hidden.shape[0]) or apply(hidden, *rest))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trl_utils.add_fused_lm_head(model)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    ids = torch.randint(3, model.config.vocab_size, (2, 24))
    labels = torch.full_like(ids, -100)
    labels[0, 18:], labels[1, 10:14] = ids[0, 18:], ids[1, 10:14]  # 10 labelled positions
    results = []
    for compact in (False, True):
        model.zero_grad()
        with lean.compact_lm_head("cpu") if compact else contextlib.nullcontext():
            out = model(input_ids=ids, labels=labels, fused_lm_head=True, use_cache=False)
        loss = (-out.log_probs).sum() / out.label_mask.sum()
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    assert rows_seen == [2 * 23, 10]  # every shifted position, then the labelled ones only
    assert trl_utils._use_triton(torch.device("cpu")) is False  # put back after the block
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for full, compact in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(full, compact, rtol=1e-6, atol=1e-7)
