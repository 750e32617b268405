"""`niftytune backfill` over a recorded week (issue 6): every session runs the daily flow in
order, and the table it prints is what the registry's ledger says happened."""
from __future__ import annotations

import contextlib
import io
import os
from datetime import date
from pathlib import Path
from unittest import mock

import pytest

from adapters_registry import Registry
from flows.cli import main

WEEK = [date(2019, 11, 25), date(2019, 11, 26), date(2019, 11, 27), date(2019, 11, 28), date(2019, 11, 29)]
COLUMNS = ["session", "decision", "base", "champion", "candidate", "version", "champion after"]

pytestmark = pytest.mark.usefixtures("prefect_harness")


def parse_table(text: str) -> list[dict[str, str]]:
    """The rows of format_backfill_table's output (the last lines printed; cells have no spaces)."""
    lines = text.strip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.split()[:2] == ["session", "decision"])
    return [dict(zip(COLUMNS, line.split())) for line in lines[start + 1:]]


def ledger_by_session(registry: Registry) -> list[dict[str, str]]:
    """Per registration, in ledger order: the version, its decision and the champion after it
    (the pointer as the ledger's promote/rollback events leave it before the next registration)."""
    rows, champion = [], None
    for entry in registry.history():
        if entry.event == "register":
            rows.append({"version": entry.version,
                         "decision": "promoted" if entry.decision.promote else "rejected"})
        elif entry.event in ("promote", "rollback"):
            champion = entry.version
        if rows:
            rows[-1]["champion after"] = champion or "-"
    return rows


@pytest.fixture(scope="module")
def backfilled(prefect_harness, fast_profile, shared_market, tmp_path_factory) -> tuple[Path, str]:
    """`niftytune backfill` over 2019-11-25..29 from the recorded CSVs: (home, what it printed)."""
    home = tmp_path_factory.mktemp("backfill") / "home"
    printed = io.StringIO()
    # patch.dict: the CLI exports settings for its home (PREFECT_HOME, ...); keep them to this call
    with mock.patch.dict(os.environ), contextlib.redirect_stdout(printed):
        code = main(["backfill", "--home", str(home), "--from", "2019-11-25", "--to", "2019-11-29",
                     "--source", "csv", "--csv-dir", str(shared_market), "--tickers", "^NSEI,TCS.NS,INFY.NS",
                     "--profile", str(fast_profile), "--max-steps", "2"])
    assert code == 0, printed.getvalue()
    return home, printed.getvalue()


def test_backfill_runs_every_session_of_the_range_in_order(backfilled):
    _, table = backfilled
    rows = parse_table(table)
    assert [r["session"] for r in rows] == [str(day) for day in WEEK]
    assert all(r["decision"] in ("promoted", "rejected") for r in rows)


def test_backfill_table_matches_the_registry_ledger(backfilled):
    home, table = backfilled
    rows, registry = parse_table(table), Registry(home)
    ledger = ledger_by_session(registry)
    assert [{k: r[k] for k in ("version", "decision", "champion after")} for r in rows] == ledger
    assert [r["version"].split("-")[1] for r in rows] == [f"{day:%Y%m%d}" for day in WEEK]
    assert registry.champion().version == rows[-1]["champion after"]


def test_backfill_table_shows_the_registered_scores(backfilled):
    home, table = backfilled
    registry = Registry(home)
    kept = {v.version: v for v in registry.list()}  # retention may have pruned old rejected ones
    for row in parse_table(table):
        if row["version"] in kept:
            assert row["candidate"] == f"{kept[row['version']].candidate_loss:.4f}"
