"""The fused LoRA layers compute what peft's layers compute: the same loss, the same gradient for
every adapter weight, for plain and 4-bit bases; layers that are not plain LoRA keep peft's path."""
from __future__ import annotations

import pytest
import torch

from tasks.training.base_model import load_base, resolve_base_model
from tasks.training.fused_lora import CACHE_ATTR, LoraLinearFunction, fuse_lora_layers
from tasks.training.train import build_lora_config
from tests.tasks.test_training import tiny_config


def peft_model(model_dir, tmp_path, *, load_in_4bit: bool, dropout: float = 0.0):
    """The tiny model with fresh LoRA adapters whose B matrices are random (B = 0 at init would
    make every A gradient zero and hide a wrong one)."""
    from peft import get_peft_model

    cfg = tiny_config(model_dir, load_in_4bit=load_in_4bit, lora_dropout=dropout)
    model, _ = load_base(resolve_base_model(cfg.training, tmp_path / "home"), cfg.training, for_training=True)
    model = get_peft_model(model, build_lora_config(cfg.training))
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    return model


def loss_and_grads(model) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    ids = torch.randint(5, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("load_in_4bit", [False, True], ids=["lora", "qlora-4bit"])
def test_fused_layers_give_peft_loss_and_every_adapter_gradient(tiny_model_dir, tmp_path, load_in_4bit, monkeypatch):
    model = peft_model(tiny_model_dir, tmp_path, load_in_4bit=load_in_4bit)
    ref_loss, ref_grads = loss_and_grads(model)

    calls = []
    apply = LoraLinearFunction.apply
    monkeypatch.setattr(LoraLinearFunction, "apply", lambda *a: calls.append(1) or apply(*a))
    assert fuse_lora_layers(model) == 2 * 7  # seven projections in each of the two layers
    loss, grads = loss_and_grads(model)

    assert len(calls) == 14
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) == 28
    for name, grad in grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_layers_with_dropout_keep_peft_forward(tiny_model_dir, tmp_path, monkeypatch):
    model = peft_model(tiny_model_dir, tmp_path, load_in_4bit=False, dropout=0.3).train()
    torch.manual_seed(7)
    ref_loss, _ = loss_and_grads(model)

    calls = []
    apply = LoraLinearFunction.apply
    monkeypatch.setattr(LoraLinearFunction, "apply", lambda *a: calls.append(1) or apply(*a))
    fuse_lora_layers(model)
    torch.manual_seed(7)
    loss, _ = loss_and_grads(model)
    assert calls == [] and loss == pytest.approx(ref_loss, rel=1e-6)  # the same dropout masks were drawn


def test_disabled_adapters_give_the_base_model(tiny_model_dir, tmp_path):
    model = peft_model(tiny_model_dir, tmp_path, load_in_4bit=False).eval()
    fuse_lora_layers(model)
    cfg = tiny_config(tiny_model_dir)
    plain, _ = load_base(resolve_base_model(cfg.training, tmp_path / "home"), cfg.training, for_training=False)
    ids = torch.tensor([[5, 17, 42, 99, 123, 7]])
    with torch.no_grad():
        with_adapter = model(input_ids=ids).logits
        with model.disable_adapter():
            without = model(input_ids=ids).logits
        base = plain(input_ids=ids).logits
    assert not torch.allclose(with_adapter, base, atol=1e-4)
    torch.testing.assert_close(without, base)


def test_cached_dequantised_base_gives_the_same_loss_and_gradients_and_dequantises_once(tiny_model_dir, tmp_path,
                                                                                       monkeypatch):
    """`cache_dequantized_base`: each 4-bit weight dequantised on first use and kept; the numbers
    are those of dequantising in every pass."""
    import bitsandbytes.functional as bnbf

    model = peft_model(tiny_model_dir, tmp_path, load_in_4bit=True)
    fuse_lora_layers(model)
    ref_loss, ref_grads = loss_and_grads(model)

    calls = []
    dequantize = bnbf.dequantize_4bit
    monkeypatch.setattr(bnbf, "dequantize_4bit", lambda *a, **k: calls.append(1) or dequantize(*a, **k))
    assert fuse_lora_layers(model, cache_base=True) == 14
    first_loss, first_grads = loss_and_grads(model)
    assert len(calls) == 14  # forward dequantised each layer once; backward used the copies
    loss, grads = loss_and_grads(model)
    assert len(calls) == 14  # the second step dequantised nothing
    assert loss == first_loss == pytest.approx(ref_loss, rel=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
        assert torch.equal(grad, first_grads[name]), name
    kept = [m.get_base_layer() for m in model.modules() if hasattr(m, "get_base_layer") and m is not model]
    cached = [layer.__dict__[CACHE_ATTR] for layer in kept if CACHE_ATTR in layer.__dict__]
    assert len(cached) == 14 and all(isinstance(t, torch.Tensor) for t in cached)
    assert CACHE_ATTR not in "".join(model.state_dict())  # never saved with the model


def test_without_caching_every_pass_dequantises(tiny_model_dir, tmp_path, monkeypatch):
    import bitsandbytes.functional as bnbf

    model = peft_model(tiny_model_dir, tmp_path, load_in_4bit=True)
    fuse_lora_layers(model)
    calls = []
    dequantize = bnbf.dequantize_4bit
    monkeypatch.setattr(bnbf, "dequantize_4bit", lambda *a, **k: calls.append(1) or dequantize(*a, **k))
    loss_and_grads(model)
    # Forward in each of the 14 layers, backward in 11: the first layer's q, k and v read the
    # frozen embeddings, which need no input gradient.
    assert len(calls) == 14 + 11
