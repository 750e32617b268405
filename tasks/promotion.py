"""The promotion gate: promote a candidate only when its validation loss beats the champion's
(or the base model's, before the first promotion) by at least `gate.min_delta`.

    champion = resolve_champion(home)                   # ChampionUnavailableError: fail closed
    decision = decide(candidate_loss, champion_loss, base_loss, cfg.gate.min_delta)
    info = register_candidate(home, adapter_dir, lineage, decision, cfg, champion)

`decide` is pure; the registry does the writing. An error about the champion never turns into
a promotion: it raises.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from prefect import task

from adapters_registry import Registry, RegistryError, VersionInfo
from tasks.config import Config


class ChampionUnavailableError(RuntimeError):
    """The champion exists but cannot be loaded or verified; the run must fail, not promote."""


@dataclass(frozen=True)
class Decision:
    """The gate's verdict on one candidate."""

    promote: bool
    reason: str
    baseline: Literal["champion", "base"]
    delta: float | None
    """Baseline loss minus candidate loss (positive: the candidate is better); None if not finite."""
    min_delta: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(candidate_loss: float, champion_loss: float | None, base_loss: float, min_delta: float,
           champion_error: str | None = None) -> Decision:
    """Promote iff the candidate's loss is at least `min_delta` below the champion's (the base
    model's when there is no champion). Ties, NaN and infinite losses never promote; a champion
    that could not be loaded or verified raises ChampionUnavailableError."""
    if champion_error is not None:
        raise ChampionUnavailableError(f"the champion cannot be used, so no candidate is promoted: {champion_error}")
    if min_delta < 0 or not math.isfinite(min_delta):
        raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta}")
    baseline: Literal["champion", "base"] = "base" if champion_loss is None else "champion"
    baseline_loss = base_loss if champion_loss is None else champion_loss
    losses = {"candidate": candidate_loss, baseline: baseline_loss, "base": base_loss}
    bad = {name: loss for name, loss in losses.items() if loss is None or not math.isfinite(loss)}
    if bad:
        return Decision(False, f"not promoted: non-finite loss {bad}", baseline, None, min_delta)
    delta = baseline_loss - candidate_loss
    promote = candidate_loss <= baseline_loss - min_delta and candidate_loss < baseline_loss
    verdict = "promoted" if promote else "not promoted"
    relation = "beats" if delta > 0 else "ties" if delta == 0 else "is worse than"
    reason = (f"{verdict}: candidate loss {candidate_loss:.6f} {relation} {baseline} loss {baseline_loss:.6f} "
              f"(delta {delta:+.6f}, min_delta {min_delta:g})")
    return Decision(promote, reason, baseline, delta, min_delta)


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


def register_candidate(home: str | Path, adapter_dir: Path, lineage: dict[str, Any], decision: Decision,
                       cfg: Config, champion: VersionInfo | None) -> VersionInfo:
    """Register the evaluated candidate with its decision (the pointer moves only on promote,
    and only if `champion` is still the champion), then apply the retention policy."""
    registry = Registry(home, lock_timeout=cfg.registry.lock_timeout_seconds)
    info = registry.register(adapter_dir, lineage, decision, promote=decision.promote,
                             expected_champion=champion.version if champion else None)
    registry.prune(cfg.registry.keep_promoted, cfg.registry.keep_rejected)
    return info


@task(name="promote-if-better")
def promote_if_better(home: Path, adapter_dir: Path, lineage: dict[str, Any], scores: dict[str, Any],
                      cfg: Config, champion_version: str | None) -> tuple[Decision, str]:
    """Decide on the scored candidate and register it; return the decision and its version id."""
    champion = resolve_champion(home)
    if (champion.version if champion else None) != champion_version:
        raise ChampionUnavailableError(f"the candidate was scored against {champion_version}, "
                                       f"but the champion is now {champion.version if champion else None}")
    models = scores["models"]
    decision = decide(models["candidate"]["loss"], models["champion"]["loss"] if champion else None,
                      models["base"]["loss"], cfg.gate.min_delta)
    info = register_candidate(home, adapter_dir, {**lineage, "scores": scores}, decision, cfg, champion)
    return decision, info.version
