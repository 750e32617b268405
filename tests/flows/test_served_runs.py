"""Runs of the served deployment on the README's server (issue 13): a run the schedule fires
completes; a run whose process is killed does not hold the deployment's one concurrency slot,
so the next run completes; and the crash is notified through the automation serve declares
(to a webhook block named niftytune-alerts, received here).

The deployment is served the README's way, `niftytune serve --home var`, with the documented
flags `--cron` and `--timezone` set to fire a minute ahead, and `--source`/`--profile` so the
fired run trains offline on the tiny model."""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from adapters_registry import Registry
from deployments.alerts import ALERT_BLOCK, AUTOMATION_NAME
from tests.flows.conftest import log_tail, wait_for
from tests.flows.readme_processes import ServedDeployment, readme_serve

# The README's server address (127.0.0.1:4200): `make test` runs these files on their own, after the rest.
pytestmark = pytest.mark.readme_server

# Serve registers in ~10-20 s on 2 cores and the scheduler needs a few more; the killed-run tests
# run while the minute comes (file order), and the scheduled run waits for the slot if need be.
LEAD = timedelta(seconds=45)


def next_minute(lead: timedelta) -> datetime:
    """The first whole UTC minute at least `lead` from now."""
    soon = datetime.now(timezone.utc) + lead
    return soon.replace(second=0, microsecond=0) + timedelta(minutes=1)


@pytest.fixture(scope="module")
def fires_at() -> datetime:
    return next_minute(LEAD)


class Inbox(list):
    """POST bodies received by a local webhook."""


@pytest.fixture(scope="module")
def alerts(prefect_server) -> Iterator[Inbox]:
    """A notification block `niftytune-alerts` posting to a webhook on this machine, as an operator
    would create in the UI (Blocks -> + -> Custom Webhook) before starting serve."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.settings import PREFECT_API_URL, temporary_settings

    inbox = Inbox()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            inbox.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    with temporary_settings({PREFECT_API_URL: prefect_server.api}):
        CustomWebhookNotificationBlock(name="alerts", url=f"http://127.0.0.1:{httpd.server_port}/",
                                       json_data={"subject": "{{subject}}", "body": "{{body}}"}
                                       ).save(ALERT_BLOCK, overwrite=True)
    try:
        yield inbox
    finally:
        httpd.shutdown()


@pytest.fixture(scope="module")
def cron_served(prefect_server, readme_clone, fast_profile, fires_at, alerts):
    """`niftytune serve --home var --cron "M H * * *" --timezone UTC --source synthetic --profile P`."""
    cron = f"{fires_at.minute} {fires_at.hour} * * *"
    with readme_serve(prefect_server, readme_clone, "--cron", cron, "--timezone", "UTC",
                      "--source", "synthetic", "--profile", str(fast_profile)) as served:
        yield served


def runs_of(served: ServedDeployment, **flow_run_filter) -> list[dict]:
    return served.server.post("/flow_runs/filter", {
        "deployments": {"id": {"any_": [served.id]}}, "flow_runs": flow_run_filter,
        "sort": "EXPECTED_START_TIME_ASC"})


def test_serve_declares_the_failure_automation(cron_served):
    [automation] = cron_served.server.post("/automations/filter", {})
    assert automation["name"] == AUTOMATION_NAME and automation["enabled"]
    assert set(automation["trigger"]["expect"]) == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert f"alerts: a failed or crashed run notifies through the block '{ALERT_BLOCK}'" in cron_served.log.read_text()


def flow_run_pid(run_id: str) -> int | None:
    """The process running flow run `run_id` (the runner passes PREFECT__FLOW_RUN_ID to it)."""
    marker = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:  # gone, or not ours
            continue
    return None


def test_a_killed_run_does_not_block_the_next_one(cron_served, tmp_path):
    day = {"home": str(tmp_path / "home"), "as_of": "2025-04-01"}  # a home of its own: any order of tests
    doomed = cron_served.create_run(name="killed-run", max_steps=16, **day)
    wait_for("the run to start", lambda: cron_served.server.flow_run(doomed["id"])["state_type"] == "RUNNING",
             120, cron_served.proc, cron_served.log)
    pid = wait_for("the run's process", lambda: flow_run_pid(doomed["id"]), 30)
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    os.kill(pid, signal.SIGKILL)  # as the OOM killer or a reboot would
    crashed = cron_served.wait_final(doomed["id"], timeout=60)
    assert crashed["state_type"] == "CRASHED", crashed["state_name"]
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == [], [p.pid for p in alive]  # no process of the run is left (issue 16)
    assert Registry(day["home"]).verify() == []

    # With the slot still held (limit 1), the next run would wait for ever instead of completing.
    after = cron_served.create_run(name="after-the-kill", max_steps=2, **day)
    final = cron_served.wait_final(after["id"], timeout=240)
    assert final["state_type"] == "COMPLETED", f"{final['state_name']}: {log_tail(cron_served.log)}"


def test_the_killed_run_was_notified(alerts):
    # Runs after test_a_killed_run_does_not_block_the_next_one (file order).
    notice = wait_for("the crash notification", lambda: [a for a in alerts if "killed-run" in a], 60)
    assert "Crashed" in notice[0]


def test_a_run_the_schedule_fires_completes(cron_served, fires_at):
    def fired() -> dict | None:
        runs = runs_of(cron_served, tags={"all_": ["auto-scheduled"]})
        due = [r for r in runs if datetime.fromisoformat(r["expected_start_time"]) == fires_at]
        return due[0] if due else None

    run = wait_for(f"a run scheduled at {fires_at:%H:%M} UTC", fired, 60, cron_served.proc, cron_served.log)
    wait_s = (fires_at - datetime.now(timezone.utc)).total_seconds() + 240
    final = cron_served.wait_final(run["id"], timeout=wait_s)
    assert final["state_type"] == "COMPLETED", f"{final['state_name']}: {log_tail(cron_served.log)}"
    assert final["parameters"]["params"]["source"] == "synthetic"
