"""The promotion gate: promote only on a real improvement; never on ties, NaN, or a champion
that cannot be loaded or verified (fail closed)."""
from __future__ import annotations

import math
import shutil
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pytest

from adapters_registry import ChampionChangedError, Registry
from tasks.config import Config
from tasks.evaluation.score import ModelScore, ScoreReport
from tasks.promotion import (ChampionUnavailableError, decide, decide_promotion, existing_decision,
                             register_candidate, resolve_champion)
from tests.adapters_registry.fakes import VAL_HASH, decision, lineage, make_fake_adapter

MIN_DELTA = 0.01


def test_first_run_promotes_when_the_candidate_beats_the_base_by_min_delta():
    d = decide(candidate_loss=1.50, champion_loss=None, base_loss=1.60, min_delta=MIN_DELTA)
    assert d.promote and d.baseline == "base" and d.delta == pytest.approx(0.10) and d.min_delta == MIN_DELTA
    assert "promoted" in d.reason and "base loss 1.600000" in d.reason


def test_first_run_rejects_a_candidate_no_better_than_the_base():
    d = decide(candidate_loss=1.595, champion_loss=None, base_loss=1.60, min_delta=MIN_DELTA)
    assert not d.promote and d.baseline == "base"


def test_an_improvement_of_at_least_min_delta_over_the_champion_promotes():
    d = decide(candidate_loss=1.20, champion_loss=1.25, base_loss=2.0, min_delta=MIN_DELTA)
    assert d.promote and d.baseline == "champion" and d.delta == pytest.approx(0.05)


def test_an_improvement_below_min_delta_does_not_promote():
    d = decide(candidate_loss=1.245, champion_loss=1.25, base_loss=2.0, min_delta=MIN_DELTA)
    assert not d.promote and d.delta == pytest.approx(0.005) and "not promoted" in d.reason


def test_the_champion_not_the_base_is_the_baseline_once_there_is_one():
    d = decide(candidate_loss=1.5, champion_loss=1.2, base_loss=2.0, min_delta=MIN_DELTA)
    assert not d.promote and d.baseline == "champion" and "worse" in d.reason


@pytest.mark.parametrize("min_delta", [0.0, MIN_DELTA])
def test_a_tie_never_promotes(min_delta):
    assert not decide(1.25, 1.25, 2.0, min_delta).promote
    assert not decide(1.25, None, 1.25, min_delta).promote


@pytest.mark.parametrize("losses", [
    (math.nan, 1.25, 2.0), (1.0, math.nan, 2.0), (1.0, None, math.nan), (math.inf, 1.25, 2.0),
    (-math.inf, 1.25, 2.0), (1.0, 1.25, math.inf), (None, 1.25, 2.0)])
def test_nan_or_infinite_losses_never_promote(losses):
    d = decide(*losses, min_delta=MIN_DELTA)
    assert not d.promote and d.delta is None and "non-finite" in d.reason


def test_a_champion_error_fails_closed():
    with pytest.raises(ChampionUnavailableError, match="cannot be loaded"):
        decide(0.1, None, 2.0, MIN_DELTA, champion_error="cannot be loaded: disk error")


# ---- the answer-accuracy guard --------------------------------------------------------------

def test_promotes_when_the_loss_improves_and_the_accuracy_holds():
    d = decide(1.20, 1.25, 2.0, MIN_DELTA, accuracy={"candidate": 0.80, "champion": 0.78, "base": 0.1},
               max_accuracy_drop=0.02)
    assert d.promote and d.accuracy_delta == pytest.approx(0.02) and d.max_accuracy_drop == 0.02


def test_an_accuracy_drop_beyond_the_limit_rejects_a_candidate_with_a_better_loss():
    d = decide(1.20, 1.25, 2.0, MIN_DELTA, accuracy={"candidate": 0.70, "champion": 0.80, "base": 0.1},
               max_accuracy_drop=0.02)
    assert not d.promote and d.delta == pytest.approx(0.05) and "answer accuracy" in d.reason
    assert d.accuracy_delta == pytest.approx(-0.10)


def test_an_accuracy_drop_exactly_at_the_limit_is_allowed():
    d = decide(1.20, 1.25, 2.0, MIN_DELTA, accuracy={"candidate": 0.75, "champion": 0.80, "base": 0.1},
               max_accuracy_drop=0.05)
    assert d.promote


def test_a_zero_limit_rejects_any_accuracy_drop():
    d = decide(1.20, 1.25, 2.0, MIN_DELTA, accuracy={"candidate": 0.79, "champion": 0.80, "base": 0.1})
    assert not d.promote and "answer accuracy" in d.reason


@pytest.mark.parametrize("accuracy", [None, {}, {"candidate": None, "champion": 0.9, "base": 0.9},
                                      {"candidate": 0.1, "champion": None, "base": 0.9}])
def test_unmeasured_accuracy_leaves_the_decision_to_the_loss(accuracy):
    assert decide(1.20, 1.25, 2.0, MIN_DELTA, accuracy=accuracy).promote
    assert not decide(1.245, 1.25, 2.0, MIN_DELTA, accuracy=accuracy).promote


def test_the_accuracy_baseline_is_the_base_model_when_there_is_no_champion():
    kept = decide(1.50, None, 1.60, MIN_DELTA, accuracy={"candidate": 0.50, "champion": 0.99, "base": 0.50})
    assert kept.promote and kept.accuracy_delta == pytest.approx(0.0)
    dropped = decide(1.50, None, 1.60, MIN_DELTA, accuracy={"candidate": 0.40, "champion": None, "base": 0.50})
    assert not dropped.promote and "base" in dropped.reason and "answer accuracy" in dropped.reason


def test_an_accuracy_gain_does_not_rescue_a_loss_that_did_not_improve():
    d = decide(1.25, 1.25, 2.0, MIN_DELTA, accuracy={"candidate": 0.99, "champion": 0.10, "base": 0.1})
    assert not d.promote


@pytest.fixture
def registry_with_champion(tmp_path):
    registry = Registry(tmp_path / "home")
    registry.register(make_fake_adapter(tmp_path / "a1", 1), lineage(), decision(True, "base"), promote=True)
    return registry


def test_a_tampered_champion_fails_closed(registry_with_champion):
    weights = registry_with_champion.champion().path / "adapter_model.safetensors"
    weights.write_bytes(b"\x00" + weights.read_bytes()[1:])
    with pytest.raises(ChampionUnavailableError, match="fails verification"):
        resolve_champion(registry_with_champion.home)


def test_a_missing_champion_fails_closed(registry_with_champion):
    shutil.rmtree(registry_with_champion.champion().path)
    with pytest.raises(ChampionUnavailableError, match="unusable"):
        resolve_champion(registry_with_champion.home)


def test_a_corrupt_pointer_fails_closed(registry_with_champion):
    (registry_with_champion.root / "champion.json").write_text('{"version": ')
    with pytest.raises(ChampionUnavailableError, match="unusable"):
        resolve_champion(registry_with_champion.home)


def report(candidate: float, base: float = 2.0, champion: float | None = None,
           champion_version: str | None = None, accuracy: dict[str, float] | None = None) -> ScoreReport:
    accuracy = accuracy or {}
    models = {"base": ModelScore(loss=base, n_tokens=100, accuracy_overall=accuracy.get("base")),
              "candidate": ModelScore(loss=candidate, n_tokens=100, accuracy_overall=accuracy.get("candidate"))}
    if champion is not None:
        models["champion"] = ModelScore(loss=champion, n_tokens=100, accuracy_overall=accuracy.get("champion"))
    return ScoreReport(val_hash=VAL_HASH, val_path="val.jsonl", n_samples=10, n_tokens=100, models=models,
                       champion_version=champion_version)


def run_of(tmp_path: Path, seed: int) -> tuple[SimpleNamespace, SimpleNamespace]:
    """A trained candidate and its sample set, shaped like tasks.training.train / tasks.samples.store's."""
    adapter = make_fake_adapter(tmp_path / f"run{seed}" / "adapter", seed)
    base = SimpleNamespace(identity="embedded:smollm2-135m-instruct", revision=None, file_hash="c" * 64,
                           source="embedded")
    candidate = SimpleNamespace(adapter_dir=adapter, training_json=adapter / "training.json", base=base)
    sample_set = SimpleNamespace(session=date(2019, 11, 28 + seed % 2), val_path=tmp_path / "val.jsonl",
                                 val_hash=VAL_HASH, train_hash="a" * 64, content_hash="d" * 64,
                                 data_window={"^NSEI": ["2018-09-10", "2019-11-29"]})
    return candidate, sample_set


def test_decide_promotion_compares_with_the_champion_that_was_scored():
    assert decide_promotion(report(1.0, base=1.5), MIN_DELTA).baseline == "base"
    d = decide_promotion(report(1.0, champion=0.9, champion_version="v0001-20191128-00000000"), MIN_DELTA)
    assert not d.promote and d.baseline == "champion"
    with pytest.raises(ChampionUnavailableError):
        decide_promotion(report(1.0, champion_version="v0001-20191128-00000000"), MIN_DELTA)


def test_decide_promotion_gates_on_the_scored_accuracies():
    scores = report(1.0, champion=1.2, champion_version="v0001-20191128-00000000",
                    accuracy={"candidate": 0.5, "champion": 0.8, "base": 0.1})
    assert not decide_promotion(scores, MIN_DELTA, 0.1).promote
    assert decide_promotion(scores, MIN_DELTA, 0.3).promote
    first = report(1.0, base=1.5, accuracy={"candidate": 0.5, "base": 0.6})
    d = decide_promotion(first, MIN_DELTA, 0.05)
    assert not d.promote and d.accuracy_delta == pytest.approx(-0.1)


def test_register_candidate_records_every_candidate_and_moves_the_pointer_only_on_promote(tmp_path):
    home, cfg = tmp_path / "home", Config()
    first_scores = report(1.0, base=1.5)
    first = register_candidate(home, cfg, *run_of(tmp_path, 1), first_scores,
                                  decide_promotion(first_scores, MIN_DELTA), {"coverage": 1.0})
    worse_scores = report(1.1, base=1.5, champion=1.0, champion_version=first.version)
    worse = register_candidate(home, cfg, *run_of(tmp_path, 2), worse_scores,
                                  decide_promotion(worse_scores, MIN_DELTA))
    registry = Registry(home)
    assert registry.champion().version == first.version and not worse.promoted
    lineage_ = registry.get(worse.version).manifest.lineage
    assert lineage_.scores.champion_version == first.version and lineage_.scores.models["champion"].loss == 1.0
    assert lineage_.sample_hashes["val"] == VAL_HASH == lineage_.scores.val_hash
    assert lineage_.base_model.file_hash == "c" * 64 and registry.get(first.version).manifest.lineage.coverage
    assert existing_decision(home, date(2019, 11, 29)).version == first.version
    assert existing_decision(home, date(2019, 11, 28)).version == worse.version
    assert existing_decision(home, date(2019, 11, 27)) is None


def test_register_candidate_refuses_a_decision_against_a_superseded_champion(tmp_path):
    home, cfg = tmp_path / "home", Config()
    scores = report(1.0, base=1.5)
    register_candidate(home, cfg, *run_of(tmp_path, 1), scores, decide_promotion(scores, MIN_DELTA))
    with pytest.raises(ChampionChangedError):  # scored before the first promotion landed
        register_candidate(home, cfg, *run_of(tmp_path, 2), scores, decide_promotion(scores, MIN_DELTA))


def test_a_candidate_gated_against_the_base_replaces_a_champion_of_another_base_model(tmp_path):
    """A deliberate base-model change must not wedge the gate: the candidate is judged against
    its own base model and, when promoted, replaces the champion of the old one."""
    home, cfg = tmp_path / "home", Config()
    scores = report(1.0, base=1.5)
    first = register_candidate(home, cfg, *run_of(tmp_path, 1), scores, decide_promotion(scores, MIN_DELTA))
    why = f"champion {first.version} was trained on another base model"
    scores = report(1.0, base=1.5).model_copy(update={"incomparable_champion": first.version,
                                                       "incomparable_reason": why})
    d = decide_promotion(scores, MIN_DELTA)
    assert d.promote and d.baseline == "base" and d.reason.endswith(why)
    second = register_candidate(home, cfg, *run_of(tmp_path, 2), scores, d)
    assert Registry(home).champion().version == second.version and second.manifest.parent == first.version
