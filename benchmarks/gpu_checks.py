"""Profiling and checks for `train_throughput.py` on the GPU: profiler hooks for a row
(`+prof`), timing wrappers, probe-generation timings (`genprof`) and the packed-vs-unpacked
loss check (`packcheck`). Run through `benchmarks/train_throughput.py`; see docs/PERFORMANCE.md.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def _cprofiled(fn: Any, out: str, title: str, lines: int) -> Any:
    """`fn`, run under cProfile, appending the `lines` top functions (cumulative) to `out`."""
    import cProfile
    import io
    import pstats

    def profiled(*args: Any, **kwargs: Any) -> Any:
        profiler = cProfile.Profile()
        try:
            return profiler.runcall(fn, *args, **kwargs)
        finally:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(lines)
            with open(out, "a") as fh:
                fh.write(f"\n== {title} (cProfile, cumulative)\n{text.getvalue()}")
    return profiled


def profile_setup(out: str, row: str) -> None:
    """cProfile `tasks.training.train._build_trainer` (the trainer's setup) and the first evaluation into `out`."""
    from transformers import Trainer

    import tasks.training.train as training

    training._build_trainer = _cprofiled(training._build_trainer, out, f"{row}: trainer setup", 35)
    evaluate = Trainer.evaluate
    profiled = _cprofiled(evaluate, out, f"{row}: first evaluation", 45)

    def first_evaluation_profiled(self: Any, *args: Any, **kwargs: Any) -> Any:
        Trainer.evaluate = evaluate  # only the first evaluation (step 0: compiles, loads kernels)
        return profiled(self, *args, **kwargs)
    Trainer.evaluate = first_evaluation_profiled


def timed(fn: Any, totals: dict[str, float], key: str) -> Any:
    """`fn`, adding its CUDA-synchronised wall time to `totals[key]` on every call."""
    import torch

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            totals[key] += time.perf_counter() - start
    return timed


def genprof(bench: Path, work: Path, shape: str, out: Path | None) -> dict:
    """Greedy probe generation (24 validation questions x 96 new tokens, as scoring runs them)
    timed on the 4-bit base, the dequantised base, with a LoRA adapter through peft's layers and
    through the fused ones, and 72 probes in one batch; a profiler table of the peft case."""
    import torch
    from peft import get_peft_model

    from tasks.training.base_model import dequantize_for_scoring, load_base, resolve_base_model
    from tasks.config import load_config
    from tasks.evaluation.generation import generate_answers, merged_adapter
    from tasks.evaluation.probes import select_probes
    from tasks.evaluation.score import read_validation
    from tasks.training.fused_lora import fuse_lora_layers
    from tasks.training.train import build_lora_config

    from benchmarks.train_throughput import build_random_model

    model_dir = build_random_model(shape, bench / "tokenizer", work / "models" / shape)
    cfg = load_config("gpu", {"training.base_model": str(model_dir)})
    probes = select_probes(read_validation(bench / "samples" / "val.jsonl"), cfg.evaluation.probe_size)
    convs, n_new = [p["messages"][:-1] for p in probes], cfg.evaluation.max_new_tokens
    model, tokenizer = load_base(resolve_base_model(cfg.training, work / "home"), cfg.training, for_training=False)
    seconds: dict[str, float] = {}

    def timed(name: str, conversations: list, batch: int = 64) -> None:
        _sync()
        start = time.perf_counter()
        generate_answers(model, tokenizer, conversations, n_new, batch)
        _sync()
        seconds[name] = round(time.perf_counter() - start, 2)
        print(f"{name}: {seconds[name]} s ({seconds[name] / n_new * 1000:.0f} ms per new token)", flush=True)

    if out:  # the process's first generation: everything that happens once per shape shows here
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            timed("first generation (nf4 base), profiled", convs)
        with open(out, "a") as fh:
            fh.write(f"\n== first generation, nf4 base, 24 probes x {n_new} new tokens, cudnn sdp "
                     f"{torch.backends.cuda.cudnn_sdp_enabled()}\n")
            fh.write(prof.key_averages().table(sort_by="cpu_time_total", row_limit=30, max_name_column_width=60))
            fh.write(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=20,
                                               max_name_column_width=60))
    timed("nf4 base", convs)
    dequantize_for_scoring(model)
    timed("dequantised base", convs)
    model = get_peft_model(model, build_lora_config(cfg.training)).eval()
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.01)
    timed("dequantised base + LoRA, peft layers", convs)
    with merged_adapter(model) as merged:
        assert merged
        timed("dequantised base + LoRA merged (as scoring runs the probes)", convs)
    fuse_lora_layers(model)
    timed("dequantised base + LoRA, fused layers", convs)
    timed("dequantised base + LoRA, fused layers, 72 probes in one batch", convs * 3, 96)
    return {"check": "generation", "shape": shape, "probes": len(convs), "max_new_tokens": n_new, "seconds": seconds}


def packcheck(bench: Path, work: Path, shape: str, n: int = 48,
              attentions: tuple[str, ...] = ("flex_attention", "varlen")) -> dict:
    """Packed vs unpacked loss on the same conversations, same model, the `gpu` profile's loading
    (4-bit, LoRA with random B, fused layers) for each attention: if attention leaked across
    packed samples the losses would differ. The packed loss is also backpropagated, and the LoRA
    gradients of each attention are compared with the first one's."""
    import torch
    import torch.nn.functional as F
    from peft import get_peft_model

    from tasks.training.base_model import load_base, load_tokenizer, resolve_base_model
    from tasks.config import load_config
    from tasks.training.fused_lora import fuse_lora_layers
    from tasks.training.train import build_lora_config, tokenize_samples

    from benchmarks.train_throughput import build_random_model

    model_dir = build_random_model(shape, bench / "tokenizer", work / "models" / shape)
    cfg = load_config("gpu", {"training.base_model": str(model_dir)})
    ref = resolve_base_model(cfg.training, work / "home")
    rows = tokenize_samples(bench / "samples" / "val.jsonl", load_tokenizer(ref), cfg.training.max_length)
    rows = rows.select(range(n))
    ids = [torch.tensor(r["input_ids"]) for r in rows]
    masks = [torch.tensor(r["completion_mask"]) for r in rows]
    # One packed row as trl's padding-free collator makes it: restarting position ids and the
    # conversation boundaries (the varlen attention reads the latter).
    flat = torch.cat(ids)[None].cuda()
    pos = torch.cat([torch.arange(len(i)) for i in ids])[None].cuda()
    cu = torch.tensor([0] + [len(i) for i in ids]).cumsum(0).to(torch.int32).cuda()
    longest = max(len(i) for i in ids)

    def token_losses(logits: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits[:-1].float(), seq[1:].cuda(), reduction="none")
        return loss[mask[1:].cuda().bool()]

    out: dict[str, Any] = {"check": "packed vs unpacked", "shape": shape, "conversations": n}
    grads: dict[str, dict[str, torch.Tensor]] = {}
    for attention in attentions:
        cfg = load_config("gpu", {"training.base_model": str(model_dir), "training.attn_implementation": attention})
        model, _ = load_base(ref, cfg.training, for_training=True)
        torch.manual_seed(0)  # the same adapter for every attention
        model = get_peft_model(model, build_lora_config(cfg.training))
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data.normal_(0, 0.01)
        if cfg.training.fused_lora:
            fuse_lora_layers(model)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            with torch.no_grad():
                unpacked = torch.cat([token_losses(model(input_ids=i[None].cuda()).logits[0], i, m)
                                      for i, m in zip(ids, masks)])
            logits = model(input_ids=flat, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                           max_length_q=longest, max_length_k=longest).logits[0]
            packed, start = [], 0
            for i, m in zip(ids, masks):
                packed.append(token_losses(logits[start:start + len(i)], i, m))
                start += len(i)
            packed = torch.cat(packed)
        packed.mean().backward()
        grads[attention] = {name: p.grad.float().clone() for name, p in model.named_parameters() if p.grad is not None}
        a, b = unpacked.mean().item(), packed.mean().item()
        out[attention] = {"tokens": int(unpacked.numel()), "unpacked_loss": a, "packed_loss": b,
                          "rel_diff": abs(a - b) / a, "max_token_diff": (unpacked - packed).abs().max().item(),
                          "lora_tensors_with_grad": len(grads[attention])}
        del model, logits, packed, unpacked
        torch.cuda.empty_cache()
    first, *others = attentions
    for other in others:
        rel = [((grads[other][k] - g).norm() / g.norm()).item() for k, g in grads[first].items() if g.norm() > 0]
        out[f"grad_rel_diff_{other}_vs_{first}"] = {"max": max(rel), "median": sorted(rel)[len(rel) // 2],
                                                   "tensors": len(rel)}
    return out


def attnbench(conversations: int = 32, seed: int = 0, iters: int = 20) -> dict:
    """Attention alone on one packed row of TinyLlama's attention shape (32 query / 4 KV heads of
    64): forward + backward time and error against float32 per-conversation SDPA, for flex
    attention (compiled, block mask) and the varlen flash kernel in the layouts
    `tasks.training.varlen_attention` could hand it."""
    import torch

    from tasks.training import varlen_attention

    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(100, 341, (conversations,), generator=gen).tolist()
    total, heads, kv_heads, dim = sum(lengths), 32, 4, 64
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32).cuda()

    def leaf(h: int) -> torch.Tensor:  # [1, heads, tokens, dim] as the model's attention receives it
        return torch.randn(1, h, total, dim, generator=gen).cuda().to(torch.bfloat16).requires_grad_()

    q, k, v = leaf(heads), leaf(kv_heads), leaf(kv_heads)
    grad_out = torch.randn(total, heads, dim, generator=gen).cuda().to(torch.bfloat16)

    def reference() -> tuple[torch.Tensor, ...]:
        qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
        out = varlen_attention._sdpa_segments(qf[0].transpose(0, 1), kf[0].transpose(0, 1), vf[0].transpose(0, 1),
                                              cu.cpu(), None)
        out.backward(grad_out.float())
        return out.detach(), qf.grad, kf.grad, vf.grad

    def flex() -> torch.Tensor:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        doc = torch.repeat_interleave(torch.arange(conversations).cuda(), torch.tensor(lengths).cuda())
        mask = create_block_mask(lambda b, h, qi, ki: (doc[qi] == doc[ki]) & (qi >= ki), None, None, total, total)
        compiled = torch.compile(flex_attention, dynamic=False)
        return lambda: compiled(q, k, v, block_mask=mask, enable_gqa=True)[0].transpose(0, 1)

    kernel = varlen_attention._kernel()
    causal, _ = varlen_attention._kernel_options()
    longest = max(lengths)

    def varlen(layout: str) -> Any:
        def run() -> torch.Tensor:
            qs, ks, vs = (t[0].transpose(0, 1) for t in (q, k, v))
            if layout.endswith("contiguous"):
                qs, ks, vs = qs.contiguous(), ks.contiguous(), vs.contiguous()
            if layout.startswith("repeat"):
                ks, vs = ks.repeat_interleave(heads // kv_heads, dim=1), vs.repeat_interleave(heads // kv_heads, dim=1)
            return kernel(qs, ks, vs, cu, cu, longest, longest, **causal)
        return run

    ref = reference()
    out: dict[str, Any] = {"check": "attention alone", "tokens": total, "conversations": conversations,
                           "longest": longest}
    candidates = {"flex_attention": flex(), "varlen, repeated K/V (views)": varlen("repeat"),
                  "varlen, repeated K/V, contiguous": varlen("repeat contiguous"),
                  "varlen, grouped K/V (views)": varlen("grouped"),
                  "varlen, grouped K/V, contiguous": varlen("grouped contiguous")}
    for name, fn in candidates.items():
        try:
            for t in (q, k, v):
                t.grad = None
            result = fn()
            result.backward(grad_out)
            errors = {f"max_err_{what}": (got.float() - want).abs().max().item()
                      for what, got, want in zip(("out", "dq", "dk", "dv"), (result, q.grad, k.grad, v.grad), ref)}
            for _ in range(3):
                fn().backward(grad_out)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(iters):
                fn().backward(grad_out)
            torch.cuda.synchronize()
            out[name] = {"ms_fwd_bwd": round(1000 * (time.perf_counter() - start) / iters, 3), **errors}
        except Exception as exc:  # noqa: BLE001 - a layout the kernel refuses is a result too
            out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    out["reference_norms"] = {w: t.norm().item() for w, t in zip(("out", "dq", "dk", "dv"), ref)}
    return out


def _sync() -> None:
    """Wait for the GPU (nothing to wait for on a CPU), so that a timer measures finished work."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _scoring_model(bench: Path, work: Path, shape: str) -> tuple[Any, Any, Any]:
    """(cfg, model, tokenizer): a random-weight `shape` model loaded as the `gpu` profile scores
    (`load_base` for inference, 4-bit weights dequantised once), in eval mode."""
    from benchmarks.train_throughput import build_random_model
    from tasks.config import load_config
    from tasks.training.base_model import dequantize_for_scoring, load_base, resolve_base_model

    model_dir = build_random_model(shape, bench / "tokenizer", work / "models" / shape)
    cfg = load_config("gpu", {"training.base_model": str(model_dir)})
    model, tokenizer = load_base(resolve_base_model(cfg.training, work / "home"), cfg.training, for_training=False)
    dequantize_for_scoring(model)
    return cfg, model.eval(), tokenizer


def genbatch(bench: Path, work: Path, shape: str, copies: int = 3, out: Path | None = None) -> dict:
    """Scoring's greedy probes as the `gpu` profile runs them: every validation question of the
    bench set (`copies` times over, ~the 763-835 probes of a real day) in one batch of up to
    `generation_batch_size`, on the dequantised base, 96 new tokens. Timed twice each (the first
    call pays once-per-shape costs) as scoring runs them (`greedy_tokens`: a dynamic cache,
    finished rows leaving the batch; random weights seldom finish early, so this times the loop,
    not what leaving saves) and through `generate` with a static cache (no concatenation per step;
    not compiled); whether the answers are the same. A profiler table of one scoring generation
    goes to `out`."""
    import torch

    from tasks.evaluation.generation import generate_answers
    from tasks.evaluation.score import read_validation

    cfg, model, tokenizer = _scoring_model(bench, work, shape)
    convs = [r["messages"][:-1] for r in read_validation(bench / "samples" / "val.jsonl")] * copies
    n_new, batch = cfg.evaluation.max_new_tokens, cfg.evaluation.generation_batch_size
    seconds: dict[str, float] = {}
    answers: dict[str, list[str]] = {}

    def run(name: str, **options: Any) -> None:
        _sync()
        start = time.perf_counter()
        answers[name] = generate_answers(model, tokenizer, convs, n_new, batch, **options)
        _sync()
        seconds[name] = round(time.perf_counter() - start, 2)
        print(f"{name}: {seconds[name]} s for {len(convs)} probes", flush=True)

    for attempt in ("first", "again"):
        run(f"scoring (greedy_tokens), {attempt}")
        run(f"generate, static cache, {attempt}", cache_implementation="static", disable_compile=True)
    if out:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            run("scoring (greedy_tokens), profiled")
        with open(out, "a") as fh:
            fh.write(f"\n== {len(convs)} probes x {n_new} new tokens, greedy_tokens, dequantised {shape}\n")
            fh.write(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=60))
    same = sum(a == b for a, b in zip(answers["scoring (greedy_tokens), again"],
                                      answers["generate, static cache, again"]))
    return {"check": "genbatch", "shape": shape, "probes": len(convs), "max_new_tokens": n_new, "seconds": seconds,
            "static_answers_equal": f"{same} of {len(convs)}"}


def scoreloss(bench: Path, work: Path, shape: str, copies: int = 3, batch_sizes: tuple[int, ...] = (32, 64, 128, 256),
              out: Path | None = None) -> dict:
    """Scoring's validation loss (`tasks.evaluation.score._summed_loss`) over the bench set's
    validation conversations (`copies` times over, ~a real day's 763-835) on the dequantised
    random-weight model, per evaluation batch size, each timed twice (the first pays once-per-
    shape costs); the summed losses must agree. A profiler table of the shipped batch size to `out`."""
    import torch

    from tasks.evaluation.score import _summed_loss, read_validation
    from tasks.samples.chat import tokenize_conversations

    cfg, model, tokenizer = _scoring_model(bench, work, shape)
    records = read_validation(bench / "samples" / "val.jsonl") * copies
    encoded = tokenize_conversations(tokenizer, [r["messages"] for r in records], cfg.training.max_length)
    pad = tokenizer.pad_token_id
    seconds: dict[str, float] = {}
    totals: dict[int, tuple[float, int]] = {}
    for size in batch_sizes:
        for attempt in ("first", "again"):
            _sync()
            start = time.perf_counter()
            totals[size] = _summed_loss(model, encoded, size, pad)
            _sync()
            seconds[f"batch {size}, {attempt}"] = round(time.perf_counter() - start, 2)
            print(f"batch {size}, {attempt}: {seconds[f'batch {size}, {attempt}']} s", flush=True)
    if out:
        size = cfg.training.per_device_eval_batch_size
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            _summed_loss(model, encoded, size, pad)
        with open(out, "a") as fh:
            fh.write(f"\n== validation loss of {len(encoded)} conversations, batch {size}, dequantised {shape}\n")
            fh.write(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60))
    losses = {size: total / count for size, (total, count) in totals.items()}
    return {"check": "scoreloss", "shape": shape, "conversations": len(encoded), "seconds": seconds,
            "mean_loss": losses, "tokens": sum(len(e["input_ids"]) for e in encoded)}
