"""backfill: replay the daily flow over past trading sessions, in order.

    niftytune backfill --from 2019-11-25 --to 2019-11-29 --source csv --csv-dir ../shared/data/market

Each session runs the full daily-retrain flow (fetch as of that day, samples, train, score,
gate, register); holidays and weekends are skipped by the calendar before anything runs. The
table printed at the end shows each session's decision, scores and the champion after it.
"""
from __future__ import annotations

from datetime import date

from prefect import flow

from flows.daily_retrain import RetrainParameters, daily_retrain
from tasks.market.calendar import sessions_between
from tasks.reporting import RunSummary


@flow(name="backfill")
def backfill(start: date, end: date, template: RetrainParameters) -> list[RunSummary]:
    """Run daily-retrain for every NSE session from `start` to `end`, oldest first."""
    # 1. The sessions of the range (the same calendar the daily flow uses).
    sessions = sessions_between(start, end, template.config().market)
    # 2. One daily run per session, in order: each day's champion is the next day's baseline.
    return [daily_retrain(template.model_copy(update={"as_of": day})) for day in sessions]
