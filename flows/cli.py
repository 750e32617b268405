"""The `niftytune` command: one subcommand per thing a user does.

    niftytune fetch --source synthetic --home var/demo     # update the market store
    niftytune samples --home var/demo                      # build train/val chat samples
    niftytune train --profile cpu --home var/demo          # train one adapter (no registry)
    niftytune run --source synthetic --home var/demo       # the whole daily flow, once
    niftytune backfill --from 2019-11-25 --to 2019-11-29 --source csv --csv-dir DIR
    niftytune registry promoted --home var/demo            # query the registry
    niftytune ask "How did NIFTY 50 close?" --home var/demo
    niftytune api --home var/demo                          # OpenAI-compatible answer API on :8000
    niftytune server / niftytune serve                     # local Prefect UI / scheduled deployment

Every subcommand takes `--home DIR` (default `$NIFTYTUNE_HOME`, else `./var`). Parsing and
printing live here; the work is done by `tasks/`, `flows/` and `adapters_registry/`.
"""
from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path
from typing import Callable

DESCRIPTION = "Keep a small language model current on the Indian market: fetch, sample, train, gate, promote."


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _tickers(text: str) -> list[str]:
    symbols = [s.strip() for s in text.split(",") if s.strip()]
    if not symbols:
        raise argparse.ArgumentTypeError("--tickers needs at least one symbol, e.g. ^NSEI,TCS.NS")
    return symbols


def _add_home(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", metavar="DIR", help="runtime home (default: $NIFTYTUNE_HOME, else ./var)")


def _add_market(p: argparse.ArgumentParser, *, as_of: bool = True) -> None:
    g = p.add_argument_group("market data")
    g.add_argument("--source", choices=["yahoo", "csv", "synthetic"],
                   help="where bars come from: yahoo (live, default), csv (replay a folder of "
                        "yfinance-format <TICKER>.csv files), synthetic (seeded, offline)")
    g.add_argument("--csv-dir", type=Path, metavar="DIR", help="folder of <TICKER>.csv files for --source csv")
    g.add_argument("--tickers", type=_tickers, metavar="A,B,C",
                   help="replace the configured universe for this run, e.g. ^NSEI,^BSESN,TCS.NS")
    if as_of:
        g.add_argument("--as-of", type=_date, metavar="DATE",
                       help="the day to act as of (YYYY-MM-DD; default: today in Asia/Kolkata)")


def _add_profile(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument("--profile", metavar="NAME|FILE",
                   help="config profile: cpu, gpu, laptop-4gb or a YAML path (default: gpu with CUDA, else cpu)")
    g.add_argument("--base-model", metavar="ID|DIR",
                   help="base model: embedded:smollm2-135m-instruct (default), a hub id or a local folder")
    g.add_argument("--base-revision", metavar="SHA", help="hub commit to pin a hub base model to")
    g.add_argument("--max-steps", type=int, metavar="N", help="cap on optimizer steps (overrides the profile)")
    g.add_argument("--max-train-samples", type=int, metavar="N", help="cap on training samples")
    g.add_argument("--min-delta", type=float, metavar="X",
                   help="validation-loss improvement a candidate needs to be promoted")


OVERRIDES = {  # CLI flag -> dotted config field
    "source": "market.source", "csv_dir": "market.csv_dir", "base_model": "training.base_model",
    "base_revision": "training.base_revision", "max_steps": "training.max_steps",
    "max_train_samples": "samples.max_train_samples", "min_delta": "gate.min_delta",
}


def _config(args: argparse.Namespace):
    """The resolved config for this invocation: profile + flag overrides + --tickers; a bad
    profile, flag or date is a UserError (one line, exit status 2) before anything starts."""
    from flows.preflight import check_not_future, checked_config

    for flag in ("as_of", "to_date"):
        check_not_future(getattr(args, flag, None), "--" + flag.replace("_date", "").replace("_", "-"))
    overrides = {field: getattr(args, flag, None) for flag, field in OVERRIDES.items()}
    return checked_config(getattr(args, "profile", None), overrides, getattr(args, "tickers", None))


def _home(args: argparse.Namespace) -> Path:
    from tasks.config import resolve_home

    home = resolve_home(args.home)
    # Prefect keeps its database and settings under the runtime home, never in ~/.prefect.
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    # The local server must not phone home (this tool runs offline, and quietly).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # `evaluate` copies the local metric module into a cache: keep it under the home too.
    os.environ.setdefault("HF_MODULES_CACHE", str(home / "cache" / "hf-modules"))
    return home


def _prefect_api() -> None:
    """Runs go to the server of `niftytune server` when one answers (they show in its UI), else to
    a temporary local Prefect; decided before Prefect is imported (deployments/local_api.py)."""
    from deployments.local_api import use_server

    url = use_server(required=False)
    where = f"the server at {url}" if url else "a temporary local server (no `niftytune server` running)"
    print(f"Prefect: {where}", file=sys.stderr)


def _debug(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False) or os.environ.get("NIFTYTUNE_DEBUG"))


def _flow_logs(args: argparse.Namespace) -> None:
    """A flow's console logs show an expected error (Yahoo unreachable, a bad CSV) as Prefect's
    one-line messages, without tracebacks; --debug keeps them."""
    if not _debug(args):
        from flows.preflight import hide_expected_tracebacks

        hide_expected_tracebacks()


def _as_of(args: argparse.Namespace) -> date:
    from tasks.market.data import today_in_kolkata

    return args.as_of or today_in_kolkata()


# --- subcommands -------------------------------------------------------------------------

def cmd_fetch(args: argparse.Namespace) -> int:
    cfg = _config(args)  # a bad flag or profile fails before anything is created
    home = _home(args)
    _flow_logs(args)
    from flows.fetch_market import format_fetch_report, run_fetch
    from flows.preflight import writing
    from tasks.market.data import CoverageError

    try:
        with writing(home):
            report = run_fetch(home, cfg, args.as_of)
    except CoverageError as exc:  # nothing was stored; show what each ticker got and why
        print(format_fetch_report(exc.report))
        raise
    print(format_fetch_report(report))
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    cfg = _config(args)  # a bad flag or profile fails before anything is created
    home = _home(args)
    from flows.preflight import writing
    from tasks.samples.build import build_samples, format_sample_report
    from tasks.training.base_model import load_tokenizer, resolve_base_model

    with writing(home, prefect=False):
        sample_set = build_samples(home, cfg, _as_of(args))
    tokenizer = load_tokenizer(resolve_base_model(cfg.training, home))
    print(format_sample_report(sample_set, tokenizer))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config(args)  # a bad flag or profile fails before anything is created
    home = _home(args)
    from flows.preflight import writing
    from tasks.samples.build import build_samples
    from tasks.training.train import format_candidate, train_adapter

    with writing(home, prefect=False):
        sample_set = build_samples(home, cfg, _as_of(args))
        candidate = train_adapter(home, cfg, sample_set)
    print(format_candidate(candidate))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    home = _home(args)
    from tasks.answering import ask
    from tasks.samples.format import session_words

    answer = ask(home, args.question, version=args.version, closed_book=args.closed_book, today=args.today,
                 max_new_tokens=args.max_new_tokens)
    base = answer.version == "base"
    if answer.grounding is None:
        where = f"closed-book: from what the {'base model knows' if base else 'adapter learned'}, no data sheet"
    elif answer.refused:
        where = "no data for this question"
    else:
        where = f"figures from the session of {session_words(answer.session)}"
    who = "base model (no champion)" if base else answer.version
    print(f"[{who} · {where}] {answer.text}")
    if args.show_sheet and answer.grounding is not None and answer.grounding.sheet:
        print("\n" + answer.grounding.sheet)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    home = _home(args)
    from flows.preflight import UserError
    from tasks.answering.api import TOKEN_ENV, is_loopback, run_api

    token = os.environ.get(TOKEN_ENV) or None
    if not token and not is_loopback(args.host):
        if not args.allow_no_token:
            raise UserError(f"--host {args.host} is reachable from other machines: set {TOKEN_ENV} (clients then "
                            f"send `Authorization: Bearer <token>`), or pass --allow-no-token to serve without one")
        print(f"WARNING: niftytune api answers anyone who can reach {args.host}:{args.port}: no {TOKEN_ENV} is set",
              file=sys.stderr)
    run_api(home, host=args.host, port=args.port, token=token, poll_seconds=args.poll_seconds,
            max_batch=args.max_batch)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _config(args)  # a bad flag, profile or date fails here, before Prefect starts
    home = _home(args)
    _prefect_api()
    _flow_logs(args)
    from flows.daily_retrain import RetrainParameters, daily_retrain
    from flows.preflight import writing
    from tasks.promotion import resolve_champion
    from tasks.reporting import format_run_summary

    params = RetrainParameters(
        home=str(home), as_of=args.as_of, source=args.source, csv_dir=args.csv_dir and str(args.csv_dir),
        tickers=args.tickers, profile=args.profile, base_model=args.base_model,
        base_revision=args.base_revision, max_steps=args.max_steps,
        max_train_samples=args.max_train_samples, min_delta=args.min_delta,
        force=args.force, dry_run=args.dry_run)
    # a corrupt champion stops the run before Prefect starts, not after training
    with writing(home, registry=not args.dry_run, check=lambda: resolve_champion(home)):
        summary = daily_retrain(params)
    print(format_run_summary(summary))
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from flows.preflight import UserError, writing
    from tasks.promotion import resolve_champion

    if args.to_date < args.from_date:
        raise UserError(f"--to {args.to_date} is before --from {args.from_date}")
    _config(args)  # a bad flag, profile or date fails here, before Prefect starts
    home = _home(args)
    _prefect_api()
    _flow_logs(args)
    from flows.backfill import backfill
    from flows.daily_retrain import RetrainParameters
    from tasks.reporting import format_backfill_table

    template = RetrainParameters(
        home=str(home), source=args.source, csv_dir=args.csv_dir and str(args.csv_dir),
        tickers=args.tickers, profile=args.profile, base_model=args.base_model,
        base_revision=args.base_revision, max_steps=args.max_steps,
        max_train_samples=args.max_train_samples, min_delta=args.min_delta, force=args.force)
    with writing(home, check=lambda: resolve_champion(home)):  # a corrupt champion stops it first
        rows = backfill(args.from_date, args.to_date, template)
    print(format_backfill_table(rows))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    home = _home(args)
    from deployments.serve import serve

    serve(home, cron=args.cron, timezone=args.timezone, source=args.source, profile=args.profile)
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    home = _home(args)
    from deployments.serve import start_server

    start_server(home, host=args.host, port=args.port)  # replaces this process
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    home = _home(args)
    from adapters_registry.cli import run_command
    from flows.preflight import writing

    if args.registry_command != "rollback":
        return run_command(args)
    with writing(home, registry=False, prefect=False):  # one writer per home; the rollback repairs
        return run_command(args)


# --- parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="niftytune", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run `niftytune COMMAND --help` for a command's options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable, help_: str, desc: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=desc)
        p.set_defaults(func=func)
        _add_home(p)
        p.add_argument("--debug", action="store_true", help="show the traceback of any error")
        return p

    p = add("fetch", cmd_fetch, "fetch new trading days into the market store",
            "Fetch the bars after the store's last session (with a small overlap), validate them, "
            "and merge them into NIFTYTUNE_HOME/market/ atomically. A first run backfills "
            "market.backfill_sessions sessions. Prints a per-ticker summary.")
    _add_market(p), _add_profile(p)
    p = add("samples", cmd_samples, "build train/validation chat samples from the store",
            "Build chat samples (system, user, assistant) as of a session from the stored bars, "
            "write samples/<session>/train.jsonl and val.jsonl, and print counts per family, "
            "hashes and two conversations rendered through the base model's chat template.")
    _add_market(p), _add_profile(p)
    p = add("train", cmd_train, "train one LoRA/QLoRA adapter on a session's samples",
            "Build (or reuse) the session's samples and train a fresh adapter from the base model, "
            "with evaluation, early stopping and the best checkpoint restored. Writes "
            "runs/<run-id>/adapter/. Does not touch the registry (see `niftytune run`).")
    _add_market(p), _add_profile(p)
    p = add("run", cmd_run, "run the daily flow once (fetch, samples, train, score, gate, register)",
            "Run the daily-retrain Prefect flow once in this process. With `niftytune server` "
            "running (or PREFECT_API_URL set) the run reports there and shows in its UI; "
            "otherwise it uses a temporary local Prefect whose database lives under "
            "NIFTYTUNE_HOME/prefect.")
    _add_market(p), _add_profile(p)
    p.add_argument("--force", action="store_true", help="rerun a session that already has a decision")
    p.add_argument("--dry-run", action="store_true",
                   help="train, score and decide, but register nothing and move no pointer")
    p = add("backfill", cmd_backfill, "replay the daily flow over a range of past sessions",
            "Run the daily flow for each trading session from --from to --to in order (holidays "
            "skipped) and print each session's decision, scores and the champion after it.")
    p.add_argument("--from", dest="from_date", type=_date, required=True, metavar="DATE")
    p.add_argument("--to", dest="to_date", type=_date, required=True, metavar="DATE")
    _add_market(p, as_of=False), _add_profile(p)
    p.add_argument("--force", action="store_true", help="rerun sessions that already have a decision")
    p = add("ask", cmd_ask, "ask the promoted adapter a question",
            "Answer with the promoted (or named) adapter, grounded: the question's ticker(s) (names, symbols "
            "with or without .NS, aliases such as SBI, Nifty, RIL) and session (\"on 19 June\", \"yesterday\", "
            "\"last Friday\"; none: the latest) are read from the market store and their data sheet put into "
            "the prompt. A ticker or session the store does not hold gets that statement and no figure. "
            "Prints which version answered and which session the figures come from.")
    p.add_argument("question", help="the question, e.g. \"What did NIFTY 50 close at?\"")
    p.add_argument("--version", help="answer with this registered version instead of the champion")
    p.add_argument("--closed-book", action="store_true",
                   help="answer without a data sheet, from what the adapter learned in training")
    p.add_argument("--today", type=_date, metavar="DATE",
                   help="the day the question is asked on, for \"yesterday\" and \"last Friday\" "
                        "(default: today in Asia/Kolkata)")
    p.add_argument("--show-sheet", action="store_true", help="print the data sheet the answer was given")
    p.add_argument("--max-new-tokens", type=int, default=320,
                   help="answer length limit in tokens (default 320: answers end at the end of their turn, and "
                        "the longest the samples teach, market summaries, run to ~220)")
    p = add("api", cmd_api, "serve the champion behind an OpenAI-compatible answer API",
            "Serve the champion (model `niftytune-champion`) and every registered version that verifies (by id) "
            "at /v1/models and /v1/chat/completions, streaming or not: the last user message is answered grounded, "
            "as `ask` answers it, and the body and the X-Niftytune-Version / X-Niftytune-Session headers say which "
            "version answered and which session its figures come from. A promotion or rollback is followed without "
            "a restart; a version that fails verification is never served (GET /health says why). With "
            "NIFTYTUNE_API_TOKEN set, /v1 requests need `Authorization: Bearer <token>`.")
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default 127.0.0.1: this machine only; another address needs "
                        "NIFTYTUNE_API_TOKEN or --allow-no-token)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--allow-no-token", action="store_true",
                   help="serve a non-loopback --host without NIFTYTUNE_API_TOKEN (anyone who reaches it may ask)")
    p.add_argument("--poll-seconds", type=float, default=2.0,
                   help="how often champion.json is read to follow promotions and rollbacks (default 2)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="most questions answered in one batch when they wait together (default 8; 1: one at a time)")
    p = add("serve", cmd_serve, "serve the daily-retrain deployment on its schedule",
            "Serve the daily-retrain deployment from this process: scheduled Monday to Friday "
            "after the NSE close, one run at a time, startable from the Prefect UI. Needs a "
            "Prefect server: the one `niftytune server` starts on this machine (found at "
            "http://127.0.0.1:4200/api; nothing to export), or the one PREFECT_API_URL names.")
    p.add_argument("--cron", default="0 18 * * 1-5", help="schedule (default: 18:00 Mon-Fri)")
    p.add_argument("--timezone", default="Asia/Kolkata", help="time zone of the schedule")
    p.add_argument("--source", choices=["yahoo", "csv", "synthetic"], help="default source of scheduled runs")
    p.add_argument("--profile", help="default profile of scheduled runs")
    p = add("server", cmd_server, "start the local Prefect server and UI",
            "Start a Prefect server (API + UI) on localhost with its database under "
            "NIFTYTUNE_HOME/prefect. Open the printed address in a browser.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=4200, help="port (default 4200)")
    p = add("registry", cmd_registry, "query and manage the adapter registry",
            "List, show, verify and roll back registered adapters (same as `python -m adapters_registry`).")
    from adapters_registry.cli import add_commands

    add_commands(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("niftytune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the boundary: one clear line; a traceback for bugs or --debug
        from flows.preflight import report_error

        if _debug(args):
            raise
        return report_error(f"niftytune {args.command}", exc)


if __name__ == "__main__":
    sys.exit(main())
