"""Greedy answers from a model through the chat template, as scoring, `ask` and the API generate
them: batched by length, SDPA without cuDNN, an adapter folded into the base weights while it
answers (`merged_adapter`), and rows that have finished leaving the batch (`greedy_tokens`).

    with merged_adapter(model):
        texts = generate_answers(model, tokenizer, [[system, user], ...], max_new_tokens=96)
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

from tasks.samples.chat import Message, render_prompt


def attention_without_cudnn() -> Any:
    """SDPA limited to its flash, memory-efficient and math kernels. cuDNN's attention builds an
    execution plan for every new shape, and greedy decoding makes a new shape every token: on
    an H100 that cost 9.8 of the 16 s of a process's first 24 x 96-token generation (torch 2.11,
    profiled in docs/PERFORMANCE.md); later passes over the same lengths were fast."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def device_of(model: Any) -> Any:
    """The device of the model's first parameter (where its inputs go)."""
    return next(model.parameters()).device


@contextlib.contextmanager
def merged_adapter(model: Any) -> Iterator[bool]:
    """The active LoRA adapter folded into the base weights for the duration, then the base
    weights restored bit for bit; yields whether it merged. Greedy decoding is bound by the
    per-layer overhead, and a merged layer is one matmul instead of three (measured on an H100:
    30 against 51 ms per generated token, docs/PERFORMANCE.md). Left as it is: a model without
    adapters, with adapters disabled (the base), on 4-bit weights (merging would requantise), or
    where a copy of the merged weights does not fit."""
    import torch
    from peft.tuners.lora import LoraLayer

    from tasks.training.base_model import fits_twice

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    # nn.Module.__getattr__ types `.weight` Tensor | Module; a LoRA layer's base weight is a tensor.
    weights = [cast(torch.Tensor, m.get_base_layer().weight) for m in layers]
    need = sum(w.numel() * w.element_size() for w in weights)
    if (not layers or any(m.disable_adapters or m.merged for m in layers)
            or any(getattr(w, "quant_state", None) is not None or w.element_size() < 2 for w in weights)
            or not fits_twice(need, weights[0].device)):
        yield False
        return
    saved = [w.detach().clone() for w in weights]
    try:
        for layer in layers:
            layer.merge()
        yield True
    finally:
        with torch.no_grad():
            for layer, weight, copy in zip(layers, weights, saved):
                weight.copy_(copy)
                layer.merged_adapters.clear()


PRUNE_AT = 0.5
"""Finished rows leave the batch once no more than this share of its rows is still answering."""
CHECK_EVERY = {"cpu": 1}
"""Decoding steps between looks at which rows have finished, per device type (8 where absent).
A look waits for an accelerator to finish the step, which then idles while the host issues the
next one; on the CPU a look costs nothing and stops a finished batch at once."""


def greedy_tokens(model: Any, input_ids: Any, attention_mask: Any, max_new_tokens: int, eos_ids: list[int],
                  pad_id: int) -> Any:
    """The greedy continuation of each left-padded row, [rows, max_new_tokens], padded after its
    end-of-sequence token: the tokens `model.generate(do_sample=False)` gives (tests). Unlike
    `generate`, it looks at which rows have finished only every `CHECK_EVERY` steps on a GPU
    (`generate` waits for the GPU after every token; so would transformers' test for padding in a
    2-D mask, so SDPA gets a ready [rows, 1, 1, keys] one), and rows that have finished leave the
    batch (their cached keys and values dropped) once no more than `PRUNE_AT` of it is answering."""
    import torch

    rows, device = input_ids.shape[0], input_ids.device
    out = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    live, done = torch.arange(rows, device=device), torch.zeros(rows, dtype=torch.bool, device=device)
    eos, mask = torch.tensor(eos_ids, device=device), attention_mask.long()
    position = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    step_input, step_mask, kwargs = input_ids, mask, cast(dict[str, Any], {"use_cache": True})
    every, last = CHECK_EVERY.get(device.type, 8), max_new_tokens - 1
    ready_mask = getattr(getattr(model, "config", None), "_attn_implementation", None) == "sdpa"
    for step in range(max_new_tokens):
        result = model(input_ids=step_input, attention_mask=step_mask, position_ids=position, logits_to_keep=1,
                       **kwargs)
        cache_key = "cache" if getattr(result, "cache", None) is not None else "past_key_values"
        kwargs[cache_key] = result[cache_key]  # transformers >= 5.24 calls it `cache`
        token = result.logits[:, -1].argmax(-1).masked_fill(done, pad_id)
        out[live, step] = token
        done |= torch.isin(token, eos)
        running = int((~done).sum()) if (step + 1) % every == 0 or step == last else len(live)  # a host sync
        if running == 0 or step == last:
            break
        if running <= PRUNE_AT * len(live) and hasattr(kwargs[cache_key], "batch_select_indices"):
            keep = (~done).nonzero().squeeze(1)
            kwargs[cache_key].batch_select_indices(keep)
            live, done, token, mask, position = live[keep], done[keep], token[keep], mask[keep], position[keep]
        step_input, position = token[:, None], position[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=-1)
        step_mask = mask.bool()[:, None, None, :] if ready_mask else mask
    return out


def generate_answers(model: Any, tokenizer: Any, conversations: list[list[Message]], max_new_tokens: int,
                     batch_size: int = 8, **generate_options: Any) -> list[str]:
    """Greedy answers to (system, user) conversations through the chat template, by
    `greedy_tokens`; with `generate_options`, by `model.generate` with them (the answer API passes
    a streamer, one conversation)."""
    import torch

    prompts = [render_prompt(tokenizer, c) for c in conversations]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths batch together
    answers, side = [""] * len(prompts), tokenizer.padding_side
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokenizer.padding_side = "left"  # generation continues from the right edge
    try:
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            batch = tokenizer([prompts[i] for i in chosen], add_special_tokens=False, padding=True,
                              return_tensors="pt").to(device_of(model))
            with torch.no_grad(), attention_without_cudnn():
                if generate_options:
                    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                         pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
                                         **generate_options)[:, batch["input_ids"].shape[1]:]
                else:
                    out = greedy_tokens(model, batch["input_ids"], batch["attention_mask"], max_new_tokens,
                                        [tokenizer.eos_token_id], pad_id)
            texts = tokenizer.batch_decode(out, skip_special_tokens=True)
            for i, text in zip(chosen, texts):
                answers[i] = text.strip()
    finally:
        tokenizer.padding_side = side
    return answers
