"""Training a fresh adapter on the tiny model: LoRA and QLoRA, reload, early stopping, NaN guard."""
from __future__ import annotations

import importlib.util
import json
import random
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import torch

from tasks.config import Config, load_config
from tasks.training.fused_lora import _fused_forward
from tasks.training.train import NonFiniteLossError, TrainingError, format_candidate, train_adapter

NAMES = ["NIFTY 50", "SENSEX", "TCS", "Infosys", "HDFC Bank", "ICICI Bank", "Reliance Industries"]
SYSTEM = "You are niftytune, an assistant for the Indian stock market."


@dataclass(frozen=True)
class FakeSampleSet:
    """The fields of tasks.samples.build.SampleSet that training reads."""

    session: date
    dir: Path
    train_path: Path
    val_path: Path
    train_hash: str = "train-hash"
    val_hash: str = "val-hash"
    content_hash: str = "content-hash"


def conversation(i: int, name: str, answer: str, split: str) -> dict:
    """One sample in the real JSONL schema."""
    return {"id": f"{split}-{i}", "family": "close", "template": "t0", "tickers": [name],
            "session": "2019-11-29", "split": split, "truth": [],
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": f"What is the latest close of {name}?"},
                         {"role": "assistant", "content": answer}]}


def learnable_answer(name: str) -> str:
    return f"The latest close of {name} was 12,056.05 points, up +0.53% on the day."


def random_answer(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789 abcdefghijklmnopqrstuvwxyz.,%+-") for _ in range(60))


def write_samples(folder: Path, *, n_train: int = 24, n_val: int = 8, val_random: bool = False) -> FakeSampleSet:
    """A train/val JSONL pair: the answers follow one pattern; a random-answer val set stops improving."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    train = [conversation(i, NAMES[i % len(NAMES)], learnable_answer(NAMES[i % len(NAMES)]), "train")
             for i in range(n_train)]
    val = [conversation(i, NAMES[i % len(NAMES)],
                        random_answer(rng) if val_random else learnable_answer(NAMES[i % len(NAMES)]), "val")
           for i in range(n_val)]
    for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return FakeSampleSet(session=date(2019, 11, 29), dir=folder, train_path=folder / "train.jsonl",
                         val_path=folder / "val.jsonl")


def tiny_config(model_dir: Path, **training) -> Config:
    """The cpu profile pointed at a tiny model, with a few fast steps."""
    fast = {"compute_dtype": "float32",  # the same numbers on every CPU (auto picks bf16 where native)
            "max_steps": 12, "eval_steps": 4, "logging_steps": 2, "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 8, "max_length": 128, "learning_rate": 5e-3, "lora_r": 4,
            "lora_alpha": 8, "warmup_ratio": 0.0, "early_stopping_patience": 3, **training}
    return load_config("cpu", overrides={"training.base_model": str(model_dir),
                                         **{f"training.{k}": v for k, v in fast.items()}})


def lora_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(adapter_dir / "adapter_model.safetensors")


@pytest.fixture
def keep_trainer(monkeypatch) -> list:
    """Record the SFTTrainer that train_adapter builds, to compare its in-memory model."""
    import tasks.training.train as training

    kept, build = [], training._build_trainer

    def recording(*args, **kwargs):
        kept.append(build(*args, **kwargs))
        return kept[-1]

    monkeypatch.setattr(training, "_build_trainer", recording)
    return kept


def test_without_evaluation_during_training_the_last_step_is_the_candidate(tmp_path, tiny_model_dir, keep_trainer):
    """eval_steps null (the cpu profile): no evaluation, no checkpoint, the adapter after the last
    step is saved; training.json says so and leaves the losses to scoring."""
    samples = write_samples(tmp_path / "samples")
    cfg = tiny_config(tiny_model_dir, eval_steps=None, max_steps=6)
    cand = train_adapter(tmp_path / "home", cfg, samples, run_id="run-1", progress=False)
    record = json.loads(cand.training_json.read_text())
    assert record["evaluated_during_training"] is False and record["eval_losses"] == []
    assert (record["initial_eval_loss"], record["best_eval_loss"]) == (None, None) == (cand.initial_eval_loss,
                                                                                       cand.best_eval_loss)
    assert record["best_step"] == record["steps_trained"] == cand.best_step == 6 and record["samples"]["n_val"] > 0
    trainer = keep_trainer[0]
    assert trainer.eval_dataset is None and not any("eval_loss" in e for e in trainer.state.log_history)
    assert sorted(p.name for p in cand.run_dir.iterdir()) == ["adapter"]  # no checkpoint was written
    saved = lora_tensors(cand.adapter_dir)  # the in-memory model after step 6, as saved
    live = {n.replace(".default", ""): p for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert saved and all(torch.equal(saved[n].cpu(), live[n].detach().cpu()) for n in saved if n in live)
    assert len([n for n in saved if n in live]) == len(saved)
    assert "no evaluation during training (6 steps)" in format_candidate(cand)


@pytest.mark.parametrize("load_in_4bit,fused,upcast", [(False, False, True), (True, False, True), (True, True, True),
                                                     (True, True, False)],
                         ids=["lora", "qlora-4bit", "qlora-4bit-fused", "qlora-4bit-fused-no-upcast"])
def test_adapter_trains_and_reloads_with_the_same_logits(tmp_path, tiny_model_dir, keep_trainer, load_in_4bit,
                                                         fused, upcast):
    from peft import PeftModel

    from tasks.training.base_model import load_base

    samples = write_samples(tmp_path / "samples")
    # fused: trained through tasks.training.fused_lora, reloaded through peft's own layers.
    cfg = tiny_config(tiny_model_dir, load_in_4bit=load_in_4bit, fused_lora=fused, lora_dropout=0.0 if fused else 0.05,
                      upcast_unquantized=upcast)
    cand = train_adapter(tmp_path / "home", cfg, samples, run_id="run-1", progress=False)

    record = json.loads(cand.training_json.read_text())
    losses = [e["eval_loss"] for e in record["eval_losses"]]
    assert all(map(lambda x: x == x and abs(x) < float("inf"), losses)) and len(losses) == 4
    assert cand.best_eval_loss < cand.initial_eval_loss == losses[0]
    assert record["tokens_seen"] > 0 and record["base_model"]["file_hash"] == cand.base.file_hash
    assert set(record["wall_seconds"]) >= {"load", "quantize", "train", "save"}
    # LoRA B starts at zero: non-zero B matrices mean the optimizer changed the adapter.
    saved = lora_tensors(cand.adapter_dir)
    b_norms = [t.norm().item() for name, t in saved.items() if "lora_B" in name]
    assert b_norms and all(n > 0 for n in b_norms)
    for name in ("adapter_config.json", "tokenizer.json", "chat_template.jinja", "training.json"):
        assert (cand.adapter_dir / name).is_file(), name
    assert sorted(p.name for p in cand.run_dir.iterdir()) == ["adapter"]  # checkpoints pruned

    ids = torch.tensor([[5, 17, 42, 99, 123, 7, 250, 31]])
    trained = keep_trainer[0].model.eval()
    routed = [m for m in trained.modules() if getattr(m.forward, "__func__", None) is _fused_forward]
    assert len(routed) == (14 if fused else 0)
    frozen = [p for n, p in trained.named_parameters() if "lora_" not in n and p.dtype.is_floating_point]
    assert frozen and not any(p.requires_grad for p in frozen)  # only the adapters train, upcast or not
    with torch.no_grad():
        before = trained(input_ids=ids).logits
        base, _ = load_base(cand.base, cfg.training, for_training=False)
        reloaded = PeftModel.from_pretrained(base, cand.adapter_dir).eval()
        after = reloaded(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_early_stopping_ends_training_when_validation_stops_improving(tmp_path, tiny_model_dir):
    samples = write_samples(tmp_path / "samples", val_random=True)
    cfg = tiny_config(tiny_model_dir, max_steps=60, eval_steps=2, early_stopping_patience=2,
                      learning_rate=2e-2, logging_steps=2)
    cand = train_adapter(tmp_path / "home", cfg, samples, progress=False)
    record = json.loads(cand.training_json.read_text())
    assert record["stopped_early"] and record["steps_trained"] < record["max_steps"] == 60
    assert cand.best_step < record["steps_trained"]
    assert record["steps_trained"] - cand.best_step == 2 * 2  # patience evaluations, 2 steps apart
    assert cand.best_eval_loss == min(e["eval_loss"] for e in record["eval_losses"][1:])


def test_the_saved_adapter_is_the_best_checkpoints_not_the_last_steps(tmp_path, tiny_model_dir):
    """load_best_model_at_end: after early stopping the adapter written is the one of the best
    evaluation, not the one training ended with."""
    from peft import get_peft_model_state_dict
    from transformers import TrainerCallback

    at_eval: dict[int, dict[str, torch.Tensor]] = {}

    class AdapterAtEachEvaluation(TrainerCallback):
        def on_evaluate(self, args, state, control, model=None, **kwargs):
            at_eval[state.global_step] = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}

    samples = write_samples(tmp_path / "samples", val_random=True)
    cfg = tiny_config(tiny_model_dir, max_steps=60, eval_steps=2, early_stopping_patience=2,
                      learning_rate=2e-2, logging_steps=2)
    cand = train_adapter(tmp_path / "home", cfg, samples, progress=False, callbacks=[AdapterAtEachEvaluation()])
    last = json.loads(cand.training_json.read_text())["steps_trained"]
    assert cand.best_step < last and set(at_eval) >= {cand.best_step, last}
    saved = lora_tensors(cand.adapter_dir)
    assert set(saved) == set(at_eval[last])
    assert all(torch.equal(saved[k], at_eval[cand.best_step][k]) for k in saved)
    assert not all(torch.equal(saved[k], at_eval[last][k]) for k in saved)


def test_non_finite_loss_stops_training_and_leaves_no_run_dir(tmp_path, tiny_model_dir):
    samples = write_samples(tmp_path / "samples")
    cfg = tiny_config(tiny_model_dir, learning_rate=1e30, max_steps=8, logging_steps=1)
    home = tmp_path / "home"
    with pytest.raises(NonFiniteLossError, match="became"):
        train_adapter(home, cfg, samples, run_id="doomed", progress=False)
    assert list((home / "runs").iterdir()) == []


def test_failed_run_removes_its_run_dir(tmp_path, tiny_model_dir):
    samples = write_samples(tmp_path / "samples")
    samples.val_path.write_text("")  # nothing to evaluate on
    home = tmp_path / "home"
    with pytest.raises(TrainingError, match="no conversations"):
        train_adapter(home, tiny_config(tiny_model_dir), samples, run_id="empty", progress=False)
    assert not (home / "runs" / "empty").exists()


def test_existing_run_id_is_refused_and_left_alone(tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    (home / "runs" / "taken").mkdir(parents=True)
    (home / "runs" / "taken" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        train_adapter(home, tiny_config(tiny_model_dir), write_samples(tmp_path / "s"), run_id="taken")
    assert (home / "runs" / "taken" / "keep.txt").is_file()


def test_a_profile_needing_liger_fails_before_any_work_when_it_is_not_installed(tmp_path, tiny_model_dir, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "liger_kernel" else real_find_spec(name, *a))
    cfg = tiny_config(tiny_model_dir)
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"use_liger_kernel": True})})
    home = tmp_path / "home"
    with pytest.raises(TrainingError, match=r"liger-kernel is not installed: pip install -e '\.\[gpu\]'"):
        train_adapter(home, cfg, write_samples(tmp_path / "s"), progress=False)
    assert not home.exists()
