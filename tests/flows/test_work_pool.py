"""The deployment on a Prefect work pool with a real `prefect worker` (issue 13): the commands of
deployments/prefect.yaml and the README, from the project folder, against the README's server.
The only variable set is the one the README asks for, PREFECT_API_URL (the `prefect` CLI reads
it; `niftytune` finds its server by itself)."""
from __future__ import annotations

import subprocess

import pytest

from tests.flows.conftest import PROJECT_ROOT, log_tail, wait_for
from tests.flows.readme_processes import README_URL, start_process, stop_process, user_env

# The README's server address (127.0.0.1:4200): `make test` runs these files on their own, after the rest.
pytestmark = pytest.mark.readme_server

# As deployments/prefect.yaml and the README write them.
SETUP = [["prefect", "work-pool", "create", "niftytune", "--type", "process"],
         ["prefect", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all"]]
WORKER = ["prefect", "worker", "start", "--pool", "niftytune"]


@pytest.fixture(scope="module")
def worker(prefect_server, tmp_path_factory):
    """The work pool, the prefect.yaml deployment, and `prefect worker start` polling the pool."""
    env = {**user_env(), "PREFECT_API_URL": f"{README_URL}/api"}
    for command in SETUP:
        done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    proc = start_process(WORKER, PROJECT_ROOT, log, env)
    try:
        yield proc, log
    finally:
        stop_process(proc)


def test_the_work_pool_deployment_runs_on_a_real_worker(prefect_server, worker, fast_profile, tmp_path):
    proc, log = worker
    [deployment] = prefect_server.post("/deployments/filter", {"deployments": {"name": {"any_": ["daily"]}}})
    assert deployment["work_pool_name"] == "niftytune"
    params = {**deployment["parameters"]["params"], "home": str(tmp_path / "home"), "source": "synthetic",
              "profile": str(fast_profile), "as_of": "2025-03-28", "max_steps": 2}
    run = prefect_server.post(f"/deployments/{deployment['id']}/create_flow_run",
                              {"parameters": {"params": params}, "name": "on-a-worker"})

    def final() -> dict | None:
        record = prefect_server.flow_run(run["id"])
        return record if record["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    record = wait_for("the worker's run", final, 300, proc, log, interval=2)
    assert record["state_type"] == "COMPLETED", f"{record['state_name']}: {log_tail(log)}"
    assert record["work_pool_name"] == "niftytune"
    assert (tmp_path / "home" / "registry" / "champion.json").exists()
