"""A killed command leaves no process behind: the temporary Prefect server of a SIGKILLed
`niftytune run` dies with it, `niftytune server` passes SIGTERM on to `prefect server start`,
and the next writer removes the killed run's training scratch (issue 16, failure 5)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.flows.conftest import clean_env, free_port

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "flows.cli"]


def watch_tree(proc: subprocess.Popen, until: Callable[[set[psutil.Process]], bool], timeout: float,
               log: Path | None = None) -> set:
    """Every descendant of `proc` seen until `until(descendants)` holds."""
    seen: set[psutil.Process] = set()
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the command exited early with {proc.returncode}: " + (
            log.read_text(errors="replace")[-3000:] if log else "")
        try:
            seen |= set(psutil.Process(proc.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        if until(seen):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"timed out; descendants seen: {[p.pid for p in seen]}")


def alive_after(processes: set[psutil.Process], grace: float) -> list[str]:
    _, alive = psutil.wait_procs(list(processes), timeout=grace)
    survivors = [f"{p.pid} {' '.join(cmdline(p)[:4])}" for p in alive]
    for p in alive:  # never leave them to the rest of the suite
        p.kill()
    return survivors


def cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def is_uvicorn(p: psutil.Process) -> bool:
    return "uvicorn" in cmdline(p)


def test_a_killed_run_leaves_no_process_and_its_scratch_is_removed_by_the_next_writer(tmp_path, fast_profile):
    home = tmp_path / "home"
    env = clean_env(NIFTYTUNE_HOME=str(home), PYTHONPATH=str(REPO))
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        run = subprocess.Popen(CLI + ["run", "--profile", str(fast_profile), "--as-of", "2025-03-28"],
                               cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # kill it while it trains: its Prefect server is up and its scratch folder exists
        seen = watch_tree(run, lambda kids: any(map(is_uvicorn, kids)) and any((home / "runs").glob("*")), 240,
                          log)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    assert alive_after(seen, grace=10) == []  # the Prefect server (uvicorn) included
    verify = subprocess.run(CLI + ["registry", "verify"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    samples = subprocess.run(CLI + ["samples", "--profile", str(fast_profile), "--as-of", "2025-03-28"], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300)
    assert samples.returncode == 0, samples.stderr[-2000:]
    assert list((home / "runs").glob("*")) == []


def test_sigterm_to_niftytune_server_stops_prefect_server_too(tmp_path):
    env = clean_env(PYTHONPATH=str(REPO))
    server = subprocess.Popen(CLI + ["server", "--home", str(tmp_path / "home"), "--port", str(free_port())],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen = watch_tree(server, lambda kids: any("server" in cmdline(p) for p in kids), 120)
    finally:
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        pytest.fail("niftytune server did not exit on SIGTERM")
    assert alive_after(seen, grace=30) == []
