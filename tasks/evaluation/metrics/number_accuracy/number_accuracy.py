"""number_accuracy: share of the reference answer's numbers that a generated answer got right.

A local `evaluate` metric, loaded by path and never fetched:

    metric = evaluate.load("tasks/evaluation/metrics/number_accuracy")
    metric.compute(predictions=["TCS closed at ₹2,154.35 (+0.53%)."],
                   references=[[{"value": 2154.35, "kind": "price"}, {"value": 0.53, "kind": "pct"}]],
                   families=["close"], price_tolerance=0.005, pct_tolerance=0.1)
    # {'accuracy': 1.0, 'n_numbers': 2, 'n_correct': 2, 'per_family': {'close': 1.0}, ...}

Numbers are parsed out of the answer (₹, Rs., commas in Indian or Western grouping, signs
including the Unicode minus, %, lakh/crore/million/billion) and matched to the reference numbers
in order: each reference number takes the first not-yet-used answer number after the previous
match that lies within tolerance (prices, points and volumes: relative `price_tolerance`;
percentages: absolute `pct_tolerance` points; counts: exact). Numbers the answer lacks count as
wrong; extra numbers in the answer (dates, say) are ignored.
"""
from __future__ import annotations

import re
from collections import defaultdict

import datasets
import evaluate

_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[+\-\u2212])?\s*(?:₹|Rs\.?|INR)?\s*(?P<sign2>[+\-\u2212])?"
    r"(?P<num>\d{1,3}(?:,\d{2,3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?P<pct>\s*%)?(?:\s*(?P<scale>lakh|lac|crore|cr|million|mn|billion|bn)\b)?",
    re.IGNORECASE,
)
_SCALES = {"lakh": 1e5, "lac": 1e5, "crore": 1e7, "cr": 1e7, "million": 1e6, "mn": 1e6,
           "billion": 1e9, "bn": 1e9}
RELATIVE_KINDS = ("price", "points", "volume")

_DESCRIPTION = "Share of reference numbers (prices, points, volumes, percentages, counts) found in the answer."
_INPUTS = """
predictions: list of generated answers (str).
references: list of lists of {"value": float, "kind": "price"|"points"|"pct"|"volume"|"count"}.
families (optional kwarg): one family name per answer, for the per-family shares.
price_tolerance: relative tolerance of prices, points and volumes (default 0.005).
pct_tolerance: absolute tolerance of percentages in points (default 0.1).
ordered: match reference numbers in order (default True); False matches them in any order.
Returns accuracy (None when there are no reference numbers), n_numbers, n_correct,
per_family {family: share}, per_sample [share or None].
"""


def parse_numbers(text: str) -> list[tuple[float, bool]]:
    """Every number in `text` in order, as (value, written_as_percent)."""
    found = []
    for match in _NUMBER.finditer(text):
        value = float(match["num"].replace(",", ""))
        signs = (match["sign"] or "") + (match["sign2"] or "")
        if "-" in signs or "\u2212" in signs:
            value = -value
        if match["scale"]:
            value *= _SCALES[match["scale"].lower()]
        found.append((value, bool(match["pct"])))
    return found


def within_tolerance(predicted: float, truth: float, kind: str, price_tolerance: float, pct_tolerance: float) -> bool:
    """Whether one predicted number is right for one reference number of the given kind."""
    if kind == "pct":
        return abs(predicted - truth) <= pct_tolerance + 1e-9
    if kind in RELATIVE_KINDS:
        return abs(predicted - truth) <= price_tolerance * abs(truth) + 1e-9
    if kind == "count":
        return predicted == truth
    raise ValueError(f"unknown number kind {kind!r}; expected one of {RELATIVE_KINDS + ('pct', 'count')}")


def count_correct(answer: str, truth: list[dict], price_tolerance: float, pct_tolerance: float,
                  ordered: bool = True) -> int:
    """How many reference numbers the answer states, matched in order (see the module docstring).
    `ordered=False` (questions whose wording fixes no order, such as the hand-written set): each
    reference number takes any unused answer number within tolerance, a percentage only a number
    written with %, anything else only a number written without."""
    found = parse_numbers(answer)
    if not ordered:
        used: set[int] = set()
        for item in truth:
            for j, (value, is_pct) in enumerate(found):
                if j not in used and is_pct == (item["kind"] == "pct") and within_tolerance(
                        value, float(item["value"]), item["kind"], price_tolerance, pct_tolerance):
                    used.add(j)
                    break
        return len(used)
    numbers = [value for value, _ in found]
    correct, start = 0, 0
    for item in truth:
        for j in range(start, len(numbers)):
            if within_tolerance(numbers[j], float(item["value"]), item["kind"], price_tolerance, pct_tolerance):
                correct, start = correct + 1, j + 1
                break
    return correct


class NumberAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_INPUTS,
            features=datasets.Features({
                "predictions": datasets.Value("string"),
                # List (not Sequence) keeps a list of dicts instead of a dict of lists.
                "references": datasets.List({"value": datasets.Value("float64"), "kind": datasets.Value("string")}),
            }),
        )

    def _compute(self, predictions, references, families=None, price_tolerance=0.005, pct_tolerance=0.1,
                 ordered=True):
        if families is not None and len(families) != len(predictions):
            raise ValueError(f"families has {len(families)} entries for {len(predictions)} predictions")
        totals, hits, per_sample = defaultdict(int), defaultdict(int), []
        for i, (answer, truth) in enumerate(zip(predictions, references)):
            family = families[i] if families is not None else "all"
            correct = count_correct(answer or "", truth, price_tolerance, pct_tolerance, ordered)
            totals[family] += len(truth)
            hits[family] += correct
            per_sample.append(correct / len(truth) if truth else None)
        n_numbers, n_correct = sum(totals.values()), sum(hits.values())
        return {
            "accuracy": n_correct / n_numbers if n_numbers else None,
            "n_numbers": n_numbers,
            "n_correct": n_correct,
            "per_family": {f: hits[f] / totals[f] for f in sorted(totals) if totals[f]},
            "per_sample": per_sample,
        }
