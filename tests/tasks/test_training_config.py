"""The three profiles and the small builders that turn them into bitsandbytes, peft and trl configs."""
from __future__ import annotations

import sys

import pytest
import torch
import yaml
from pydantic import ValidationError

from tasks.training.base_model import build_bnb_config
from tasks.config import PROFILES_DIR, Config, load_config
from tasks.training.train import build_lora_config, build_sft_config

SEVEN = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_every_profile_is_complete_and_opens_with_its_command():
    for name in ("cpu", "gpu", "laptop-4gb"):
        text = (PROFILES_DIR / f"{name}.yaml").read_text()
        assert text.startswith("#") and f"niftytune train --profile {name}" in text.splitlines()[1]
        data = yaml.safe_load(text)
        for section, model in Config.model_fields.items():
            if section != "profile":
                assert set(data[section]) == set(model.annotation.model_fields), (name, section)


def test_cpu_profile_trains_plain_lora_in_fp32_within_the_demo_budget(tmp_path):
    cfg = load_config("cpu")
    t = cfg.training
    assert build_bnb_config(t, "cpu") is None and t.base_model == "embedded:smollm2-135m-instruct"
    assert cfg.market.source == "yahoo" and cfg.samples.max_train_samples and cfg.samples.max_val_samples
    assert t.max_steps * t.per_device_train_batch_size <= cfg.samples.max_train_samples
    assert t.eval_steps is None and t.max_length == 768  # a data sheet and its question: ~650 tokens
    args = build_sft_config(cfg, tmp_path, compute_dtype=torch.float32, progress=False)
    assert not args.bf16 and not args.fp16 and not args.packing and not args.gradient_checkpointing
    assert args.completion_only_loss is True and args.max_length == 768 and args.max_steps == t.max_steps
    # Scoring measures the validation losses; on 2 cores training does not evaluate or checkpoint.
    assert args.eval_strategy == args.save_strategy == "no" and not args.load_best_model_at_end
    assert not args.eval_on_start and args.report_to == []
    assert args.lr_scheduler_type == "cosine" and args.warmup_steps == t.warmup_ratio and args.seed == t.seed
    lora = build_lora_config(t)
    assert set(lora.target_modules) == SEVEN and (lora.r, lora.lora_alpha) == (t.lora_r, t.lora_alpha)
    assert lora.task_type == "CAUSAL_LM"


def test_gpu_profile_is_qlora_nf4_bf16_packed_without_checkpointing(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    t = load_config("gpu").training
    bnb = build_bnb_config(t, "cuda")
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
    assert bnb.bnb_4bit_compute_dtype == torch.bfloat16
    args = build_sft_config(load_config("gpu"), tmp_path, compute_dtype=torch.bfloat16, progress=False)
    assert args.bf16 and not args.fp16 and args.optim == "adamw_torch_fused"
    assert args.packing and args.padding_free and args.packing_strategy == "bfd"
    # varlen flash attention over the packed conversations; batches padded to multiples of 64 tokens.
    assert t.attn_implementation == "varlen" and args.pad_to_multiple_of == 64
    assert not args.gradient_checkpointing and args.max_length == 768
    assert args.per_device_train_batch_size >= 16 and args.per_device_eval_batch_size == 64


@pytest.mark.parametrize("bf16_card", [False, True], ids=["fp16-card", "bf16-card"])
def test_laptop_profile_fits_4gb_and_picks_the_half_precision_the_card_has(tmp_path, monkeypatch, bf16_card):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_card)
    cfg = load_config("laptop-4gb")
    dtype = torch.bfloat16 if bf16_card else torch.float16
    assert build_bnb_config(cfg.training, "cuda").bnb_4bit_compute_dtype == dtype
    args = build_sft_config(cfg, tmp_path, compute_dtype=dtype, progress=False)
    assert (args.bf16, args.fp16) == (bf16_card, not bf16_card)
    # Packed micro-batches of 8 rows x 512 tokens, accumulated twice; memory kept under 4 GiB by
    # 4-bit weights, checkpointing, paged 8-bit AdamW and Liger's fused loss (docs/PERFORMANCE.md).
    assert args.per_device_train_batch_size * args.max_length <= 8 * 512 and args.gradient_accumulation_steps == 2
    assert args.packing and args.padding_free and args.pad_to_multiple_of == 512
    assert args.gradient_checkpointing and args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert args.optim == "paged_adamw_8bit" and args.max_length == 768 and args.use_liger_kernel
    assert cfg.training.load_in_4bit and cfg.training.bnb_4bit_quant_type == "nf4"


def test_a_recorded_config_with_removed_fields_still_loads_with_new_defaults():
    from tasks.config import recorded_config

    old = Config().model_dump(mode="json")
    old["samples"]["val_recent_sessions"] = 5  # removed with grounded answering
    old["gate"].pop("max_accuracy_drop", None)
    cfg = recorded_config(old)
    assert not hasattr(cfg.samples, "val_recent_sessions")
    assert cfg.gate.max_accuracy_drop == Config().gate.max_accuracy_drop
    assert cfg.samples.closed_book_system_prompt == Config().samples.closed_book_system_prompt


def test_fused_lora_with_lora_dropout_is_refused_naming_both_keys():
    # Dropout on the LoRA path is not fused: the layers kept peft's forward while the log said "fused".
    with pytest.raises(ValidationError, match=r"training\.fused_lora.*training\.lora_dropout 0\.05"):
        load_config("cpu", {"training.fused_lora": True, "training.lora_dropout": 0.05})
    assert load_config("cpu", {"training.fused_lora": True, "training.lora_dropout": 0.0}).training.fused_lora


def test_a_recorded_config_with_fused_lora_and_dropout_loads_as_what_ran():
    """A manifest written before the check above stays askable: its layers were never fused."""
    from tasks.config import recorded_config

    old = Config().model_dump(mode="json")
    old["training"].update(fused_lora=True, lora_dropout=0.05)
    training = recorded_config(old).training
    assert (training.fused_lora, training.lora_dropout) == (False, 0.05)


def test_a_ticker_alias_in_the_config_is_kept():
    cfg = Config.model_validate({"market": {"tickers": [
        {"symbol": "TCS.NS", "name": "TCS", "kind": "stock", "aliases": ["Tata Consultancy"]}]}})
    assert cfg.market.tickers[0].aliases == ["Tata Consultancy"]


def test_default_profile_is_cpu_without_importing_torch_where_no_cuda_device_exists(monkeypatch):
    import tasks.config as config_module

    monkeypatch.setattr(config_module.sys, "platform", "linux")
    monkeypatch.setattr(config_module.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(config_module.os.path, "exists", lambda path: False)
    monkeypatch.setitem(sys.modules, "torch", None)  # importing torch now raises ImportError
    assert config_module._no_cuda_device() and config_module.default_profile() == "cpu"


@pytest.mark.parametrize("available", [True, False])
def test_default_profile_asks_torch_where_a_cuda_device_may_exist(monkeypatch, available):
    import types

    import tasks.config as config_module

    monkeypatch.setattr(config_module.glob, "glob", lambda pattern: ["/dev/nvidia0"])
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: available))
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert not config_module._no_cuda_device()
    assert config_module.default_profile() == ("gpu" if available else "cpu")
