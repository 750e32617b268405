"""The benchmarks' hooks into the product still fit it: a renamed function or config field would
otherwise surface only on the GPU machine, as a row that fails after the machine was paid for."""
from __future__ import annotations

import pytest

import tasks.training.train as training
from benchmarks import train_throughput
from tasks.config import load_config


@pytest.mark.parametrize("name", train_throughput.TRAIN_PARTS)
def test_every_timed_training_function_exists(name):
    assert callable(getattr(training, name, None)), name


@pytest.mark.parametrize("variant", sorted(train_throughput.VARIANTS))
def test_every_variant_sets_real_config_fields(variant):
    overrides = train_throughput.VARIANTS[variant]
    cfg = load_config("gpu", {"training.lora_dropout": 0.0, **overrides})  # validates every key and value
    for key, value in overrides.items():
        section, field = key.split(".")
        assert getattr(getattr(cfg, section), field) == value, key


def test_the_lean_trainer_and_liger_hooks_exist():
    import tasks.training.lean_trainer as lean

    assert isinstance(lean.LEAN, bool) and training.LIGER_KERNEL_CONFIG is None
