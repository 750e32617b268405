"""The promotion gate: promote a candidate only when its validation loss beats the champion's
(or the base model's, before the first promotion) by at least `gate.min_delta`, and its answer
accuracy on the same probes is not below that baseline's by more than `gate.max_accuracy_drop`.

    scores = score_candidate(home, cfg, candidate, sample_set)   # tasks.evaluation.score; verifies the champion
    decision = decide_promotion(scores, cfg.gate.min_delta, cfg.gate.max_accuracy_drop)
    info = register_candidate(home, cfg, candidate, sample_set, scores, decision, coverage)

`decide` is pure; the registry does the writing. An error about the champion never turns into
a promotion: it raises.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, is_dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from adapters_registry import DecisionRecord, LedgerEntry, Registry, RegistryError, VersionInfo
from tasks.config import Config


class ChampionUnavailableError(RuntimeError):
    """The champion exists but cannot be loaded or verified; the run must fail, not promote."""


Decision = DecisionRecord
"""The gate's verdict on one candidate: the registry's record, as a manifest and the ledger keep it."""


def _loss_verdict(candidate_loss: float, baseline: str, baseline_loss: float, min_delta: float) -> tuple[bool, str, float]:
    delta = baseline_loss - candidate_loss
    promote = candidate_loss <= baseline_loss - min_delta and candidate_loss < baseline_loss
    relation = "beats" if delta > 0 else "ties" if delta == 0 else "is worse than"
    return promote, (f"candidate loss {candidate_loss:.6f} {relation} {baseline} loss {baseline_loss:.6f} "
                     f"(delta {delta:+.6f}, min_delta {min_delta:g})"), delta


def _accuracy_verdict(candidate: float | None, baseline_name: str, baseline: float | None,
                      max_drop: float) -> tuple[bool, str, float | None]:
    """Whether the answer accuracy holds (a drop of at most `max_drop`), and the comparison in words."""
    if candidate is None or baseline is None:
        return True, "answer accuracy not measured", None
    gap = candidate - baseline
    ok = gap >= -max_drop - 1e-12
    relation = "holds against" if ok else "drops below"
    return ok, (f"answer accuracy {candidate:.1%} {relation} {baseline_name} {baseline:.1%} "
                f"({gap * 100:+.1f} points, max drop {max_drop * 100:g} points)"), gap


def decide(candidate_loss: float, champion_loss: float | None, base_loss: float, min_delta: float,
           champion_error: str | None = None, *, accuracy: dict[str, float | None] | None = None,
           max_accuracy_drop: float = 0.0, incomparable_champion: str | None = None) -> Decision:
    """Promote iff the candidate's loss is at least `min_delta` below the champion's (the base
    model's when there is no champion) and its answer accuracy (`accuracy`: candidate, champion,
    base) is not below that baseline's by more than `max_accuracy_drop`. Ties, NaN and infinite
    losses never promote; a champion that could not be loaded or verified raises
    ChampionUnavailableError. `incomparable_champion` (why a champion was not scored) ends the reason."""
    if champion_error is not None:
        raise ChampionUnavailableError(f"the champion cannot be used, so no candidate is promoted: {champion_error}")
    if min_delta < 0 or not math.isfinite(min_delta):
        raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta}")
    baseline: Literal["champion", "base"] = "base" if champion_loss is None else "champion"
    baseline_loss = base_loss if champion_loss is None else champion_loss
    losses = {"candidate": candidate_loss, baseline: baseline_loss, "base": base_loss}
    note = f"; {incomparable_champion}" if incomparable_champion else ""
    bad = {name: loss for name, loss in losses.items() if loss is None or not math.isfinite(loss)}
    if bad:
        return Decision(promote=False, reason=f"not promoted: non-finite loss {bad}{note}", baseline=baseline,
                        delta=None, min_delta=min_delta, accuracy_delta=None, max_accuracy_drop=max_accuracy_drop)
    by_loss, loss_words, delta = _loss_verdict(candidate_loss, baseline, baseline_loss, min_delta)
    accuracy = accuracy or {}
    by_accuracy, accuracy_words, gap = _accuracy_verdict(accuracy.get("candidate"), baseline, accuracy.get(baseline),
                                                         max_accuracy_drop)
    promote = by_loss and by_accuracy
    verdict = "promoted" if promote else "not promoted on loss" if not by_loss else "not promoted on answer accuracy"
    return Decision(promote=promote, reason=f"{verdict}: {loss_words}; {accuracy_words}{note}", baseline=baseline,
                    delta=delta, min_delta=min_delta, accuracy_delta=gap, max_accuracy_drop=max_accuracy_drop)


def resolve_champion(home: str | Path) -> VersionInfo | None:
    """The current champion, verified (every file re-hashed); None before the first promotion.
    Any fault with a champion that should exist raises ChampionUnavailableError."""
    registry = Registry(home)
    try:
        champion = registry.champion()
    except RegistryError as exc:
        raise ChampionUnavailableError(f"champion pointer in {registry.root} is unusable: {exc}") from exc
    if champion is None:
        return None
    problems = registry.verify_version(champion.version)
    if problems:
        raise ChampionUnavailableError(f"champion {champion.version} fails verification: " + "; ".join(problems))
    return champion


def decide_promotion(scores: Any, min_delta: float, max_accuracy_drop: float = 0.0) -> Decision:
    """The gate on a ScoreReport: candidate vs champion (when one was scored) or vs base, on loss
    and on answer accuracy over the same probes."""
    champion = scores.scores.get("champion")
    if (champion is None) != (scores.champion_version is None):
        raise ChampionUnavailableError(f"scores name champion {scores.champion_version} but "
                                       f"{'lack' if champion is None else 'include'} a champion score")
    accuracy = {name: score.accuracy_overall for name, score in scores.scores.items()}
    return decide(scores.scores["candidate"].loss, champion.loss if champion else None,
                  scores.scores["base"].loss, min_delta, accuracy=accuracy, max_accuracy_drop=max_accuracy_drop,
                  incomparable_champion=scores.incomparable_reason)


def _base_words(identity: str, revision: str | None, file_hash: str | None) -> str:
    return identity + (f"@{revision}" if revision else "") + (f" (weights {file_hash[:12]})" if file_hash else "")


def base_model_change(champion: VersionInfo, base: Any) -> str | None:
    """Why `champion` cannot be compared with a candidate trained on `base` (a BaseModelRef):
    another identity, revision or weights than its manifest records; None when they match. Its
    adapter would not fit another base's layers, or would be scored on weights it never saw."""
    recorded = champion.manifest.lineage.base_model
    if ((recorded.identity, recorded.revision) == (base.identity, base.revision)
            and recorded.file_hash in (None, base.file_hash)):
        return None
    return (f"champion {champion.version} was trained on base model "
            f"{_base_words(recorded.identity, recorded.revision, recorded.file_hash)}, the candidate on "
            f"{_base_words(base.identity, base.revision, base.file_hash if recorded.file_hash else None)}: "
            "their losses are not comparable, so the candidate was compared with the base model")


def existing_decision(home: str | Path, session: date) -> LedgerEntry | None:
    """The last registration for `session` (version ids carry the session date), or None."""
    day = f"{session:%Y%m%d}"
    entries = [e for e in Registry(home).history()
               if e.event == "register" and e.version and e.version.split("-")[1] == day]
    return entries[-1] if entries else None


def build_lineage(cfg: Config, candidate: Any, sample_set: Any, scores: Any, coverage: Any = None,
                  flow_run_id: str | None = None) -> dict[str, Any]:
    """The manifest fields of a candidate: base model, data, config, scores, reproducibility."""
    training = json.loads(Path(candidate.training_json).read_text())
    base = candidate.base
    return {
        "base_model": {"identity": base.identity, "revision": base.revision, "file_hash": base.file_hash,
                       "source": base.source},
        "config": cfg.model_dump(mode="json"),
        "scores": scores.to_dict(),
        "data_window": dict(sample_set.data_window),
        "sample_hashes": {"train": sample_set.train_hash, "val": sample_set.val_hash,
                          "content": sample_set.content_hash},
        "library_versions": training.get("libraries", {}),
        "seed": cfg.training.seed,
        "flow_run_id": flow_run_id,
        "session": str(sample_set.session),
        "training": training,
        "coverage": _jsonable(coverage) if coverage is not None else {},
    }


def register_candidate(home: Path, cfg: Config, candidate: Any, sample_set: Any, scores: Any, decision: Decision,
                       coverage: Any = None, flow_run_id: str | None = None) -> VersionInfo:
    """Register the evaluated candidate with its decision (the pointer moves only on promote, and
    only if the champion it was scored against is still the champion); then apply retention."""
    registry = Registry(home, lock_timeout=cfg.registry.lock_timeout_seconds)
    lineage = build_lineage(cfg, candidate, sample_set, scores, coverage, flow_run_id)
    info = registry.register(candidate.adapter_dir, lineage,
                             decision, promote=decision.promote, expected_champion=scores.champion_at_scoring)
    registry.prune(cfg.registry.keep_promoted, cfg.registry.keep_rejected)
    return info


def _jsonable(value: Any) -> dict[str, Any]:
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    elif hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    data = json.loads(json.dumps(value, default=str))
    return data if isinstance(data, dict) else {"value": data}
