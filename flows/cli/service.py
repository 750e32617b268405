"""`niftytune serve` and `server`: the scheduled deployment, and the local Prefect API and UI."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from common.schedule import CRON, TIMEZONE
from flows.cli.common import Debug, Home, prepare_home, register
from tasks.overrides import leaf_fields

app = typer.Typer()
if TYPE_CHECKING:
    Source = str  # to mypy, which cannot take a type from a value; typer gets the Literal below
else:
    Source = leaf_fields()["market.source"].annotation  # yahoo, csv, synthetic: the config's choices


@register(app, "serve", "serve the daily-retrain deployment on its schedule",
          "Serve the daily-retrain deployment from this process: scheduled Monday to Friday after the NSE close, "
          "one run at a time, startable from the Prefect UI. Needs a Prefect server: the one `niftytune server` "
          "starts on this machine (found at http://127.0.0.1:4200/api; nothing to export), or the one "
          "PREFECT_API_URL names.")
def serve(cron: Annotated[str, typer.Option("--cron", help="schedule (18:00 Mon-Fri)")] = CRON,
          timezone: Annotated[str, typer.Option("--timezone", help="time zone of the schedule")] = TIMEZONE,
          source: Annotated[Optional[Source], typer.Option(
              "--source", help="default source of scheduled runs")] = None,
          profile: Annotated[Optional[str], typer.Option("--profile", help="default profile of scheduled runs")]
          = None,
          home: Home = None, debug: Debug = False) -> int:
    path = prepare_home(home)
    from deployments.serve import serve as serve_deployment

    serve_deployment(path, cron=cron, timezone=timezone, source=source, profile=profile)
    return 0


@register(app, "server", "start the local Prefect server and UI",
          "Start a Prefect server (API + UI) on localhost with its database under NIFTYTUNE_HOME/prefect. Open "
          "the printed address in a browser.")
def server(host: Annotated[str, typer.Option("--host", help="bind address (127.0.0.1: this machine only)")]
           = "127.0.0.1",
           port: Annotated[int, typer.Option("--port", help="port")] = 4200,
           home: Home = None, debug: Debug = False) -> int:
    path = prepare_home(home)
    from deployments.serve import start_server

    return start_server(path, host=host, port=port)  # the server's exit status
