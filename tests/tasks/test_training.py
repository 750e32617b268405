"""Training a fresh adapter on the tiny model: LoRA and QLoRA, reload, early stopping, NaN guard."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import torch

from tasks.config import Config, load_config
from tasks.training import NonFiniteLossError, train_adapter

NAMES = ["NIFTY 50", "SENSEX", "TCS", "Infosys", "HDFC Bank", "ICICI Bank", "Reliance Industries"]
SYSTEM = "You are niftytune, an assistant for the Indian stock market."


@dataclass(frozen=True)
class FakeSampleSet:
    """The fields of tasks.samples.SampleSet that training reads."""

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
    fast = {"max_steps": 12, "eval_steps": 4, "logging_steps": 2, "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 8, "max_length": 128, "learning_rate": 5e-3, "lora_r": 4,
            "lora_alpha": 8, "warmup_ratio": 0.0, "early_stopping_patience": 3, **training}
    return load_config("cpu", overrides={"training.base_model": str(model_dir),
                                         **{f"training.{k}": v for k, v in fast.items()}})
