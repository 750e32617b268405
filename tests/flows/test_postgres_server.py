"""The Prefect server on PostgreSQL runs the daily flow (issue 13), as the README's "More than one
worker" section sets it up: export PREFECT_API_DATABASE_CONNECTION_URL, `niftytune server`, and
point `niftytune run` at it with PREFECT_API_URL (here on a free port, as the README's 4200 is
the session's SQLite server). `.ci/run` starts Debian's postgresql and names the database in
NIFTYTUNE_TEST_POSTGRES; elsewhere this test is skipped and says why."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

from tests.flows.conftest import log_tail, wait_for
from tests.flows.readme_processes import PrefectServer, start_process, stop_process, user_env

DATABASE = os.environ.get("NIFTYTUNE_TEST_POSTGRES")  # postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB

pytestmark = pytest.mark.skipif(not DATABASE, reason="no PostgreSQL: NIFTYTUNE_TEST_POSTGRES is unset "
                                "(.ci/run starts Debian's postgresql and sets it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flow_runs_in_database() -> int:
    """Rows of Prefect's flow_run table, read with psql straight from PostgreSQL."""
    url = DATABASE.replace("+asyncpg", "")
    done = subprocess.run([shutil.which("psql") or "psql", url, "-tAc", "select count(*) from flow_run"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_a_server_on_postgresql_runs_the_daily_flow(tmp_path, fast_profile):
    port = free_port()
    env = {**user_env(), "PREFECT_API_DATABASE_CONNECTION_URL": DATABASE}
    log = tmp_path / "server.log"
    proc = start_process(["niftytune", "server", "--home", "var", "--port", str(port)], tmp_path, log, env)
    try:
        server = PrefectServer(f"http://127.0.0.1:{port}", log)
        wait_for("the Prefect server on PostgreSQL", lambda: server.get("/health"), 180, proc, log)
        before = flow_runs_in_database()
        run_env = {**user_env(), "PREFECT_API_URL": server.api}
        done = subprocess.run(["niftytune", "run", "--home", "var", "--source", "synthetic", "--profile",
                               str(fast_profile), "--as-of", "2025-03-28", "--max-steps", "2"],
                              cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}\n{log_tail(log)}"
        assert f"Prefect: the server at {server.api}" in done.stderr
        [run] = server.post("/flow_runs/filter", {"flows": {"name": {"any_": ["daily-retrain"]}},
                                                  "sort": "START_TIME_DESC", "limit": 1})
        assert run["state_type"] == "COMPLETED"
        assert flow_runs_in_database() == before + 1
    finally:
        stop_process(proc)
