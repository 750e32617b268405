"""What a daily run tells people: the contents of its Prefect artifacts, with stable keys (so
the UI shows their history run after run; `flows.steps.publish_run` publishes them), per-stage
timings, and the one-screen summary `niftytune run` prints.

Artifact keys: `daily-retrain-decision` (markdown), `market-coverage` (table),
`answer-accuracy` (table), `registered-version` (markdown: the version and its folder as text;
the UI drops file:// links). Each reads at the UI's usual width (a ~700 px pane): short
columns, long reasons cut in the table and logged in full as warnings.
"""
from __future__ import annotations

import logging
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from common.table import format_table
from common.timing import Stopwatch

DECISION_KEY = "daily-retrain-decision"
COVERAGE_KEY = "market-coverage"
ACCURACY_KEY = "answer-accuracy"
VERSION_KEY = "registered-version"
MODELS = ("base", "champion", "candidate")
NOTES_WIDTH = 60  # characters of dropped-row reasons and anomalies a coverage row shows
log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """The outcome of one daily run, small enough to print, return and compare."""

    as_of: date
    session: date
    status: str  # skipped | no-op | promoted | rejected | dry-run
    message: str
    version: str | None = None
    champion: str | None = None
    losses: dict[str, float | None] = field(default_factory=dict)
    accuracy: dict[str, float | None] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "as_of": str(self.as_of), "session": str(self.session)}


def remove_run_dir(candidate: Any) -> None:
    """Prune the training scratch dir once the candidate is registered (or rejected)."""
    shutil.rmtree(candidate.run_dir, ignore_errors=True)


def _champion(home: Path) -> str | None:
    from adapters_registry import Registry

    champion = Registry(home).champion()
    return champion.version if champion else None


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _decision_markdown(summary: RunSummary, extra: list[str]) -> str:
    lines = [f"# daily-retrain {summary.as_of}: **{summary.status}**", "", summary.message, ""]
    if summary.losses:
        lines += ["| model | validation loss | answer accuracy |", "|---|---:|---:|"]
        lines += [f"| {m} | {_fmt(summary.losses.get(m))} | {_fmt(summary.accuracy.get(m), '.1%')} |"
                  for m in MODELS if m in summary.losses]
        lines.append("")
    lines += extra
    if summary.timings:
        lines += ["", "| stage | seconds |", "|---|---:|"]
        lines += [f"| {stage} | {sec:.1f} |" for stage, sec in summary.timings.items()]
    return "\n".join(lines)


@dataclass(frozen=True)
class Artifact:
    """One artifact of a run: `markdown` (a str body) or `table` (a list of row dicts)."""

    kind: str
    key: str
    body: Any
    description: str


def skip_report(home: Path, session: Any, message: str) -> tuple[RunSummary, list[Artifact]]:
    """A non-session day: a clean, reported skip (Completed, no fetch, no training)."""
    summary = RunSummary(session.as_of, session.session, "skipped", message, champion=_champion(home))
    extra = [f"- as of: {summary.as_of}; the last NSE session before it: {summary.session}",
             "- nothing was fetched, trained or registered",
             f"- champion: {summary.champion} (unchanged)" if summary.champion
             else "- champion: none yet (answers come from the base model)"]
    log.info(message)
    markdown = _decision_markdown(summary, extra)
    return summary, [Artifact("markdown", DECISION_KEY, markdown, f"{summary.as_of}: skipped")]


def noop_report(home: Path, session: Any, previous: Any) -> tuple[RunSummary, list[Artifact]]:
    """A session that already has a decision: say so and change nothing."""
    message = (f"no-op: session {session.session} already has a decision ({previous.version}, "
               f"{previous.time:%Y-%m-%d %H:%M}); pass force=true to retrain it")
    summary = RunSummary(session.as_of, session.session, "no-op", message, version=previous.version,
                         champion=_champion(home))
    log.info(message)
    return summary, [Artifact("markdown", DECISION_KEY, _decision_markdown(summary, []), f"{summary.as_of}: no-op")]


def _cut(text: str, width: int = NOTES_WIDTH) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _coverage_table(coverage: Any) -> list[dict[str, Any]]:
    """One short row per ticker; the full reasons are in the run's logs (warnings)."""
    rows = []
    for t in coverage.tickers:
        notes = [f"{d.session}: {d.reason}" for d in t.dropped] + list(t.anomalies)
        rows.append({"ticker": t.symbol, "last session": str(t.last_session or "-"), "added": t.rows_added,
                     "revised": t.rows_revised, "dropped": len(t.dropped),
                     "status": "ok" if t.has_session else "stale", "notes": _cut("; ".join(notes)) or "none"})
    return rows


def _probe_family(probe_id: str) -> str:
    """A probe id (`family/tickers/session/key/mode/template/phrase`) as its accuracy key:
    the family, marked when it was asked closed-book (tasks.evaluation.probes.probe_family)."""
    parts = probe_id.split("/")
    return parts[0] + (" (closed-book)" if len(parts) > 4 and parts[4] == "closed_book" else "")


def _accuracy_table(scores: Any) -> list[dict[str, Any]]:
    """Per question family: how many probe questions, and each model's share answered right."""
    probes = Counter(_probe_family(str(p)) for p in scores.probe_ids)
    families = sorted({f for s in scores.scores.values() for f in (s.accuracy or {})})
    return [{"family": f, "probes": probes.get(f, 0),
             **{m: _fmt((scores.scores[m].accuracy or {}).get(f), ".1%") for m in MODELS if m in scores.scores}}
            for f in families]


def _data_window(sample_set: Any) -> str:
    """`2019-08-26 .. 2019-11-29` (bars the samples were built from), per ticker when they differ."""
    windows = {tuple(w) for w in sample_set.data_window.values()}
    if len(windows) == 1:
        first, last = windows.pop()
        return f"bars {first} .. {last}"
    return "bars " + ", ".join(f"{t} {a} .. {b}" for t, (a, b) in sorted(sample_set.data_window.items()))


def _version_markdown(version: Any, status: str, home: Path) -> str:
    folder = Path(version.path).resolve()
    return "\n".join([f"# {version.version} ({status})", "", "Folder (copy the path; the UI does not open files):",
                      "", f"`{folder}`", "", f"Inspect it: `niftytune registry show {version.version} --home {home}`"])


def _run_details(summary: RunSummary, coverage: Any, sample_set: Any, scores: Any, decision: Any) -> list[str]:
    if decision.baseline == "champion":
        baseline = f"- compared with the champion {scores.champion_version}"
    elif scores.incomparable_champion:
        baseline = (f"- champion before this run: {scores.incomparable_champion}, trained on another base model, "
                    "so the candidate was compared with the base model")
    else:
        baseline = "- champion before this run: none yet, so the candidate was compared with the base model"
    return [baseline,
            f"- delta vs {decision.baseline}: {_fmt(decision.delta, '+.6f')} (min_delta {decision.min_delta:g})",
            f"- candidate version: {summary.version or '(not registered: dry run)'}",
            f"- champion after this run: {summary.champion or '(none)'}",
            f"- scored on {scores.n_samples} validation conversations ({scores.n_tokens} answer tokens), "
            f"val.jsonl sha256 {scores.val_hash[:16]}…",
            f"- data: {len(coverage.tickers)} tickers from {coverage.source}, {_data_window(sample_set)}"]


def run_report(home: Path, session: Any, coverage: Any, sample_set: Any, scores: Any, decision: Any,
               version: Any, timer: Stopwatch, dry_run: bool) -> tuple[RunSummary, list[Artifact]]:
    """The summary of a trained session and its artifacts: decision, coverage, accuracy, version."""
    status = "dry-run" if dry_run else ("promoted" if decision.promote else "rejected")
    summary = RunSummary(
        session.as_of, session.session, status, decision.reason,
        version=version.version if version else None, champion=_champion(home),
        losses={m: s.loss for m, s in scores.scores.items()},
        accuracy={m: s.accuracy_overall for m, s in scores.scores.items()}, timings=dict(timer.seconds))
    extra = _run_details(summary, coverage, sample_set, scores, decision)
    artifacts = [
        Artifact("markdown", DECISION_KEY, _decision_markdown(summary, extra), f"{summary.as_of}: {status}"),
        Artifact("table", COVERAGE_KEY, _coverage_table(coverage), f"market coverage for {summary.session}"),
        Artifact("table", ACCURACY_KEY, _accuracy_table(scores),
                 f"answer accuracy per question family for {summary.session}")]
    if version is not None:
        artifacts.append(Artifact("markdown", VERSION_KEY, _version_markdown(version, status, home),
                                  f"registered version for {summary.session} ({status})"))
    return summary, artifacts


def log_decision(scores: Any, decision: Any) -> None:
    """The scores of the three models and the gate's decision with its reason, in the run's logs."""
    for model in MODELS:
        if model in scores.scores:
            s = scores.scores[model]
            log.info("score %s: validation loss %.4f, answer accuracy %s", model, s.loss,
                     _fmt(s.accuracy_overall, ".1%"))
    log.info("decision: %s (%s)", "promote" if decision.promote else "reject", decision.reason)


def format_run_summary(summary: RunSummary) -> str:
    """The few lines `niftytune run` prints at the end."""
    lines = [f"daily-retrain as of {summary.as_of} (session {summary.session}): {summary.status.upper()}",
             f"  {summary.message}"]
    if summary.losses:
        lines.append("  validation loss: " + ", ".join(
            f"{m} {_fmt(summary.losses.get(m))}" for m in MODELS if m in summary.losses))
        lines.append("  answer accuracy: " + ", ".join(
            f"{m} {_fmt(summary.accuracy.get(m), '.1%')}" for m in MODELS if m in summary.accuracy))
    if summary.version:
        lines.append(f"  registered: {summary.version}")
    lines.append(f"  champion now: {summary.champion or '(none)'}")
    if summary.timings:
        lines.append("  stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in summary.timings.items()))
    return "\n".join(lines)


def format_backfill_table(rows: list[RunSummary]) -> str:
    """One line per session: decision, the three losses, the registered version, the champion."""
    header = ["session", "decision", "base", "champion", "candidate", "version", "champion after"]
    return format_table([[str(r.session), r.status, _fmt(r.losses.get("base")), _fmt(r.losses.get("champion")),
                          _fmt(r.losses.get("candidate")), r.version or "-", r.champion or "-"] for r in rows], header)
