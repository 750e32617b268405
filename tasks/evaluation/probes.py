"""Answer probes: which validation questions are answered greedily, and the number accuracy of
the answers (the local `number_accuracy` metric), per family, overall and per mode.

    probes = select_probes(records, cfg.evaluation.probe_size)
    truths = visible_truths(tokenizer, probes, cfg)
    scores = accuracy_of(answers, probes, truths, cfg)   # accuracy, accuracy_overall, accuracy_by_mode
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from tasks.config import Config


METRIC_DIR = Path(__file__).resolve().parent / "metrics" / "number_accuracy"


def select_probes(records: list[dict[str, Any]], size: int | None) -> list[dict[str, Any]]:
    """A fixed probe subset: round-robin over families (sorted), each family in the order of the
    sha256 of its ids, so the same file always gives the same probes; `size` None: every record."""
    if size is None:
        return list(records)
    by_family: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_family.setdefault(record["family"], []).append(record)
    queues = [sorted(group, key=lambda r: hashlib.sha256(str(r["id"]).encode()).hexdigest())
              for _, group in sorted(by_family.items())]
    chosen: list[dict[str, Any]] = []
    while len(chosen) < min(size, len(records)):
        for queue in queues:
            if queue and len(chosen) < size:
                chosen.append(queue.pop(0))
    return chosen


@functools.lru_cache(maxsize=1)
def load_number_accuracy() -> Any:
    """The local `number_accuracy` metric, loaded by path; never looked up on the hub."""
    for var in ("HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        os.environ.setdefault(var, "1")
    import evaluate
    return evaluate.load(str(METRIC_DIR), keep_in_memory=True)


def visible_truths(tokenizer: Any, probes: list[dict[str, Any]], cfg: Config) -> list[list[dict[str, Any]]]:
    """Each probe's reference numbers that its own reference answer states within the first
    `evaluation.max_new_tokens` tokens: what a right answer can show before generation stops.
    A long answer (a market summary runs to ~220 tokens of 18 numbers) is scored on the numbers
    of its first `max_new_tokens` tokens, so a model that answers exactly like the reference scores
    100% instead of being marked wrong for numbers it was never given room to write."""
    if not probes:
        return []
    limit = cfg.evaluation.max_new_tokens
    cut = [tokenizer.decode(tokenizer(p["messages"][-1]["content"], add_special_tokens=False)["input_ids"][:limit])
           for p in probes]
    shares = load_number_accuracy().compute(
        predictions=cut, references=[p["truth"] for p in probes], price_tolerance=cfg.evaluation.price_tolerance,
        pct_tolerance=cfg.evaluation.pct_tolerance)["per_sample"]
    # Numbers are matched in order and a cut only removes the tail, so the visible ones lead the list.
    return [p["truth"][:round(share * len(p["truth"]))] if share else [] for p, share in zip(probes, shares)]


def probe_family(probe: dict[str, Any]) -> str:
    """The per-family key of a probe: its family, marked when it was asked closed-book."""
    return probe["family"] + (" (closed-book)" if probe.get("mode") == "closed_book" else "")


def accuracy_of(answers: list[str], probes: list[dict[str, Any]], truths: list[list[dict[str, Any]]],
                cfg: Config) -> dict[str, Any]:
    """Number accuracy of `answers`: per family, overall, and per mode (grounded, closed-book)."""
    ev = cfg.evaluation
    result = load_number_accuracy().compute(
        predictions=answers, references=truths, families=[probe_family(p) for p in probes],
        price_tolerance=ev.price_tolerance, pct_tolerance=ev.pct_tolerance)
    counts: dict[str, list[int]] = {}  # mode -> [numbers right, numbers], from the per-probe shares
    for probe, truth, share in zip(probes, truths, result["per_sample"]):
        if truth:
            right_total = counts.setdefault(probe.get("mode", "grounded"), [0, 0])
            right_total[0] += round(share * len(truth))
            right_total[1] += len(truth)
    by_mode = {mode: right / total for mode, (right, total) in sorted(counts.items())}
    return {"accuracy": result["per_family"], "accuracy_overall": result["accuracy"], "accuracy_by_mode": by_mode,
            "answers": tuple(answers), "shares": tuple(result["per_sample"])}
