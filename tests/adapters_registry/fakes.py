"""Fakes for registry tests: adapter folders (byte stand-ins or real tiny LoRA adapters),
lineage records and decisions, built by the tests, never downloaded."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tasks.config import Config

FAKE_FILES = ("adapter_model.safetensors", "adapter_config.json", "tokenizer_config.json", "tokenizer.json",
              "chat_template.jinja", "training.json")
VAL_HASH = hashlib.sha256(b"val.jsonl").hexdigest()


def make_fake_adapter(folder: Path, seed: int = 0, size: int = 4096) -> Path:
    """A folder shaped like a training run's adapter/ (weights are seeded bytes, not a model)."""
    folder.mkdir(parents=True, exist_ok=True)
    blob = hashlib.sha256(f"weights-{seed}".encode()).digest() * (size // 32)
    (folder / "adapter_model.safetensors").write_bytes(blob)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "seed": seed}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    (folder / "training.json").write_text(json.dumps({"seed": seed, "eval_losses": [1.0, 0.9]}))
    (folder / "README.md").write_text("peft model card (not registered)")
    return folder


def make_lora_adapter(model_dir: Path, folder: Path, seed: int = 0) -> Path:
    """A real LoRA adapter of the tiny model with non-zero B matrices, so it changes the loss."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                      init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(folder)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)
    return folder


def scores(candidate: float, base: float = 2.0, champion: float | None = None, val_hash: str = VAL_HASH) -> dict:
    models = {"base": {"loss": base, "n_tokens": 100}, "candidate": {"loss": candidate, "n_tokens": 100}}
    if champion is not None:
        models["champion"] = {"loss": champion, "n_tokens": 100}
    return {"val_hash": val_hash, "val_path": "samples/2019-11-29/val.jsonl", "n_samples": 10, "n_tokens": 100,
            "models": models}


def lineage(candidate: float = 1.0, *, base_identity: str = "tests/tiny", file_hash: str | None = None,
            session: str = "2019-11-29", **score_kw: Any) -> dict[str, Any]:
    """The manifest fields the daily flow passes to `Registry.register`."""
    return {
        "base_model": {"identity": base_identity, "revision": None, "file_hash": file_hash, "source": "local"},
        "config": Config().model_dump(mode="json"),
        "scores": scores(candidate, **score_kw),
        "data_window": {"^NSEI": {"start": "2018-09-10", "end": session}},
        "sample_hashes": {"train": "a" * 64, "val": "b" * 64},
        "seed": 42, "flow_run_id": "flow-run-1", "session": session,
    }


def decision(promote: bool, baseline: str = "champion") -> dict[str, Any]:
    """A gate decision as a dict (the registry takes a `Decision` or its dict); no prefect import,
    so writer subprocesses start fast."""
    return {"promote": promote, "reason": "promoted: test" if promote else "not promoted: test",
            "baseline": baseline, "delta": 0.1 if promote else -0.1, "min_delta": 0.005}
