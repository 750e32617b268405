"""Serve the daily-retrain deployment from a local process, and start the local Prefect UI.

    niftytune server --home var           # terminal 1: Prefect API + UI on http://127.0.0.1:4200
    niftytune serve  --home var           # terminal 2: the deployment, 18:00 IST Mon-Fri

The deployment is the same one `deployments/prefect.yaml` declares for a work pool: entrypoint
`flows/daily_retrain.py:daily_retrain`, Cron `0 18 * * 1-5` in Asia/Kolkata (after the 15:30
close, with time for Yahoo to publish the day's bars), one run at a time.
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEPLOYMENT_NAME = "daily"
DEFAULT_CRON = "0 18 * * 1-5"
DEFAULT_TIMEZONE = "Asia/Kolkata"
CONCURRENCY_LIMIT = 1
DEFAULT_API_URL = "http://127.0.0.1:4200/api"


def build_deployment(home: Path, *, cron: str = DEFAULT_CRON, timezone: str = DEFAULT_TIMEZONE,
                     parameters: dict[str, Any] | None = None):
    """The daily-retrain RunnerDeployment: schedule, concurrency limit 1, default parameters."""
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
    )


def api_url() -> str:
    """PREFECT_API_URL, defaulting (and exported) to the local server of `niftytune server`."""
    url = os.environ.get("PREFECT_API_URL") or DEFAULT_API_URL
    os.environ["PREFECT_API_URL"] = url
    return url


def check_server(url: str, timeout: float = 3.0) -> None:
    """Fail with a clear message when no Prefect server answers at `url`."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeError(f"no Prefect server answers at {url} ({exc}); start one with "
                           f"`niftytune server --home DIR` or set PREFECT_API_URL") from None


def serve(home: Path, *, cron: str = DEFAULT_CRON, timezone: str = DEFAULT_TIMEZONE,
          source: str | None = None, profile: str | None = None) -> None:
    """Register the deployment with the server and run its scheduled and manual runs here."""
    from prefect import serve as prefect_serve

    check_server(api_url())
    parameters = {k: v for k, v in {"source": source, "profile": profile}.items() if v}
    prefect_serve(build_deployment(home, cron=cron, timezone=timezone, parameters=parameters))


def start_server(home: Path, *, host: str = "127.0.0.1", port: int = 4200) -> int:
    """Run `prefect server start` in the foreground with its database under the home."""
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    print(f"Prefect UI: http://{host}:{port}  (database under {home / 'prefect'}; Ctrl-C stops it)")
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    from tasks.processes import run_foreground  # SIGTERM reaches the server; it dies with this process

    return run_foreground(command, env=env)
