"""Shared fixtures of the flow tests: one Prefect test harness for the session, a fast profile
built on the tiny model, and a real local Prefect server with the daily deployment served
against it (for the schedule and UI tests). Helpers the flow tests share sit at the bottom."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tasks import market_sources

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


# --- a real local Prefect server and the served deployment -----------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any PREFECT_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def start_process(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start `command` in its own process group (so teardown can kill all its children); where
    util-linux's setpriv exists it also gets SIGTERM if pytest dies without a teardown."""
    if shutil.which("setpriv"):
        command = ["setpriv", "--pdeathsig", "TERM", "--", *command]
    with open(log, "wb") as out:
        return subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL what is left of it (e.g. flow-run subprocesses)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def log_tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def wait_for(what: str, probe: Callable[[], Any], timeout: float, proc: subprocess.Popen | None = None,
             log: Path | None = None, interval: float = 0.5) -> Any:
    """Poll `probe` until it returns something truthy; fail clearly on timeout or process exit."""
    deadline, last_error = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode} first; log tail:\n{log_tail(log)}")
        try:
            result = probe()
            if result:
                return result
        except (httpx.TransportError, OSError) as exc:  # not up yet; an HTTP error status fails at once
            last_error = exc
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout:.0f} s (last error: {last_error}); log tail:\n"
                + (log_tail(log) if log else ""))


@dataclass
class PrefectServer:
    url: str  # http://127.0.0.1:PORT (the UI); the API is under /api
    log: Path

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def post(self, path: str, body: dict | None = None) -> Any:
        response = httpx.post(f"{self.api}{path}", json=body or {}, timeout=10)
        response.raise_for_status()
        return response.json()

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.api}{path}", timeout=10)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """`prefect server start` (API + UI) on a free port, with its database in a temp dir."""
    folder = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(PREFECT_HOME=str(folder / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                    PREFECT_UI_ENABLED="true", PREFECT_UI_API_URL=f"{url}/api",
                    PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1")
    log = folder / "server.log"
    proc = start_process([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                          "--port", str(port)], env, log)
    try:
        server = PrefectServer(url, log)
        wait_for("Prefect server health", lambda: server.get("/health"), 120, proc, log)
        yield server
    finally:
        stop_process(proc)


@dataclass
class ServedDeployment:
    server: PrefectServer
    home: Path
    deployment: dict[str, Any]
    log: Path

    @property
    def id(self) -> str:
        return self.deployment["id"]


@pytest.fixture(scope="session")
def served_deployment(prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[ServedDeployment]:
    """`niftytune serve --home <tmp>` against the local server, once its deployment is registered."""
    folder = tmp_path_factory.mktemp("served")
    home = folder / "home"
    cli = Path(sys.executable).with_name("niftytune")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "flows.cli"]
    env = clean_env(PREFECT_API_URL=prefect_server.api, PREFECT_HOME=str(folder / "prefect"),
                    PREFECT_RUNNER_POLL_FREQUENCY="2", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = folder / "serve.log"
    proc = start_process(command + ["serve", "--home", str(home)], env, log)
    try:
        def deployment() -> dict | None:
            found = prefect_server.post("/deployments/filter",
                                        {"deployments": {"name": {"any_": ["daily"]}}})
            return found[0] if found else None

        deployment_ = wait_for("the served deployment 'daily-retrain/daily'", deployment, 120, proc, log)
        yield ServedDeployment(prefect_server, home, deployment_, log)
    finally:
        stop_process(proc)


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
