"""The Prefect tasks of the flows: each stage's plain function (in `tasks/`) with what Prefect
adds, and nothing else: retries, caching, a log line in the run, artifacts. `tasks/` imports no
Prefect; this is the one place a stage becomes a task.

    fetch = fetch_task(cfg)                  # market: retried on transient faults, per the config
    report = commit_bars(home, cfg, session, staged, failures)
    sample_set = build_sample_files(home, cfg, session.session)
    candidate = train_candidate(home, cfg, sample_set)
    scores = score_candidate(home, cfg, candidate, sample_set)
    version = register_candidate(home, cfg, candidate, sample_set, scores, decision, coverage)
    summary = publish_run(home, session, coverage, sample_set, scores, decision, version, timer, dry_run)

Nothing here is cached: every stage reads or writes the home, and a result served from a cache
would leave it unchanged (a registration) or compare scores computed apart (scoring).
"""
from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import Task, exponential_backoff

from common.timing import Stopwatch
from tasks import promotion, reporting
from tasks.config import Config, MarketConfig
from tasks.evaluation import score
from tasks.market import data as market_data
from tasks.market.calendar import TradingSession, resolve_session
from tasks.market.sources import TransientFetchError
from tasks.samples.build import SampleSet, build_samples
from tasks.training import train as training
from tasks.training.train import Candidate


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a fetch only on a TransientFetchError."""
    try:
        state.result()
    except TransientFetchError:
        return True
    except Exception:
        return False
    return False


def fetch_task(cfg: Config) -> Task[[Path, Config, str, TradingSession], Path]:
    """`fetch_new_bars` as the flows run it: a Prefect task retried on transient faults with the
    config's `market.fetch_*` budget. The only place those retries are set: decorator arguments
    are fixed at import, so a decorated default would differ from what a run is configured with."""
    market = cfg.market
    return task(name="fetch-new-bars", task_run_name="fetch-{symbol}",
                cache_policy=NO_CACHE, retries=market.fetch_retries, retry_condition_fn=is_transient,
                retry_delay_seconds=exponential_backoff(backoff_factor=market.fetch_backoff_seconds),
                retry_jitter_factor=market.fetch_jitter_factor)(market_data.fetch_new_bars)


@task(name="commit-bars", cache_policy=NO_CACHE)
def commit_bars(home: Path, cfg: Config, session: TradingSession, staged: dict[str, Path],
                failures: dict[str, str]) -> market_data.FetchReport:
    """Fail on poor coverage (store untouched), else merge all staged bars into the store."""
    report = market_data.commit_staged(home, cfg, session, staged, failures)
    get_run_logger().info("market data committed for session %s (coverage %.0f%%)",
                          session.session, 100 * report.coverage)
    return report


@task(name="resolve-session", cache_policy=NO_CACHE)
def resolve_trading_session(as_of: date, market: MarketConfig) -> TradingSession:
    """The NSE session due as of `as_of`: a weekend or holiday comes back with is_session False."""
    return resolve_session(as_of, market)


@task(name="build-samples", cache_policy=NO_CACHE)
def build_sample_files(home: Path, cfg: Config, as_of: date) -> SampleSet:
    """Build (or reuse) the session's sample files and log their counts and hash."""
    sample_set = build_samples(home, cfg, as_of)
    get_run_logger().info("samples %s: %d train, %d val, content sha256 %s", sample_set.session,
                          sample_set.n_train, sample_set.n_val, sample_set.content_hash[:12])
    return sample_set


# Not retried: a failed run is a bug or a bad config, and training again costs minutes.
@task(name="train-adapter", cache_policy=NO_CACHE)
def train_candidate(home: Path, cfg: Config, sample_set: SampleSet) -> Candidate:
    """Train a fresh adapter on the session's samples (the run folder is removed on failure,
    and by the next writer's cleanup if this process is killed: its id marks it as scratch);
    progress goes to the run's logs."""
    from flows.progress import training_progress
    from tasks.housekeeping import scratch_run_id

    return training.train_adapter(home, cfg, sample_set, run_id=scratch_run_id(), callbacks=[training_progress()])


score_candidate = task(name="score-candidate", cache_policy=NO_CACHE)(score.score_candidate)


@task(name="register-candidate", cache_policy=NO_CACHE)
def register_candidate(home: Path, cfg: Config, candidate: Candidate, sample_set: SampleSet, scores: Any,
                       decision: promotion.Decision, coverage: Any = None) -> Any:
    """`tasks.promotion.register_candidate`, recording the flow run it happened in."""
    from prefect.runtime import flow_run

    return promotion.register_candidate(home, cfg, candidate, sample_set, scores, decision, coverage,
                                        flow_run_id=flow_run.id)


def _publish(artifacts: list[reporting.Artifact]) -> None:
    for artifact in artifacts:
        create = create_markdown_artifact if artifact.kind == "markdown" else create_table_artifact
        create(artifact.body, key=artifact.key, description=artifact.description)


def publish_skip(home: Path, session: TradingSession, message: str) -> reporting.RunSummary:
    """A non-session day: its decision artifact says it was skipped (no fetch, no training)."""
    summary, artifacts = reporting.skip_report(home, session, message)
    _publish(artifacts)
    return summary


def publish_noop(home: Path, session: TradingSession, previous: Any) -> reporting.RunSummary:
    """A session that already has a decision: its artifact says so; nothing changes."""
    summary, artifacts = reporting.noop_report(home, session, previous)
    _publish(artifacts)
    return summary


@task(name="publish-report", cache_policy=NO_CACHE)
def publish_run(home: Path, session: Any, coverage: Any, sample_set: SampleSet, scores: Any, decision: Any,
                version: Any, timer: Stopwatch, dry_run: bool) -> reporting.RunSummary:
    """Publish a trained session's artifacts (decision, coverage, accuracy, version); return its summary."""
    summary, artifacts = reporting.run_report(home, session, coverage, sample_set, scores, decision, version,
                                              timer, dry_run)
    _publish(artifacts)
    return summary
