"""Attention over packed padding-free batches with PyTorch's variable-length flash kernel.

trl's padding-free collator flattens a batch into one row and hands the model the boundaries
of its conversations (`cu_seq_lens_q/k`, `max_length_q/k`, computed on the CPU). With
`attn_implementation: varlen` each layer passes them to `torch.nn.attention.varlen.varlen_attn`
(flash attention over each conversation, causal, never across one; torch >= 2.10, CUDA with
compute capability 8.0 or newer). Nothing is compiled, unlike flex attention, so a fresh
machine's first run costs what later runs cost. Elsewhere (CPU, or a batch without the
boundaries) the same segments run through SDPA one conversation at a time: exact, slower, and
what the CPU tests check against unpacked batches.

A padded batch (a 2-D attention mask with zeros) is refused: scoring and answering load the
model with `sdpa` instead (`tasks.training.base_model.load_base`).
"""
from __future__ import annotations

import inspect
from functools import cache
from typing import Any

NAME = "varlen"


class VarlenAttentionError(RuntimeError):
    """The varlen attention cannot run this batch or on this device."""


def register() -> None:
    """Make `attn_implementation="varlen"` known to transformers (idempotent). The mask function is
    transformers' flash one: None for unpadded and packed batches, the 2-D mask when padded."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, flash_attention_mask)


def check_device(device: Any) -> None:
    """Raise VarlenAttentionError naming the problem when the flash varlen kernel cannot run on a
    CUDA device (too old a torch or GPU); CPU always passes (the SDPA path)."""
    import torch

    if torch.device(device).type != "cuda":
        return
    if _kernel() is None:
        raise VarlenAttentionError(
            f"attn_implementation 'varlen' needs torch >= 2.10 (torch.nn.attention.varlen); this is "
            f"torch {torch.__version__}: use flex_attention or sdpa")
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        raise VarlenAttentionError(
            f"attn_implementation 'varlen' needs flash attention (compute capability 8.0+); "
            f"{torch.cuda.get_device_name(device)} is {major}.{minor}: use flex_attention or sdpa")


@cache
def _kernel() -> Any:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@cache
def _kernel_options() -> tuple[dict[str, Any], bool]:
    """Keyword arguments for a causal call of this torch's varlen_attn (2.10 takes `is_causal`,
    later ones `window_size`), and whether it takes grouped K/V heads itself (`enable_gqa`)."""
    params = inspect.signature(_kernel()).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    return causal, "enable_gqa" in params


def segment_bounds(position_ids: Any) -> tuple[Any, int]:
    """Cumulative conversation boundaries (int32, starting at 0) and the longest conversation of one
    packed row, from its position ids (a conversation starts where the position is 0)."""
    import torch

    positions = position_ids.reshape(-1)
    starts = torch.nonzero(positions == 0).flatten()
    if starts.numel() == 0 or int(starts[0]) != 0:
        starts = torch.cat([starts.new_zeros(1), starts])
    cu = torch.cat([starts, starts.new_tensor([positions.numel()])]).to(torch.int32)
    return cu, int(cu.diff().max())


def varlen_attention_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                             scaling: float | None = None, dropout: float = 0.0, **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention interface: query [1, heads, tokens, dim], key/value [1, kv heads,
    tokens, dim] of one packed row; returns [1, tokens, heads, dim] and no weights."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None:
        raise VarlenAttentionError(
            "varlen attention got a padded batch (an attention mask with zeros): it runs packed "
            "padding-free batches (training.packing: true); score and answer with sdpa")
    if query.shape[2] != key.shape[2]:
        # Decoding against a KV cache: one sequence, no padding, plain causal SDPA is exact.
        return sdpa_attention_forward(module, query, key, value, None, dropout=dropout, scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise VarlenAttentionError(f"varlen attention takes one packed row, got a batch of {query.shape[0]}")
    if dropout:
        raise VarlenAttentionError("varlen attention has no attention dropout; set it to 0")
    cu, longest = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
    if cu is None or longest is None:
        position_ids = kwargs.get("position_ids")
        if position_ids is None:
            return sdpa_attention_forward(module, query, key, value, None, dropout=0.0, scaling=scaling, **kwargs)
        cu, longest = segment_bounds(position_ids)
    cu = cu.to(device=query.device, dtype=torch.int32)
    # [1, heads, tokens, dim] -> [tokens, heads, dim], the kernel's layout (a view).
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    if _use_flash(query):
        out = _flash_segments(q, k, v, cu, int(longest), scaling)
    else:
        out = _sdpa_segments(q, k, v, cu, scaling)
    return out.unsqueeze(0), None


def _use_flash(query: Any) -> bool:
    return query.is_cuda and _kernel() is not None


def _half_dtype() -> Any:
    """The half precision flash attention runs in: autocast's, else bf16 where the GPU has it."""
    import torch

    if torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _flash_segments(q: Any, k: Any, v: Any, cu: Any, longest: int, scaling: float | None) -> Any:
    """The flash kernel over every conversation at once, in half precision (it takes no other):
    float32 inputs, e.g. from peft's LoRA layers over a 4-bit base whose norms were upcast, run in
    autocast's dtype and come back in float32, as SDPA under autocast would do for them."""
    import torch

    dtype = q.dtype
    if dtype not in (torch.float16, torch.bfloat16):
        half = _half_dtype()
        q, k, v = q.to(half), k.to(half), v.to(half)
    # Grouped K/V heads go in as they are: the flash kernel shares each among its query heads
    # (torch 2.11 takes them without a flag, later versions with enable_gqa); repeating them
    # would keep 8x the K/V activations for backward (measured: +2.4 GiB, TinyLlama, batch 32).
    causal, takes_gqa = _kernel_options()
    extra = {"enable_gqa": True} if takes_gqa and q.shape[1] != k.shape[1] else {}
    return _kernel()(q, k, v, cu, cu, longest, longest, scale=scaling, **causal, **extra).to(dtype)


def _sdpa_segments(q: Any, k: Any, v: Any, cu: Any, scaling: float | None) -> Any:
    """The same attention, one conversation at a time through SDPA (CPU and tests)."""
    import torch
    import torch.nn.functional as F

    groups = q.shape[1] // k.shape[1]
    bounds = cu.tolist()
    parts = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))  # [heads, len, dim]
        if groups > 1:
            ks, vs = ks.repeat_interleave(groups, dim=0), vs.repeat_interleave(groups, dim=0)
        parts.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scaling).transpose(0, 1))
    return torch.cat(parts, dim=0)
