"""Training and scoring throughput of niftytune's own training path on random-weight models of
real shapes. Prints one row per configuration; timings are measured, never asserted.

    # 1. here, once: tokenizer files from the embedded GGUF + samples from the project's
    #    builder on the synthetic market (3,000 train / 300 val) into .bench/
    .venv/bin/python benchmarks/train_throughput.py prepare --out .bench
    # 2. this CPU machine: the `cpu` profile on the embedded SmolLM2-135M (grounds the demo budget)
    .venv/bin/python benchmarks/train_throughput.py cpu --bench-dir .bench
    # 3. a GPU machine (no internet needed): rows are shape:profile[+variant]
    python benchmarks/train_throughput.py gpu --bench-dir .bench --rows tinyllama:gpu,tinyllama:gpu+bf16

Each row runs in its own process (clean peak-memory reading, and the memory cap of the
laptop rows). Columns: trained (non-padding) tokens/s in steady state (steps after the first
`--warmup-steps`, not counting the evaluations and checkpoints between steps), LoRA-MFU =
(4·P + 6·P_lora + attention) FLOPs per token x tokens/s over 800 TFLOP/s (no recompute counted), peak GPU memory, seconds per phase (load, quantize, first
step, steady state, save, scoring of base + champion + candidate), final train/eval losses.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

PROCESS_START = time.perf_counter()  # before torch, transformers & co. are imported: e2e counts imports
ROOT = Path(__file__).resolve().parent.parent
BENCH_AS_OF = date(2026, 11, 20)  # the session every benchmark sample set is built for
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_checks import attnbench, genbatch, genprof, packcheck, profile_setup, scoreloss, timed  # noqa: E402

PEAK_FLOPS = 800e12  # bf16 dense matmul rate measured on the H100s lent here (~798 TFLOP/s)
SHAPES = {  # real architectures, random weights, the SmolLM2 tokenizer's vocabulary (49,152)
    "smollm2-135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)),
    "tinyllama-1.1b": ("llama", dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                                     num_attention_heads=32, num_key_value_heads=4, tie_word_embeddings=False)),
    "tiny": ("llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,  # harness smoke test
                           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)),
    "qwen2.5-0.5b": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                   num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)),
}
# The functions of tasks.training.train whose wall time a row reports (tests/test_benchmarks.py checks
# that they exist there).
TRAIN_PARTS = ("_train", "check_training_extras", "training_record", "write_training_json")

VARIANTS = {  # "+name" after a profile: single-field overrides measured beside the profile
    "bf16": {"training.load_in_4bit": False},
    "unpacked": {"training.packing": False, "training.attn_implementation": "sdpa"},  # varlen needs packing
    "liger": {"training.use_liger_kernel": True},
    "gc": {"training.gradient_checkpointing": True},
    "origin": {"training.packing": False, "training.per_device_train_batch_size": 1,  # the origin system
               "training.gradient_accumulation_steps": 16, "training.gradient_checkpointing": True,
               "training.optim": "paged_adamw_8bit", "training.attn_implementation": "sdpa",
               "training.use_liger_kernel": False, "training.pad_to_multiple_of": None},
    "flex": {"training.attn_implementation": "flex_attention"},
    "grouped": {"training.packing": False, "training.attn_implementation": "sdpa",
                "training.train_sampling_strategy": "group_by_length"},
    "nodrop": {"training.lora_dropout": 0.0},
    "b8": {"training.per_device_train_batch_size": 8},
    "b32": {"training.per_device_train_batch_size": 32},
    "b64": {"training.per_device_train_batch_size": 64},
    "len2k": {"training.max_length": 2048},
    "compile": {"training.torch_compile": True},
    "sdpa": {"training.attn_implementation": "sdpa", "training.pad_to_multiple_of": None},
    "b48": {"training.per_device_train_batch_size": 48},
    "b1": {"training.per_device_train_batch_size": 1, "training.gradient_accumulation_steps": 16},
    "noprobe": {"evaluation.probe_size": 0},  # e2e scoring by validation loss only, no greedy probes
    "e2e": {},  # 2 epochs on the full 3,000 samples with evaluation, as a daily run would
    "fused": {"training.fused_lora": True},
    "nofused": {"training.fused_lora": False},
    "nodeq": {"evaluation.dequantize_base": False},  # score on the 4-bit layers
    "nodq": {"training.bnb_4bit_use_double_quant": False},
    "w0": {"training.dataloader_num_workers": 0},
    "w2": {"training.dataloader_num_workers": 2},
    "fixed": {"training.pad_to_multiple_of": 16384},  # every packed batch one shape: no recompiles
    "probes": {"evaluation.probe_size": 24},  # a throughput row that also scores with the greedy probes
    "prof": {},  # torch.profiler over 3 steady steps, tables appended to $BENCH_PROFILE_OUT
    "cpusmoke": {"training.use_liger_kernel": False, "training.attn_implementation": "sdpa",
                 "training.load_in_4bit": False, "training.per_device_train_batch_size": 2},
    "varlen": {"training.attn_implementation": "varlen", "training.pad_to_multiple_of": None},
    **{f"pad{n}": {"training.pad_to_multiple_of": n} for n in (16, 64, 128, 256, 1024)},
    "nopad": {"training.pad_to_multiple_of": None},
    "expseg": {},  # the row's process runs with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    "flexpad": {"training.attn_implementation": "flex_attention", "training.pad_to_multiple_of": 1024},
    "syncs": {},  # trl's SFTTrainer itself: its host syncs inside each step (tasks.training.lean_trainer.LEAN off)
    "norms": {},  # Liger without its RMSNorm (tasks.training.train.LIGER_KERNEL_CONFIG)
    "dqcache": {"training.cache_dequantized_base": True},
    "noupcast": {"training.upcast_unquantized": False},
    "upcast": {"training.upcast_unquantized": True},  # peft's float32 cast, as shipped before the fifth session
    "nodqcache": {"training.cache_dequantized_base": False},
}


# --- prepare (CPU, with the project's builder) --------------------------------------------

def prepare(out: Path, n_train: int, n_val: int) -> None:
    """Tokenizer files from the embedded GGUF and a synthetic-market sample set into `out`."""
    import shutil

    from tasks.training.embedded import ensure_embedded_base
    from tasks.config import load_config

    home = out / "home"
    base = ensure_embedded_base(home)
    tok_dir = out / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template", "generation_config")):
            shutil.copy2(f, tok_dir / f.name)
    cfg = load_config("gpu", {"market.source": "synthetic", "samples.max_train_samples": n_train,
                              "samples.max_val_samples": n_val})
    sample_set = synthetic_samples(home, cfg)
    dest = out / "samples"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(sample_set.dir, dest)
    print(f"prepared {out}: tokenizer ({len(list(tok_dir.iterdir()))} files), "
          f"{sample_set.n_train} train / {sample_set.n_val} val samples at {dest}")


# --- one measured row (runs in its own process) ---------------------------------------------

def build_random_model(shape: str, tokenizer_dir: Path, out: Path) -> Path:
    """A random-weight model of a real architecture, saved as safetensors with the tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").exists():
        return out
    arch, dims = SHAPES[shape]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = AutoConfig.for_model(arch, vocab_size=len(tokenizer), max_position_embeddings=4096,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, **dims)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def flops_per_token(model_dir: Path, lora_r: int, val_lengths: list[int]) -> tuple[float, int, int]:
    """(4·P + 6·P_lora + attention) per trained token; P counts matmul weights (layers + head)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    h, i, n = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i  # q,o + k,v + gate,up,down
    p = n * per_layer + h * c.vocab_size
    p_lora = n * lora_r * ((h + h) * 2 + (h + kv) * 2 + 2 * (h + i) + (i + h))
    ctx = sum(L * (L + 1) / 2 for L in val_lengths) / max(1, sum(val_lengths))  # mean attended positions
    return 4 * p + 6 * p_lora + 12 * n * h * ctx, p, p_lora


class StepClock:
    """Trainer callback: synchronised wall clock of the first step and of the steady state."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup, self.marks, self.between, self.events = warmup_steps, {}, 0.0, []

    def callback(self):
        import torch
        from transformers import TrainerCallback

        clock = self

        def sync() -> float:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return time.perf_counter()

        class _Clock(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                clock.marks["train_begin"] = (sync(), 0)

            def on_evaluate(self, args, state, control, **kw):
                clock.events.append(("evaluated", state.global_step, round(sync() - clock.marks["train_begin"][0], 2)))

            def on_save(self, args, state, control, **kw):
                clock.events.append(("saved", state.global_step, round(sync() - clock.marks["train_begin"][0], 2)))

            def on_train_end(self, args, state, control, **kw):
                now = sync()  # after the Trainer's last log: the token count is whole
                stop = clock.marks.get("pause", clock.marks.get("stop", (now, 0)))[0]
                clock.marks["last"] = (stop, state.num_input_tokens_seen)
                clock.events.append(("end", state.global_step, round(now - clock.marks["train_begin"][0], 2)))

            def on_step_begin(self, args, state, control, **kw):
                if "pause" in clock.marks:
                    # Evaluation and checkpointing ran between two steps: not training.
                    clock.between += sync() - clock.marks.pop("pause")[0]
                if state.global_step in (0, clock.warmup):
                    # The lean trainer adds its deferred token counts to the state when it logs:
                    # the warm-up ends on a logging step (checked in run_row).
                    clock.marks[f"begin{state.global_step}"] = (sync(), state.num_input_tokens_seen)
                # Profiled: the 3 warm-up steps before the steady state, which the profiler would slow.
                if os.environ.get("BENCH_PROFILE") and state.global_step == max(1, clock.warmup - 3):
                    clock.marks["profile"] = (sync(), 0)
                    clock.profiler = torch.profiler.profile(
                        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
                    clock.profiler.__enter__()

            def on_step_end(self, args, state, control, **kw):
                # No synchronisation on other steps: the host runs ahead of the GPU as in a real run.
                if state.global_step == 1:
                    clock.marks["end1"] = (sync(), state.num_input_tokens_seen)
                if state.global_step > clock.warmup and (control.should_evaluate or control.should_save):
                    clock.marks["pause"] = (sync(), 0)
                elif state.global_step == state.max_steps:  # what follows (best checkpoint, logs) is not a step
                    clock.marks["stop"] = (sync(), 0)
                if state.global_step == max(1, clock.warmup - 3) + 3 and getattr(clock, "profiler", None):
                    clock.profiler.__exit__(None, None, None)
                    wall = sync() - clock.marks["profile"][0]
                    averages = clock.profiler.key_averages()
                    with open(os.environ["BENCH_PROFILE"], "a") as fh:  # device total: the table's last line
                        fh.write(f"\n== {os.environ.get('BENCH_ROW')}: 3 steps, {wall:.3f} s wall\n")
                        fh.write(averages.table(sort_by="self_cuda_time_total", row_limit=45, max_name_column_width=70))
                    clock.profiler = None
        return _Clock()

    def summary(self) -> dict[str, float]:
        t0, _ = self.marks.get("begin0", (float("nan"), 0))
        t1, _ = self.marks.get("end1", (float("nan"), 0))
        tw, nw = self.marks.get(f"begin{self.warmup}", (float("nan"), 0))
        tl, nl = self.marks.get("last", (float("nan"), 0))
        steady = tl - tw - self.between
        return {"first_step_s": t1 - t0, "steady_s": steady, "between_steps_s": self.between, "events": self.events,
                "steady_tokens": nl - nw,
                "tokens_per_s": (nl - nw) / steady if steady > 0 else float("nan")}


def run_row(row: str, bench: Path, work: Path, steps: int, warmup: int, memory_cap_gib: float | None) -> dict:
    """Train (and score) one configuration through tasks.training.train.train_adapter."""
    import torch

    import tasks.evaluation.score as evaluation
    from tasks.config import load_config
    from tasks.evaluation.score import score_models
    from tasks.samples.build import SampleSet
    from tasks.training.train import train_adapter

    shape, _, spec = row.partition(":")
    profile, *variants = spec.split("+")
    if "prof" in variants:
        os.environ["BENCH_PROFILE"] = os.environ.get("BENCH_PROFILE_OUT", str(work / "profiles.txt"))
        os.environ["BENCH_ROW"] = row
        profile_setup(os.environ["BENCH_PROFILE"], row)
    scoring_parts: dict[str, Any] = {"loss_s": 0.0, "probes_s": 0.0, "probe_calls": []}
    for name, part in (("_summed_loss", "loss_s"), ("generate_answers", "probes_s")):
        setattr(evaluation, name, timed(getattr(evaluation, name), scoring_parts, part))
    merged_adapter = evaluation.merged_adapter

    @contextlib.contextmanager
    def recorded_merge(model: Any) -> Any:  # per model: adapter merged for its probes?, seconds
        before = scoring_parts["probes_s"]
        with merged_adapter(model) as merged:
            yield merged
        scoring_parts["probe_calls"].append((merged, round(scoring_parts["probes_s"] - before, 2)))
    evaluation.merged_adapter = recorded_merge
    import tasks.training.train as training  # where train_adapter's wall time goes, phases or not
    train_parts = {name: 0.0 for name in TRAIN_PARTS}
    for name in train_parts:
        setattr(training, name, timed(getattr(training, name), train_parts, name))
    if memory_cap_gib and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(memory_cap_gib * 2**30 / total)
    t = time.perf_counter()
    model_dir = build_random_model(shape, bench / "tokenizer", work / "models" / shape)
    build_s = time.perf_counter() - t  # making the random model is the benchmark's, not the job's
    e2e = "e2e" in variants
    overrides = {"training.base_model": str(model_dir), "training.max_steps": -1 if e2e else steps,
                 "training.eval_steps": steps if not e2e else 40, "training.num_train_epochs": 2,
                 "evaluation.probe_size": 0 if not e2e else 24}
    for v in variants:
        overrides.update(VARIANTS[v])
    cfg = load_config(profile, overrides)
    if "syncs" in variants:
        import tasks.training.lean_trainer as lean
        lean.LEAN = False
    if "norms" in variants:
        import tasks.training.train as training
        training.LIGER_KERNEL_CONFIG = {"rms_norm": False}
    if warmup % cfg.training.logging_steps:
        raise SystemExit(f"--warmup-steps {warmup} must be a multiple of training.logging_steps "
                         f"({cfg.training.logging_steps}): the steady state's token count starts at a log")
    samples = SampleSet.from_dir(bench / "samples")
    clock = StepClock(warmup)
    torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    callback = clock.callback()  # before the clock: its import of transformers' Trainer belongs to "imports"
    start = time.perf_counter()
    candidate = train_adapter(work / "home", cfg, samples, callbacks=[callback], progress=False)
    train_wall = time.perf_counter() - start
    record = json.loads(candidate.training_json.read_text())
    peak_train = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    t = time.perf_counter()
    base, tokenizer, dequantized = evaluation.load_for_scoring(candidate.base, cfg)  # as score_candidate does
    scores = score_models(base, tokenizer, {"champion": candidate.adapter_dir, "candidate": candidate.adapter_dir},
                          samples.val_path, cfg)
    score_s = time.perf_counter() - t
    process_s = time.perf_counter() - PROCESS_START - build_s
    lengths = [len(tokenizer.apply_chat_template(json.loads(l)["messages"], tokenize=True))
               for l in open(samples.val_path) if l.strip()]
    fpt, p, p_lora = flops_per_token(model_dir, cfg.training.lora_r, lengths)
    clock_s = clock.summary()
    return {
        "row": row, "shape": shape, "params_matmul": p, "params_lora": p_lora, **clock_s,
        "mfu": clock_s["tokens_per_s"] * fpt / PEAK_FLOPS,
        "peak_gib": max(peak_train, torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0),
        "phases": record["wall_seconds"], "score_s": score_s, "scoring": {**scoring_parts, "dequantized": dequantized},
        "train_parts": train_parts, "train_wall_s": train_wall,
        "e2e_wall_s": train_wall + score_s, "process_wall_s": process_s, "steps": record["steps_trained"],
        "losses": {"train_last": record.get("train_loss"), "eval_initial": record["initial_eval_loss"],
                   "eval_best": record["best_eval_loss"],
                   **{m: s.loss for m, s in scores.scores.items()}},
        "cap_gib": memory_cap_gib, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


# --- drivers --------------------------------------------------------------------------------

def _versions() -> str:
    import importlib.metadata as md
    names = ["torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "liger-kernel"]
    out = []
    for n in names:
        try:
            out.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(out)


def print_table(results: list[dict]) -> None:
    print(f"\nlibraries: {_versions()}")
    print(f"{'row':34} {'tok/s':>9} {'MFU':>6} {'peak GiB':>8} {'load':>6} {'quant':>6} {'1st step':>8} "
          f"{'steady':>7} {'save':>5} {'score':>6} {'e2e':>6} {'eval0':>7} {'eval best':>9}")
    for r in results:
        if "error" in r:
            print(f"{r['row']:34} FAILED: {r['error'][:120]}")
            continue
        ph = r["phases"]
        print(f"{r['row']:34} {r['tokens_per_s']:9.0f} {r['mfu']:6.1%} {r['peak_gib']:8.2f} {ph.get('load', 0):6.1f} "
              f"{ph.get('quantize', 0):6.1f} {r['first_step_s']:8.2f} {r['steady_s']:7.1f} {ph.get('save', 0):5.1f} "
              f"{r['score_s']:6.1f} {r['e2e_wall_s']:6.1f} {r['losses']['eval_initial']:7.4f} "
              f"{r['losses']['eval_best']:9.4f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="tokenizer + samples into a bench folder (CPU, here)")
    pp.add_argument("--out", type=Path, default=ROOT / ".bench")
    pp.add_argument("--train", type=int, default=3000)
    pp.add_argument("--val", type=int, default=300)
    for name in ("gpu", "cpu"):
        sp = sub.add_parser(name, help=f"measure rows on this machine's {name.upper()}")
        sp.add_argument("--bench-dir", type=Path, default=ROOT / ".bench")
        sp.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "niftytune-bench")
        sp.add_argument("--rows", default="tinyllama-1.1b:gpu" if name == "gpu" else "smollm2-embedded:cpu")
        sp.add_argument("--steps", type=int, default=30, help="optimizer steps per throughput row")
        sp.add_argument("--warmup-steps", type=int, default=5)
        sp.add_argument("--cap-gib", type=float, default=None, help="GPU memory cap (laptop rows)")
        sp.add_argument("--json", type=Path, help="also write the results here")
    one = sub.add_parser("one", help=argparse.SUPPRESS)  # a single row, in a child process
    one.add_argument("row"), one.add_argument("bench", type=Path), one.add_argument("work", type=Path)
    one.add_argument("steps", type=int), one.add_argument("warmup", type=int), one.add_argument("cap", type=float)
    gp = sub.add_parser("genprof", help="probe generation timings on one model (GPU)")
    gp.add_argument("--bench-dir", type=Path, default=ROOT / ".bench")
    gp.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "niftytune-bench")
    gp.add_argument("--shape", default="tinyllama-1.1b")
    gp.add_argument("--profile-out", type=Path)
    gp.add_argument("--no-cudnn-sdp", action="store_true", help="torch.backends.cuda.enable_cudnn_sdp(False)")
    gb = sub.add_parser("genbatch", help="scoring's batched probe generation, dynamic vs static KV cache (GPU)")
    gb.add_argument("--bench-dir", type=Path, default=ROOT / ".bench")
    gb.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "niftytune-bench")
    gb.add_argument("--shape", default="smollm2-135m")
    gb.add_argument("--profile-out", type=Path)
    sl = sub.add_parser("scoreloss", help="scoring's validation loss per evaluation batch size (GPU)")
    sl.add_argument("--bench-dir", type=Path, default=ROOT / ".bench")
    sl.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "niftytune-bench")
    sl.add_argument("--shape", default="smollm2-135m")
    sl.add_argument("--profile-out", type=Path)
    pc = sub.add_parser("packcheck", help="packed vs unpacked loss and gradients per attention on one model (GPU)")
    pc.add_argument("--bench-dir", type=Path, default=ROOT / ".bench")
    pc.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "niftytune-bench")
    pc.add_argument("--shape", default="tinyllama-1.1b")
    pc.add_argument("--attentions", default="flex_attention,varlen")
    sub.add_parser("attnbench", help="attention alone: flex vs the varlen kernel's layouts, time and error (GPU)")
    args = p.parse_args(argv)
    if args.cmd == "attnbench":
        print("ATTNBENCH " + json.dumps(attnbench()))
        return 0
    if args.cmd == "genprof":
        if args.no_cudnn_sdp:
            import torch
            torch.backends.cuda.enable_cudnn_sdp(False)
        print("GENPROF " + json.dumps(genprof(args.bench_dir, args.work, args.shape, args.profile_out)))
        return 0
    if args.cmd == "genbatch":
        print("GENBATCH " + json.dumps(genbatch(args.bench_dir, args.work, args.shape, out=args.profile_out)))
        return 0
    if args.cmd == "scoreloss":
        print("SCORELOSS " + json.dumps(scoreloss(args.bench_dir, args.work, args.shape, out=args.profile_out)))
        return 0
    if args.cmd == "packcheck":
        print("PACKCHECK " + json.dumps(packcheck(args.bench_dir, args.work, args.shape,
                                                   attentions=tuple(args.attentions.split(",")))))
        return 0
    if args.cmd == "prepare":
        prepare(args.out, args.train, args.val)
        return 0
    if args.cmd == "one":
        result = run_row(args.row, args.bench, args.work, args.steps, args.warmup, args.cap or None)
        print("RESULT " + json.dumps(result))
        return 0
    if args.cmd == "cpu":
        result = run_cpu(args)
        print(json.dumps(result, indent=1))
        return 0
    results = []
    for row in args.rows.split(","):
        cap = args.cap_gib if "laptop" in row else 0.0
        cmd = [sys.executable, __file__, "one", row, str(args.bench_dir), str(args.work), str(args.steps),
               str(args.warmup_steps), str(cap or 0)]
        print(f"== {row}: {' '.join(cmd)}", flush=True)
        env = {**os.environ, **({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"} if "+expseg" in row else {})}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not lines:
            results.append({"row": row, "error": (proc.stderr or proc.stdout)[-2000:]})
            print(proc.stderr[-3000:], flush=True)
        else:
            results.append(json.loads(lines[-1][7:]))
            print(json.dumps(results[-1]), flush=True)
        if args.json:  # after every row: a call stopped at its time limit keeps the rows it finished
            args.json.write_text(json.dumps(results, indent=1))
    print_table(results)
    return 0


def synthetic_samples(home: Path, cfg: Any) -> Any:
    """The synthetic market fetched into `home` and the sample set `cfg` builds from it, as of
    BENCH_AS_OF."""
    from flows.fetch_market import run_fetch
    from tasks.samples.build import build_samples

    run_fetch(home, cfg, BENCH_AS_OF)
    return build_samples(home, cfg, BENCH_AS_OF)


def run_cpu(args: argparse.Namespace) -> dict:
    """The `cpu` profile as `make demo` runs it: the embedded SmolLM2-135M on the profile's own
    capped sample set (built here from the synthetic market for 2026-11-20): tokens/s on this CPU."""
    import shutil

    from tasks.config import load_config
    from tasks.training.train import train_adapter

    home = args.work / "home-cpu"
    shutil.rmtree(home, ignore_errors=True)
    samples = synthetic_samples(home, cfg := load_config("cpu", {"market.source": "synthetic"}))
    clock = StepClock(args.warmup_steps)
    start = time.perf_counter()
    candidate = train_adapter(home, cfg, samples, callbacks=[clock.callback()], progress=False)
    record = json.loads(candidate.training_json.read_text())
    return {"profile": "cpu", "threads": os.cpu_count(), "n_train": samples.n_train, "n_val": samples.n_val,
            **clock.summary(), "train_wall_s": time.perf_counter() - start, "phases": record["wall_seconds"],
            "steps": record["steps_trained"], "eval_initial": record["initial_eval_loss"],
            "eval_best": record["best_eval_loss"], "tokens_seen": record["tokens_seen"], "libraries": _versions()}


if __name__ == "__main__":
    sys.exit(main())
