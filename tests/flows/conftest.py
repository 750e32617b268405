"""Shared fixtures of the flow tests: one Prefect test harness for the session, a fast profile
built on the tiny model, and the README's `niftytune server` and `niftytune serve` (for the
schedule and UI tests; tests/flows/readme_processes.py starts them as a user does). Helpers the flow tests share sit at the bottom."""
from __future__ import annotations

import hashlib
import os
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.market import sources as market_sources
from tests.flows.readme_processes import (PrefectServer, ServedDeployment, log_tail, readme_serve,  # noqa: F401
                                          readme_server, wait_for)
# The fake Yahoo of the market-data tests, as a fixture of every flow test (a test module that
# imported it would redefine it with the parameter of the same name).
from tests.tasks.test_market_yahoo import fake_yahoo  # noqa: F401

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = PROJECT_ROOT / "test-artifacts"  # git-ignored; CI keeps it

# The fast profile: configs/cpu.yaml with the tiny model and small caps, so a whole daily run
# (fetch, samples, train, score, register) takes seconds on 2 cores.
FAST_OVERRIDES = {
    "profile": "test-fast",
    "market.source": "synthetic",  # offline unless a test asks for another source
    "market.tickers": [{"symbol": "^NSEI", "name": "NIFTY 50", "kind": "index"},
                       {"symbol": "TCS.NS", "name": "TCS", "kind": "stock"}],
    "market.fetch_backoff_seconds": 0.01,  # retries without the production 2-4-8 s backoff
    "market.fetch_jitter_factor": 0.1,
    "samples.max_train_samples": 64,
    "samples.max_val_samples": 24,
    "training.max_steps": 4,
    "training.eval_steps": 2,
    "training.max_length": 384,
    "training.logging_steps": 2,
    "evaluation.probe_size": 4,
    "evaluation.max_new_tokens": 16,
}


# --- Prefect test harness ------------------------------------------------------------------

@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API (SQLite in a temp dir) for every flow test of the session."""
    from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # Analytics off: its heartbeat only adds "database is locked" noise to the test log.
    with temporary_settings({PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        with prefect_test_harness(server_startup_timeout=90):
            yield


@pytest.fixture(scope="session")
def fast_profile(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete copy of configs/cpu.yaml with FAST_OVERRIDES and the tiny model as base."""
    data = yaml.safe_load((PROJECT_ROOT / "configs" / "cpu.yaml").read_text())
    for key, value in {**FAST_OVERRIDES, "training.base_model": str(tiny_model_dir)}.items():
        *sections, field = key.split(".")
        node = data
        for section in sections:
            node = node[section]
        node[field] = value
    path = tmp_path_factory.mktemp("profiles") / "test-fast.yaml"
    path.write_text("# configs/cpu.yaml with the test overrides of tests/flows/conftest.py\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return path


# --- the README's `niftytune server` and `niftytune serve` -----------------------------------

@pytest.fixture(scope="session")
def readme_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder a user runs the README's commands in; `--home var` is its var/."""
    return tmp_path_factory.mktemp("clone")


@pytest.fixture(scope="session")
def prefect_server(readme_clone: Path) -> Iterator[PrefectServer]:
    """`niftytune server --home var`, exactly as the README starts it (http://127.0.0.1:4200)."""
    with readme_server(readme_clone) as server:
        yield server


@pytest.fixture(scope="module")
def served_deployment(prefect_server: PrefectServer, readme_clone: Path) -> Iterator[ServedDeployment]:
    """`niftytune serve --home var`, exactly as the README starts it, once it has registered."""
    with readme_serve(prefect_server, readme_clone) as served:
        yield served


# --- helpers for the flow tests ----------------------------------------------------------------

def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` by relative path ({} when it does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_daily(**params: Any):
    """Run daily-retrain with these parameters; return its final Prefect State."""
    from flows.daily_retrain import RetrainParameters, daily_retrain

    return daily_retrain(RetrainParameters(**params), return_state=True)


def read_artifact(flow_run_id: Any, key: str) -> Any:
    """The artifact `key` of one flow run, read back from the Prefect API (None if absent)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return found[-1] if found else None


@pytest.fixture
def attempts(monkeypatch) -> Counter:
    """How many times each ticker was fetched from Yahoo (one per Prefect task attempt)."""
    counts: Counter = Counter()
    fetch = market_sources.YahooSource.fetch

    def counting_fetch(self, symbol, start, end):
        counts[symbol] += 1
        return fetch(self, symbol, start, end)

    monkeypatch.setattr(market_sources.YahooSource, "fetch", counting_fetch)
    return counts


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any PREFECT_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


HOLD_LOCK = ("import sys, time; from pathlib import Path; from tasks.runlock import run_lock\n"
             "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)")
"""A process holding a home's writer lock the way `niftytune run` does, until it is killed."""
