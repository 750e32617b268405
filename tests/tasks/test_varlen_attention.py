"""The varlen attention (`tasks.training.varlen_attention`): conversation boundaries, refusals, and a
training run through it. Its CPU path runs here; the flash kernel is compared with flex attention
and unpacked batches on the GPU by `benchmarks/train_throughput.py packcheck`. Packed equals
unpacked is in test_training_packing.py."""
from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from tasks.training import varlen_attention
from tasks.config import load_config
from tasks.training.train import train_adapter
from tests.tasks.test_training import keep_trainer, tiny_config, write_samples  # noqa: F401 (fixture)


def test_segment_bounds_start_a_conversation_at_every_position_zero():
    cu, longest = varlen_attention.segment_bounds(torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3, 0]]))
    assert cu.tolist() == [0, 3, 5, 9, 10] and cu.dtype == torch.int32 and longest == 4
    # A row that does not start at position 0 (a continuation) still starts a segment at 0.
    cu, longest = varlen_attention.segment_bounds(torch.tensor([5, 6, 0, 1]))
    assert cu.tolist() == [0, 2, 4] and longest == 2


def test_varlen_without_packing_is_refused_by_the_config():
    with pytest.raises(ValidationError, match="varlen.*packing: true"):
        load_config("gpu", overrides={"training.attn_implementation": "varlen", "training.packing": False})
    assert load_config("gpu", overrides={"training.attn_implementation": "varlen"}).training.packing


def test_cpu_needs_no_flash_kernel_and_an_old_gpu_is_refused_naming_the_way_out(monkeypatch):
    varlen_attention.check_device("cpu")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    with pytest.raises(varlen_attention.VarlenAttentionError, match="Tesla T4 is 7.5: use flex_attention"):
        varlen_attention.check_device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    varlen_attention.check_device("cuda")


@pytest.fixture
def varlen_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    varlen_attention.register()
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32,
                                                attn_implementation=varlen_attention.NAME).eval()


def test_a_padded_batch_is_refused_naming_the_problem(varlen_model):
    ids = torch.tensor([[5, 17, 42, 99], [5, 17, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with pytest.raises(varlen_attention.VarlenAttentionError, match="padded batch"):
        varlen_model(input_ids=ids, attention_mask=mask)


def test_unpacked_forward_and_cached_decoding_equal_sdpa(varlen_model, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    ids = torch.tensor([[5, 17, 42, 99, 123, 7, 250, 31]])
    with torch.no_grad():
        torch.testing.assert_close(varlen_model(input_ids=ids).logits, sdpa(input_ids=ids).logits,
                                   rtol=1e-5, atol=1e-5)
        greedy = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert varlen_model.generate(ids, **greedy).tolist() == sdpa.generate(ids, **greedy).tolist()


def test_training_runs_packed_batches_through_the_varlen_segments(tmp_path, tiny_model_dir, keep_trainer,  # noqa: F811
                                                                  monkeypatch):
    from peft import PeftModel

    from tasks.training.base_model import load_base

    calls = []
    real = varlen_attention._sdpa_segments
    monkeypatch.setattr(varlen_attention, "_sdpa_segments",
                        lambda q, k, v, cu, scaling: calls.append((len(cu) - 1, q.requires_grad))
                        or real(q, k, v, cu, scaling))
    cfg = tiny_config(tiny_model_dir, packing=True, attn_implementation="varlen", max_steps=4, eval_steps=2,
                      lora_dropout=0.0)
    cand = train_adapter(tmp_path / "home", cfg, write_samples(tmp_path / "samples"), run_id="run-1", progress=False)

    losses = [e["eval_loss"] for e in json.loads(cand.training_json.read_text())["eval_losses"]]
    assert len(losses) == 3 and all(x == x for x in losses) and cand.best_eval_loss < cand.initial_eval_loss
    # Trained (with gradients) and evaluated on packed rows of several conversations each.
    assert any(n > 1 and grad for n, grad in calls) and any(n > 1 and not grad for n, grad in calls)
    # The adapter scores through sdpa afterwards, with the logits it had in training.
    ids = torch.tensor([[5, 17, 42, 99, 123, 7, 250, 31]])
    with torch.no_grad():
        before = keep_trainer[0].model.eval()(input_ids=ids).logits
        base, _ = load_base(cand.base, cfg.training, for_training=False)
        assert base.config._attn_implementation == "sdpa"
        after = PeftModel.from_pretrained(base, cand.adapter_dir).eval()(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_flash_path_hands_the_kernel_half_precision_and_returns_the_input_dtype(varlen_model, monkeypatch, dtype):
    """peft's LoRA layers over a 4-bit base with upcast norms give float32 q/k/v, which the flash
    kernel refuses ("FlashAttention only support fp16 and bf16", seen on the H100): they go in as
    half precision. Here a stand-in kernel checks what it gets and computes with SDPA."""
    seen = []

    def kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=None, **extra):
        assert window_size == (-1, 0) and torch.equal(cu_q, cu_k) and max_q == max_k == 5
        seen.append((q.dtype, k.dtype, v.dtype, q.shape[1] // k.shape[1]))
        return varlen_attention._sdpa_segments(q, k, v, cu_q, scale)

    monkeypatch.setattr(varlen_attention, "_use_flash", lambda query: True)
    monkeypatch.setattr(varlen_attention, "_kernel", lambda: kernel)
    monkeypatch.setattr(varlen_attention, "_kernel_options", lambda: ({"window_size": (-1, 0)}, False))
    monkeypatch.setattr(varlen_attention, "_half_dtype", lambda: torch.bfloat16)
    model = varlen_model.to(dtype)
    ids, pos = torch.tensor([[5, 17, 42, 99, 123, 7, 250, 31]]), torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4]])
    cu = torch.tensor([0, 3, 8], dtype=torch.int32)
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=5,
                       max_length_k=5).logits
    assert seen and all(s == (torch.bfloat16, torch.bfloat16, torch.bfloat16, 2) for s in seen)
    assert logits.dtype == dtype and torch.isfinite(logits).all()
