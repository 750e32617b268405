"""`python -m adapters_registry` (also mounted as `niftytune registry`): query the registry,
roll back, verify.

    python -m adapters_registry --home var list
    python -m adapters_registry promoted --path
    python -m adapters_registry champion-at 2019-11-29T18:00+05:30 --json
    python -m adapters_registry rollback v0002-20191128-1a2b3c4d --reason "v0003 answers in dollars"
    python -m adapters_registry rollback --to-base --reason "every version is corrupt"
    python -m adapters_registry verify          # exit status 1 on any mismatch

A table by default, JSON with `--json`. Exit status: 0 ok, 1 verify found problems or nothing
is promoted, 2 a registry error (message on stderr). The registry stands alone: this module
imports nothing of `tasks` or `flows` (its home comes from `common`); `build_app(write_guard=...)` is how a CLI that mounts it
holds its own lock around a rollback.
"""
from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from common.cli import run_app
from common.home import resolve_home

from .format import VERSIONS_DIR, RegistryError
from .queries import VersionInfo
from .store import Registry

HOME_HELP = "runtime home (default: $NIFTYTUNE_HOME, else ./var)"
Home = Annotated[Optional[str], typer.Option("--home", metavar="DIR", help=HOME_HELP)]
Json = Annotated[bool, typer.Option("--json", help="print JSON (machine-readable) instead of a table")]
WriteGuard = Callable[[Path], AbstractContextManager[Any]]


def _registry(ctx: typer.Context, home: str | None) -> Registry:
    """The registry of `--home` given after the command, else before it (`--home DIR list`)."""
    return Registry(resolve_home(home or (ctx.parent.params.get("home") if ctx.parent else None)))


def console() -> Console:
    """Rich output on stdout: the terminal's width there; elsewhere (a pipe, a test) lines are
    never wrapped, as plain `print` wrote them. No markup: reasons and paths print as written."""
    return Console(width=None if sys.stdout.isatty() else 100_000, markup=False, highlight=False)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _table(rows: list[list[str]], header: list[str]) -> None:
    table = Table(*header, box=box.SIMPLE_HEAD if sys.stdout.isatty() else None, show_edge=False, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    console().print(table)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _boundary(command: Callable[..., int]) -> Callable[..., int]:
    """Registry errors (and refused input) become one line on stderr and exit status 2."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            return command(*args, **kwargs)
        except (RegistryError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return run


def _version_row(info: VersionInfo, champion: str | None) -> list[str]:
    decision = info.manifest.decision
    return [("* " if info.version == champion else "  ") + info.version,
            info.manifest.created.strftime("%Y-%m-%d %H:%M"), "promote" if decision.promote else "reject",
            _fmt(info.candidate_loss), decision.baseline, _fmt(decision.delta), info.manifest.parent or "-"]


def list_versions(ctx: typer.Context, json_: Json = False, home: Home = None) -> int:
    """Every version, oldest first (* marks the champion)."""
    registry = _registry(ctx, home)
    versions, pointer = registry.list(), registry.pointer()
    champion = pointer.version if pointer else None
    if json_:
        _print_json([{**v.to_dict(), "champion": v.version == champion} for v in versions])
    else:
        _table([_version_row(v, champion) for v in versions],
               ["  VERSION", "CREATED", "DECISION", "LOSS", "BASELINE", "DELTA", "PARENT"])
    return 0


def _show_table(info: VersionInfo) -> None:
    manifest, lineage = info.manifest, info.manifest.lineage
    base, scores = lineage.base_model, lineage.scores
    _table([["version", info.version], ["path", str(info.path)], ["created", manifest.created.isoformat()],
            ["decision", f"{'promote' if manifest.decision.promote else 'reject'}: {manifest.decision.reason}"],
            ["parent", manifest.parent or "-"],
            ["base", f"{base.identity} (revision {base.revision or '-'}, weights {(base.file_hash or '-')[:12]})"],
            ["val set", f"{scores.val_hash[:12]}... ({scores.n_samples} samples, {scores.n_tokens} tokens)"]],
           ["FIELD", "VALUE"])
    _table([[name, _fmt(s.loss), _fmt(s.accuracy_overall)] for name, s in scores.models.items()],
           ["MODEL", "LOSS", "ACCURACY"])
    _table([[r.sha256[:12], str(r.size), name] for name, r in manifest.files.items()], ["SHA256", "BYTES", "FILE"])


def show(ctx: typer.Context, version: Annotated[str, typer.Argument(help="a registered version id")],
         json_: Json = False, home: Home = None) -> int:
    """One version's manifest: decision, base model, scores, files."""
    info = _registry(ctx, home).get(version)
    if json_:
        _print_json(info.to_dict())
    else:
        _show_table(info)
    return 0


def promoted(ctx: typer.Context, path: Annotated[bool, typer.Option("--path", help="print the version's folder")]
             = False, json_: Json = False, home: Home = None) -> int:
    """The champion's version id (or --path); exit status 1 when there is none."""
    registry = _registry(ctx, home)
    info = registry.verified_champion()  # refuses what `verify` would refuse of the champion
    if info is None:
        print(f"no champion in {registry.root} (nothing promoted, or rolled back to the base model)",
              file=sys.stderr)
        return 1
    if json_:
        _print_json(info.to_dict())
    else:
        print(info.path if path else info.version)
    return 0


def history(ctx: typer.Context, json_: Json = False, home: Home = None) -> int:
    """The ledger: registrations, decisions, rollbacks, prunes."""
    entries = _registry(ctx, home).history()
    if json_:
        _print_json([e.model_dump(mode="json", exclude_defaults=True) for e in entries])
        return 0
    base = {"promote", "rollback"}  # a move with no version: to the base model
    _table([[e.time.strftime("%Y-%m-%d %H:%M:%S"), e.event,
             e.version or ",".join(e.versions) or ("(base model)" if e.event in base else "-"),
             e.reason] for e in entries], ["TIME (UTC)", "EVENT", "VERSION", "REASON"])
    return 0


def champion_at(ctx: typer.Context, time: Annotated[str, typer.Argument(help="ISO 8601; naive = local time")],
                json_: Json = False, home: Home = None) -> int:
    """The champion at a time; exit status 1 when there was none."""
    registry = _registry(ctx, home)
    when = datetime.fromisoformat(time)
    version = registry.champion_at(when)
    present = version is not None and (registry.root / VERSIONS_DIR / version).is_dir()
    if json_:
        _print_json({"time": when.isoformat(), "version": version, "present": present})
    else:
        print("-" if version is None else version if present else f"{version} (pruned)")
    return 0 if version else 1


def rollback(ctx: typer.Context, reason: Annotated[str, typer.Option("--reason", help="why (recorded in the ledger)")],
             version: Annotated[Optional[str], typer.Argument(help="an earlier champion or promoted version")] = None,
             to_base: Annotated[bool, typer.Option("--to-base", help="leave no champion: the base model answers "
                                                                     "and is the gate's baseline")] = False,
             json_: Json = False, home: Home = None) -> int:
    """Point the champion back at an earlier version, or --to-base."""
    if (version is None) == (not to_base):
        raise ValueError("rollback needs either a VERSION or --to-base (not both)")
    registry = _registry(ctx, home)
    guard: WriteGuard | None = ctx.obj.get("write_guard") if isinstance(ctx.obj, dict) else None
    with (guard or (lambda _: nullcontext()))(registry.home):
        info = None if version is None else registry.rollback(version, reason)
        if version is None:  # --to-base, checked above
            registry.rollback_to_base(reason)
    if json_:
        _print_json(info.to_dict() if info else {"version": None})
    else:
        print(f"champion is now {info.version}" if info else "champion is now (none): the base model answers")
    return 0


def verify(ctx: typer.Context, json_: Json = False, home: Home = None) -> int:
    """Re-hash every file; exit status 1 on any mismatch."""
    registry = _registry(ctx, home)
    problems = registry.verify()
    if json_:
        _print_json({"ok": not problems, "problems": problems})
    elif problems:
        _table([[p] for p in problems], ["PROBLEM"])
    else:
        print(f"ok: {len(registry.list())} versions verified")
    return 1 if problems else 0


COMMANDS: dict[str, Callable[..., int]] = {
    "list": list_versions, "show": show, "promoted": promoted, "history": history, "champion-at": champion_at,
    "rollback": rollback, "verify": verify}
READ_COMMANDS = ("list", "show", "promoted", "history", "champion-at", "verify")


def _options(home: Home = None,
             debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an unexpected error")]
             = False) -> None:
    """Query, roll back and verify the adapter registry."""


def build_app(write_guard: WriteGuard | None = None) -> typer.Typer:
    """The registry's commands as a typer app (`niftytune registry` mounts one with `add_typer`);
    `write_guard(home)`, when given, is held around a rollback."""
    app = typer.Typer(name="registry", no_args_is_help=True, add_completion=False,
                      context_settings={"obj": {"write_guard": write_guard}},
                      help="Query, roll back and verify the adapter registry.")
    app.callback()(_options)
    for name, command in COMMANDS.items():
        app.command(name)(_boundary(command))
    return app


def main(argv: list[str] | None = None) -> int:
    """`python -m adapters_registry`: a usage error exits with status 2, --help with 0."""
    return run_app(build_app(), "python -m adapters_registry", argv)
