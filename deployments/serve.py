"""Serve the daily-retrain deployment from a local process, and start the local Prefect UI.

    niftytune server --home var           # terminal 1: Prefect API + UI on http://127.0.0.1:4200
    niftytune serve  --home var           # terminal 2: the deployment, 18:00 IST Mon-Fri

The deployment is the one `deployments/prefect.yaml` declares for a work pool: the flow
`flows.daily_retrain.daily_retrain` (a module path, so `serve` works from any folder), Cron
`0 18 * * 1-5` in Asia/Kolkata (after the 15:30 close, with time for Yahoo to publish the day's
bars), one run at a time. `serve` talks to the server `niftytune server` started (see
`deployments/local_api.py` for why that is decided before Prefect is imported).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from common.schedule import CRON, TIMEZONE
from deployments.alerts import declare_alerts
from deployments.local_api import use_server

DEPLOYMENT_NAME = "daily"
DEFAULT_CRON = CRON  # common/schedule.py: the one cron and time zone of the daily run
DEFAULT_TIMEZONE = TIMEZONE
CONCURRENCY_LIMIT = 1


def build_deployment(home: Path, *, cron: str = DEFAULT_CRON, timezone: str = DEFAULT_TIMEZONE,
                     parameters: dict[str, Any] | None = None):
    """The daily-retrain RunnerDeployment: schedule, concurrency limit 1, default parameters."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.daily_retrain import daily_retrain

    defaults = {"home": str(home), **(parameters or {})}
    return daily_retrain.to_deployment(
        name=DEPLOYMENT_NAME,
        schedules=[Cron(cron, timezone=timezone)],
        concurrency_limit=CONCURRENCY_LIMIT,
        parameters={"params": defaults},
        description="Fetch the day's NSE/BSE bars, build samples, train a fresh adapter, "
                    "score it against the champion and promote it only if it is better.",
        tags=["niftytune"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve(home: Path, *, cron: str = DEFAULT_CRON, timezone: str = DEFAULT_TIMEZONE,
          source: str | None = None, profile: str | None = None) -> None:
    """Register the deployment with the server and run its scheduled and manual runs here."""
    url = use_server(required=True)  # before Prefect is imported: its settings are read once
    from prefect import serve as prefect_serve

    print(f"serving daily-retrain/daily against the Prefect server at {url}", flush=True)
    print(declare_alerts(), flush=True)  # a failed or crashed run notifies (deployments/alerts.py)
    parameters = {k: v for k, v in {"source": source, "profile": profile}.items() if v}
    prefect_serve(build_deployment(home, cron=cron, timezone=timezone, parameters=parameters))


def start_server(home: Path, *, host: str = "127.0.0.1", port: int = 4200) -> int:
    """Run `prefect server start` with its database under the home, as a child that dies with
    this process and gets its signals; return its exit status."""
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    print(f"Prefect UI: http://{host}:{port}  (database under {home / 'prefect'}; Ctrl-C stops it)", flush=True)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    from flows.processes import run_foreground  # SIGTERM reaches the server; it dies with this process

    return run_foreground(command, env=env)
