"""One training step of the `cpu` profile, timed: the LM head over every position (trl's fused head
off a GPU) against the labelled positions only (`tasks.training.lean_trainer.compact_lm_head`, what
training runs), in float32 and bf16. Prints the seconds and the loss of each pass and whether the
gradients agree; nothing is asserted. Figures go to docs/PERFORMANCE.md ("cpu profile").

    make demo    # or any `niftytune run --profile cpu` home: the embedded model and its samples
    .venv/bin/python benchmarks/cpu_step.py --home var/demo [--rows 4] [--repeats 2]

The base model is the profile's own (the embedded SmolLM2-135M-Instruct, converted in the home's
cache); the batch is the first `--rows` training conversations of the home's newest sample set,
padded as the profile trains them (LoRA r=16 on the seven projections, dropout off so that the
passes can be compared).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _batch(tokenizer, train_jsonl: Path, rows: int):
    import torch

    from tasks.samples.chat import tokenize_conversations

    conversations = [json.loads(line)["messages"] for line in train_jsonl.read_text().splitlines()[:rows]]
    encoded = tokenize_conversations(tokenizer, conversations, 768)
    width = max(len(e["input_ids"]) for e in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
    labels = torch.full((len(encoded), width), -100)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for j, e in enumerate(encoded):
        n = len(e["input_ids"])
        ids[j, :n], mask[j, :n] = torch.tensor(e["input_ids"]), 1
        labels[j, :n] = torch.where(torch.tensor(e["completion_mask"], dtype=torch.bool), ids[j, :n], -100)
    return ids, mask, labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, default=ROOT / "var" / "demo", help="a home a cpu-profile run has used")
    p.add_argument("--rows", type=int, default=4, help="conversations in the batch (the profile's batch: 4)")
    p.add_argument("--repeats", type=int, default=2, help="passes per setting; the last is the figure")
    args = p.parse_args(argv)

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.utils import add_fused_lm_head

    from tasks.config import load_config
    from tasks.training.base_model import resolve_base_model
    from tasks.training.lean_trainer import compact_lm_head

    sets = sorted((args.home / "samples").glob("*/train.jsonl"))
    if not sets:
        p.error(f"no samples under {args.home}/samples: run `make demo` (or `niftytune run --profile cpu`) first")
    cfg = load_config("cpu")
    ref = resolve_base_model(cfg.training, args.home)
    tokenizer = AutoTokenizer.from_pretrained(ref.path)
    ids, mask, labels = _batch(tokenizer, sets[-1], args.rows)
    print(f"{sets[-1]}: {args.rows} conversations, {int(mask.sum())} tokens, {int((labels != -100).sum())} "
          f"labelled; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    t = cfg.training
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=dtype, attn_implementation="sdpa")
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
        model = get_peft_model(model, LoraConfig(r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=0.0,
                                                 target_modules=list(t.target_modules), task_type="CAUSAL_LM"))
        grads = {}
        for compact in (False, True):
            for _ in range(args.repeats):
                model.zero_grad()
                start = time.perf_counter()
                with compact_lm_head("cpu") if compact else contextlib.nullcontext():
                    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True, use_cache=False)
                loss = (-out.log_probs).sum() / out.label_mask.sum()
                loss.backward()
                seconds = time.perf_counter() - start
            grads[compact] = [q.grad.float().clone() for q in model.parameters() if q.requires_grad]
            head = "labelled positions" if compact else "every position"
            print(f"{str(dtype)[6:]:>8}, head over {head:<18}: {seconds:6.1f} s a forward and backward pass, "
                  f"loss {loss.item():.6f}", flush=True)
        diff = max((a - b).abs().max().item() for a, b in zip(grads[False], grads[True]))
        print(f"{str(dtype)[6:]:>8}: largest gradient difference between the two heads {diff:.3g}", flush=True)
    print("rerun: .venv/bin/python benchmarks/cpu_step.py --home " + str(args.home))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
