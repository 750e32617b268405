"""`niftytune run` and `backfill`: the daily-retrain Prefect flow, once or over past sessions.
Their config options reach the flow as its parameters (`ConfigChoice.flow_parameters`)."""
from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from flows.cli import common
from flows.cli.common import AsOf, ConfigChoice, Debug, Home, date_option, register

app = typer.Typer()
Force = Annotated[bool, typer.Option("--force", help="rerun a session that already has a decision")]
TRAINING_IMPORTS = ("peft", "datasets", "tasks.training.lean_trainer", "transformers.models.llama.modeling_llama",
                    "tasks.evaluation.score")
"""What a run's training and scoring import (torch, transformers, trl, peft: ~5 s on 2 cores),
imported while Prefect's temporary server starts (flows.processes.importing_meanwhile)."""


def _start(config: ConfigChoice, home: str | None, debug: bool, **days: date | None):
    """Check the dates and the config (a bad one fails here, before Prefect starts), then set up
    the home, Prefect's API and its console logs; the home's path."""
    from flows.preflight import check_not_future

    for flag, day in days.items():
        check_not_future(day, "--" + flag)
    config.resolve()
    path = common.prepare_home(home)
    common.prefect_api()
    common.flow_logs(debug)
    return path


@register(app, "run", "run the daily flow once (fetch, samples, train, score, gate, register)",
          "Run the daily-retrain Prefect flow once in this process. With `niftytune server` running (or "
          "PREFECT_API_URL set) the run reports there and shows in its UI; otherwise it uses a temporary local "
          "Prefect whose database lives under NIFTYTUNE_HOME/prefect.", config=True)
def run(config: ConfigChoice, as_of: AsOf = None, force: Force = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="train, score and decide, but register nothing "
                                                                "and move no pointer")] = False,
        home: Home = None, debug: Debug = False) -> int:
    path = _start(config, home, debug, **{"as-of": as_of})
    from flows.daily_retrain import RetrainParameters, daily_retrain
    from flows.preflight import writing
    from tasks.promotion import resolve_champion
    from tasks.reporting import format_run_summary

    params = RetrainParameters(home=str(path), as_of=as_of, force=force, dry_run=dry_run,
                               **config.flow_parameters())
    # a corrupt champion stops the run before Prefect starts, not after training
    with writing(path, registry=not dry_run, check=lambda: resolve_champion(path), warm=TRAINING_IMPORTS):
        summary = daily_retrain(params)
    print(format_run_summary(summary))
    return 0


@register(app, "backfill", "replay the daily flow over a range of past sessions",
          "Run the daily flow for each trading session from --from to --to in order (holidays skipped) and "
          "print each session's decision, scores and the champion after it.", config=True)
def backfill(config: ConfigChoice,
             from_date: Annotated[date, date_option("--from", "the first day (YYYY-MM-DD)")],
             to_date: Annotated[date, date_option("--to", "the last day (YYYY-MM-DD)")],
             force: Annotated[bool, typer.Option("--force", help="rerun sessions that already have a decision")]
             = False, home: Home = None, debug: Debug = False) -> int:
    from flows.preflight import UserError

    if to_date < from_date:
        raise UserError(f"--to {to_date} is before --from {from_date}")
    path = _start(config, home, debug, to=to_date)
    from flows.backfill import backfill as backfill_flow
    from flows.daily_retrain import RetrainParameters
    from flows.preflight import writing
    from tasks.promotion import resolve_champion
    from tasks.reporting import format_backfill_table

    template = RetrainParameters(home=str(path), force=force, **config.flow_parameters())
    with writing(path, check=lambda: resolve_champion(path), warm=TRAINING_IMPORTS):  # a corrupt champion stops it first
        rows = backfill_flow(from_date, to_date, template)
    print(format_backfill_table(rows))
    return 0
