"""The daily deployment (issues 6, 13), served by the README's commands exactly
(`niftytune server --home var`, `niftytune serve --home var`, nothing exported): its runs
complete on that server, its next runs are at 18:00 Asia/Kolkata on weekdays, one at a time;
deployments/prefect.yaml declares the same deployment for a work pool."""
from __future__ import annotations

import subprocess
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
import yaml

from deployments import serve
from flows.daily_retrain import RetrainParameters, daily_retrain
from tests.flows.conftest import PROJECT_ROOT, log_tail, wait_for
from tests.flows.readme_processes import user_env

# The README's server address (127.0.0.1:4200): `make test` runs these files on their own, after the rest.
pytestmark = pytest.mark.readme_server

KOLKATA = ZoneInfo("Asia/Kolkata")
# SQLAlchemy 2.1 broke Prefect 3.8's scheduler service; its log then repeats this line.
SCHEDULER_BUG = "Can't evaluate bulk DML statement"


def scheduled_runs(served) -> list[dict]:
    return served.server.post("/flow_runs/filter", {
        "deployments": {"id": {"any_": [served.id]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}, "tags": {"all_": ["auto-scheduled"]}},
        "sort": "EXPECTED_START_TIME_ASC"})


@pytest.fixture(scope="module")
def next_runs(served_deployment) -> list[dict]:
    """The runs the server's scheduler created for the served deployment (at least three)."""
    def three_or_more() -> list[dict] | None:
        if SCHEDULER_BUG in log_tail(served_deployment.server.log, 20_000):
            pytest.fail("the Prefect scheduler fails with SQLAlchemy >= 2.1 (Can't evaluate bulk DML "
                        "statement); pin sqlalchemy<2.1 for prefect 3.8")
        runs = scheduled_runs(served_deployment)
        return runs if len(runs) >= 3 else None

    return wait_for("scheduled runs of the daily deployment", three_or_more, 90, log=served_deployment.server.log)


def test_next_runs_start_at_1800_kolkata_on_weekdays(next_runs):
    starts = [datetime.fromisoformat(r["expected_start_time"]).astimezone(KOLKATA) for r in next_runs]
    assert all((t.hour, t.minute, t.second) == (18, 0, 0) for t in starts), starts
    assert all(t.weekday() < 5 for t in starts), starts
    assert len({t.date() for t in starts}) == len(starts)  # one run per day


def test_a_run_of_the_served_deployment_completes_on_the_readme_server(served_deployment, fast_profile):
    # Issue 13: serve used to start a temporary server of its own (Prefect's settings were read
    # before it set PREFECT_API_URL), so runs started from the UI ended Cancelled or Crashed.
    run = served_deployment.create_run(as_of="2025-03-27", profile=str(fast_profile), max_steps=2)
    final = served_deployment.wait_final(run["id"])
    assert final["state_type"] == "COMPLETED", f"{final['state_name']}: {log_tail(served_deployment.log)}"
    serve_log = served_deployment.log.read_text()
    assert "Starting temporary server" not in serve_log
    assert "serving daily-retrain/daily against the Prefect server at http://127.0.0.1:4200/api" in serve_log
    assert date(2025, 3, 27).strftime("-%Y%m%d-") in " ".join(
        p.name for p in (served_deployment.home / "registry" / "versions").iterdir())


def test_niftytune_run_reports_to_the_readme_server_with_nothing_exported(prefect_server, readme_clone):
    # `niftytune run` while `niftytune server` is up: the run shows in that server's UI.
    done = subprocess.run(["niftytune", "run", "--home", "var", "--source", "synthetic", "--as-of", "2025-03-29"],
                          cwd=readme_clone, env=user_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Prefect: the server at http://127.0.0.1:4200/api" in done.stderr
    runs = prefect_server.post("/flow_runs/filter", {"flows": {"name": {"any_": ["daily-retrain"]}}})
    assert [r["state_type"] for r in runs if r["parameters"]["params"].get("as_of") == "2025-03-29"] == ["COMPLETED"]


def test_serve_without_an_alert_block_says_how_to_add_one(served_deployment):
    assert "alerts: no notification block named 'niftytune-alerts'; create one in the Prefect UI" in (
        served_deployment.log.read_text())
    assert served_deployment.server.post("/automations/filter", {}) == []


def test_served_deployment_runs_one_at_a_time_on_a_kolkata_cron(served_deployment):
    deployment = served_deployment.server.get(f"/deployments/{served_deployment.id}")
    [schedule] = deployment["schedules"]
    assert schedule["active"] and schedule["schedule"]["timezone"] == "Asia/Kolkata"
    assert schedule["schedule"]["cron"] == "0 18 * * 1-5"
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["entrypoint"] == "flows.daily_retrain.daily_retrain"  # from any folder
    assert deployment["parameters"] == {"params": {"home": str(served_deployment.home)}}


# --- deployments/prefect.yaml ------------------------------------------------------------------

@pytest.fixture
def declared() -> dict:
    """The one deployment deployments/prefect.yaml declares."""
    [deployment] = yaml.safe_load((PROJECT_ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]
    return deployment


@pytest.fixture
def served(tmp_path, monkeypatch):
    """The RunnerDeployment that `niftytune serve` registers (entrypoint relative to the project)."""
    monkeypatch.chdir(PROJECT_ROOT)
    return serve.build_deployment(tmp_path)


def test_prefect_yaml_declares_the_served_flow_schedule_and_concurrency(declared, served, monkeypatch):
    from prefect.flows import load_flow_from_entrypoint

    [schedule] = declared["schedules"]
    assert declared["name"] == served.name
    monkeypatch.chdir(PROJECT_ROOT)  # a worker runs prefect.yaml's file entrypoint from the project
    by_file, by_module = (load_flow_from_entrypoint(e) for e in (declared["entrypoint"], served.entrypoint))
    assert (by_file.name, by_file.fn.__code__.co_filename) == (by_module.name, by_module.fn.__code__.co_filename)
    assert (schedule["cron"], schedule["timezone"]) == (served.schedules[0].schedule.cron,
                                                        served.schedules[0].schedule.timezone)
    assert declared["concurrency_limit"] == served.concurrency_limit == 1


def test_prefect_yaml_entrypoint_resolves_to_the_daily_flow(declared, monkeypatch):
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(PROJECT_ROOT)
    loaded = load_flow_from_entrypoint(declared["entrypoint"])
    assert loaded.name == daily_retrain.name == "daily-retrain"
    assert loaded.fn.__qualname__ == daily_retrain.fn.__qualname__


def test_prefect_yaml_default_parameters_are_valid_flow_parameters(declared):
    params = RetrainParameters.model_validate(declared["parameters"]["params"])
    assert params.source == "yahoo" and not params.force and not params.dry_run
