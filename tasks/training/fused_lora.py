"""Fused LoRA linear layers for training: the same function as peft's LoRA forward, in fewer
passes over the activations.

    n = fuse_lora_layers(peft_model)      # after SFTTrainer wrapped the model in peft

peft computes a LoRA linear as `result = base(x).clone(); result = result + lora_B(lora_A(x)) * s`
(the clone is peft's defensive copy for 4-bit layers). On a packed batch of 16k tokens each of
those is a full pass over a [tokens x out_features] tensor, and backward adds a scaled copy of
the gradient and a separate [tokens x in_features] input gradient that autograd then sums:
for a 1.1B model that is ~100 GB of memory traffic per step spent on a rank-16 correction.
`LoraLinearFunction` writes the base output once and adds the low-rank term into it in place
(`addmm_`), and in backward accumulates the low-rank input gradient into the base one, so the
adapter costs two thin matmuls each way and no full-size temporaries. The math is unchanged
(tests/tasks/test_fused_lora.py compares losses and every gradient with peft's path).

Only plain LoRA layers are fused: one active adapter, no dropout, no DoRA or other variant,
not merged; anything else keeps peft's forward. The adapters' parameters and their saved form
are peft's own, so `save_pretrained` and `PeftModel.from_pretrained` are unaffected.
"""
from __future__ import annotations

import logging
import types
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


CACHE_ATTR = "_niftytune_dequantized"
"""Where `fuse_lora_layers(..., cache_base=True)` keeps a 4-bit base layer's dequantised weight
(a plain attribute: not a parameter or buffer, so never saved or moved by `.to()`)."""


def base_weight(base: torch.nn.Linear, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The base layer's [out, in] weight in `dtype` (its own when None): dequantised for a
    bitsandbytes 4-bit layer (what its own matmul does on every call), the plain weight
    otherwise. A layer marked for caching dequantises once and keeps that copy."""
    weight = base.weight
    # bnb keeps the state on the parameter and a copy on the module (restored from it when lost).
    quant_state = getattr(weight, "quant_state", None) or getattr(base, "quant_state", None)
    if quant_state is None:
        return weight if dtype is None else weight.to(dtype)
    cached = base.__dict__.get(CACHE_ATTR, None)
    if cached is not None and (dtype is None or cached.dtype == dtype):
        return cached
    import bitsandbytes.functional as bnbf

    full = bnbf.dequantize_4bit(weight.data, quant_state)
    full = full if dtype is None else full.to(dtype)
    if CACHE_ATTR in base.__dict__:  # marked by fuse_lora_layers(cache_base=True): keep it
        base.__dict__[CACHE_ATTR] = full
    return full


class LoraLinearFunction(torch.autograd.Function):
    """y = x W^T + b + s (x A^T) B^T with W frozen; gradients for x, A and B."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, base: torch.nn.Linear, lora_a: torch.Tensor, lora_b: torch.Tensor,
                scaling: float) -> torch.Tensor:
        # Autocast would cast inside each op; the dtypes are fixed here once instead, and the
        # gradients are handed back in the dtypes of x, A and B.
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        with torch.autocast(device, enabled=False):
            xc = x.to(dtype)
            a, b = lora_a.to(dtype), lora_b.to(dtype)
            bias = None if base.bias is None else base.bias.to(dtype)
            y = F.linear(xc, base_weight(base, dtype), bias)
            u = F.linear(xc, a)
            y.view(-1, y.shape[-1]).addmm_(u.view(-1, u.shape[-1]), b.t(), alpha=scaling)
        ctx.base, ctx.scaling, ctx.dtype = base, scaling, dtype
        ctx.x_dtype, ctx.a_dtype, ctx.b_dtype = x.dtype, lora_a.dtype, lora_b.dtype
        ctx.save_for_backward(xc, u, a, b)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        xc, u, a, b = ctx.saved_tensors
        s, dtype = ctx.scaling, ctx.dtype
        with torch.autocast(grad.device.type, enabled=False):
            g = grad.reshape(-1, grad.shape[-1]).to(dtype)
            u2, x2 = u.view(-1, u.shape[-1]), xc.reshape(-1, xc.shape[-1])
            grad_b = torch.mm(g.t(), u2).mul_(s)  # [out, r]
            grad_u = torch.mm(g, b).mul_(s)  # [tokens, r]
            grad_a = torch.mm(grad_u.t(), x2)  # [r, in]
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_x = torch.mm(g, base_weight(ctx.base, dtype))
                grad_x.addmm_(grad_u, a)
                grad_x = grad_x.view(*grad.shape[:-1], grad_x.shape[-1]).to(ctx.x_dtype)
        return grad_x, None, grad_a.to(ctx.a_dtype), grad_b.to(ctx.b_dtype), None


def _fusable(layer: Any) -> bool:
    """Plain LoRA in its simplest form: one active adapter, dropout off, no variant, not merged."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return False
    name = layer.active_adapters[0]
    return (name in layer.lora_A and name not in getattr(layer, "lora_variant", {})
            and isinstance(layer.lora_dropout[name], torch.nn.Identity))


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    if args or kwargs or not _fusable(self):
        return type(self).forward(self, x, *args, **kwargs)
    name = self.active_adapters[0]
    return LoraLinearFunction.apply(x, self.get_base_layer(), self.lora_A[name].weight, self.lora_B[name].weight,
                                    self.scaling[name])


def fuse_lora_layers(model: torch.nn.Module, cache_base: bool = False) -> int:
    """Route every LoRA linear layer of `model` (peft `lora.Linear`, `lora.Linear4bit`) through
    `LoraLinearFunction`; layers that are not plain LoRA at call time keep peft's forward.
    `cache_base`: each 4-bit base weight is dequantised on first use and kept (training's
    `cache_dequantized_base`). Returns how many layers were routed."""
    from peft.tuners.lora import Linear as LoraLinear

    kinds: tuple[type, ...] = (LoraLinear,)
    try:
        from peft.tuners.lora.bnb import Linear4bit
        kinds += (Linear4bit,)
    except ImportError:  # peft without bitsandbytes: no 4-bit layers to fuse
        pass
    count = 0
    for module in model.modules():
        if type(module) in kinds:
            module.forward = types.MethodType(_fused_forward, module)
            if cache_base:
                module.get_base_layer().__dict__[CACHE_ATTR] = None  # type: ignore[operator]  # peft's method
            count += 1
    log.info("fused LoRA forward/backward in %d linear layers%s", count,
             ", 4-bit base weights dequantised once" if cache_base else "")
    return count
