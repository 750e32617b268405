"""The README's long-running commands as a user starts them, for the schedule and UI tests.

    niftytune server --home var     # terminal 1
    niftytune serve  --home var     # terminal 2

Each starts from one working folder (the user's clone), with the user's environment: this
process's, minus every PREFECT_* variable (the README asks for none), with the venv's bin first
on PATH, as `source .venv/bin/activate` leaves it. Nothing else is set; the server listens where
the README says, http://127.0.0.1:4200.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

README_URL = "http://127.0.0.1:4200"  # `niftytune server`'s default address
SERVING = "Your deployments are being served"  # what `prefect serve` prints once registered


def user_env() -> dict[str, str]:
    """A user's shell after `source .venv/bin/activate`: no PREFECT_* variable at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def start_process(command: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None
                  ) -> subprocess.Popen:
    """Start `command` in its own process group (so teardown can kill all its children); where
    util-linux's setpriv exists it also gets SIGTERM if pytest dies without a teardown."""
    env = env or user_env()
    program = shutil.which(command[0], path=env["PATH"])
    if program is None:
        pytest.fail(f"`{command[0]}` is not on PATH ({env['PATH']}): install the project (make install)")
    command = [program, *command[1:]]
    if shutil.which("setpriv"):
        command = ["setpriv", "--pdeathsig", "TERM", "--", *command]
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
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


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


SERVER_BUSY_RETRIES = 10


@dataclass
class PrefectServer:
    url: str  # http://127.0.0.1:PORT (the UI); the API is under /api
    log: Path

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def post(self, path: str, body: dict | None = None) -> Any:
        # Prefect's server answers 503 for errors it marks retryable (a busy database, e.g. while a
        # crashed run is being marked on a loaded 2-core machine); its own client retries them.
        for _ in range(SERVER_BUSY_RETRIES):
            response = httpx.post(f"{self.api}{path}", json=body or {}, timeout=10)
            if response.status_code != 503:
                break
            time.sleep(2)
        response.raise_for_status()
        return response.json()

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.api}{path}", timeout=10)
        response.raise_for_status()
        return response.json()

    def flow_run(self, run_id: str) -> dict:
        return self.get(f"/flow_runs/{run_id}")


@contextmanager
def readme_server(clone: Path) -> Iterator[PrefectServer]:
    """`niftytune server --home var` in `clone`, once its API answers at the README's address."""
    if not port_is_free("127.0.0.1", 4200):
        pytest.fail("port 4200 is taken: the README's `niftytune server` listens there; stop what holds it")
    log = clone / "server.log"
    proc = start_process(["niftytune", "server", "--home", "var"], clone, log)
    try:
        server = PrefectServer(README_URL, log)
        wait_for("`niftytune server` health", lambda: server.get("/health"), 120, proc, log)
        yield server
    finally:
        stop_process(proc)


@dataclass
class ServedDeployment:
    server: PrefectServer
    home: Path
    deployment: dict[str, Any]
    log: Path
    proc: subprocess.Popen

    @property
    def id(self) -> str:
        return self.deployment["id"]

    def create_run(self, name: str | None = None, **params: Any) -> dict:
        """A run of the deployment, as the UI's Run button creates it (params override defaults)."""
        defaults = self.deployment["parameters"]["params"]
        body = {"parameters": {"params": {**defaults, **params}}, **({"name": name} if name else {})}
        return self.server.post(f"/deployments/{self.id}/create_flow_run", body)

    def wait_final(self, run_id: str, timeout: float = 300) -> dict:
        """The run's record once it is in a final state."""
        final = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

        def done() -> dict | None:
            run = self.server.flow_run(run_id)
            return run if run["state_type"] in final else None

        return wait_for(f"flow run {run_id} final", done, timeout, self.proc, self.log, interval=1)


@contextmanager
def readme_serve(server: PrefectServer, clone: Path, *extra: str) -> Iterator[ServedDeployment]:
    """`niftytune serve --home var [extra]` in `clone`, once it has registered its deployment."""
    log = clone / f"serve-{len(list(clone.glob('serve-*.log')))}.log"  # one per serve process
    proc = start_process(["niftytune", "serve", "--home", "var", *extra], clone, log)
    try:
        wait_for("`niftytune serve` registered its deployment",
                 lambda: SERVING in log.read_text(errors="replace"), 120, proc, log)
        [deployment] = server.post("/deployments/filter", {"deployments": {"name": {"any_": ["daily"]}}})
        yield ServedDeployment(server, clone / "var", deployment, log, proc)
    finally:
        stop_process(proc)
