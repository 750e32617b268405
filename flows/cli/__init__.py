"""The `niftytune` command: one subcommand per thing a user does.

    niftytune fetch --source synthetic --home var/demo     # update the market store
    niftytune store --home var/demo                        # what the store holds (read-only)
    niftytune samples --home var/demo                      # build train/val chat samples
    niftytune train --profile cpu --home var/demo          # train one adapter (no registry)
    niftytune run --source synthetic --home var/demo       # the whole daily flow, once
    niftytune run --set training.lora_r=32 --home var      # any config field, by its YAML key
    niftytune backfill --from 2019-11-25 --to 2019-11-29 --source csv --csv-dir DIR
    niftytune registry promoted --home var/demo            # query the registry (--json: machine-readable)
    niftytune ask "How did NIFTY 50 close?" --home var/demo
    niftytune api --home var/demo                          # OpenAI-compatible answer API on :8000
    niftytune server / niftytune serve                     # local Prefect UI / scheduled deployment

Every subcommand takes `--home DIR` (default `$NIFTYTUNE_HOME`, else `./var`). One module per
group of commands (data, runs, answer, service; the registry's app is adapters_registry/cli.py);
parsing and printing live here, the work is done by `tasks/`, `flows/` and `adapters_registry/`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from adapters_registry.cli import build_app as build_registry_app
from common.cli import run_app
from flows.cli import answer, common, data, runs, service

DESCRIPTION = "Keep a small language model current on the Indian market: fetch, sample, train, gate, promote."


def _rollback_guard(home: Path):
    """One writer per home: a rollback waits for no run, it is refused while one holds the home."""
    from flows.preflight import writing

    return writing(home, registry=False, prefect=False)


def build_app() -> typer.Typer:
    """The whole command line: each module's commands, and the registry's app as `registry`."""
    app = typer.Typer(help=DESCRIPTION, no_args_is_help=True, add_completion=False,
                      epilog="Run `niftytune COMMAND --help` for a command's options.")
    for group in (data.app, runs.app, answer.app, service.app):
        app.add_typer(group)
    app.add_typer(build_registry_app(write_guard=_rollback_guard), name="registry",
                  help="List, show, verify and roll back registered adapters (same as `python -m adapters_registry`).")
    return app


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status. A usage error exits with status 2, --help with 0."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return run_app(build_app(), "niftytune", args)
    except Exception as exc:  # the registry's app handles its own errors, not the home's lock (1)
        from flows.preflight import report_error

        if common.is_debug("--debug" in args):
            raise
        return report_error(f"niftytune {args[0]}", exc)
