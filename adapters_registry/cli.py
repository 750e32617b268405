"""`python -m adapters_registry` (also mounted as `niftytune registry`): query the registry,
roll back, verify.

    python -m adapters_registry --home var list
    python -m adapters_registry promoted --path
    python -m adapters_registry champion-at 2019-11-29T18:00+05:30 --json
    python -m adapters_registry rollback v0002-20191128-1a2b3c4d --reason "v0003 answers in dollars"
    python -m adapters_registry rollback --to-base --reason "every version is corrupt"
    python -m adapters_registry verify          # exit status 1 on any mismatch

A readable table by default, JSON with `--json`. Exit status: 0 ok, 1 verify found problems
or nothing is promoted, 2 a registry error (message on stderr).
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from .format import VERSIONS_DIR, RegistryError
from .queries import VersionInfo
from .store import Registry


def _home(args: argparse.Namespace):
    from common.home import resolve_home
    return resolve_home(getattr(args, "home", None))


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _version_row(info: VersionInfo, champion: str | None) -> list[str]:
    decision = info.manifest.decision
    return [("* " if info.version == champion else "  ") + info.version,
            info.manifest.created.strftime("%Y-%m-%d %H:%M"), "promote" if decision.promote else "reject",
            _fmt(info.candidate_loss), decision.baseline, _fmt(decision.delta), info.manifest.parent or "-"]


def _cmd_list(registry: Registry, args) -> int:
    versions, pointer = registry.list(), registry.pointer()
    champion = pointer.version if pointer else None
    if args.json:
        _print_json([{**v.to_dict(), "champion": v.version == champion} for v in versions])
    else:
        _table([_version_row(v, champion) for v in versions],
               ["  VERSION", "CREATED", "DECISION", "LOSS", "BASELINE", "DELTA", "PARENT"])
    return 0


def _cmd_show(registry: Registry, args) -> int:
    info = registry.get(args.version)
    if args.json:
        _print_json(info.to_dict())
        return 0
    manifest, lineage = info.manifest, info.manifest.lineage
    print(f"version   {info.version}\npath      {info.path}\ncreated   {manifest.created.isoformat()}")
    print(f"decision  {'promote' if manifest.decision.promote else 'reject'}: {manifest.decision.reason}")
    print(f"parent    {manifest.parent or '-'}\nbase      {lineage.base_model.identity} "
          f"(revision {lineage.base_model.revision or '-'}, weights {(lineage.base_model.file_hash or '-')[:12]})")
    print(f"val set   {lineage.scores.val_hash[:12]}... ({lineage.scores.n_samples} samples, "
          f"{lineage.scores.n_tokens} tokens)")
    for name, score in lineage.scores.models.items():
        print(f"  {name:<10} loss {_fmt(score.loss)}  accuracy {_fmt(score.accuracy_overall)}")
    for name, record in manifest.files.items():
        print(f"  {record.sha256[:12]}  {record.size:>10}  {name}")
    return 0


def _cmd_promoted(registry: Registry, args) -> int:
    info = registry.verified_champion()  # refuses what `verify` would refuse of the champion
    if info is None:
        print(f"no champion in {registry.root} (nothing promoted, or rolled back to the base model)",
              file=sys.stderr)
        return 1
    if args.json:
        _print_json(info.to_dict())
    else:
        print(info.path if args.path else info.version)
    return 0


def _cmd_history(registry: Registry, args) -> int:
    entries = registry.history()
    if args.json:
        _print_json([e.model_dump(mode="json", exclude_defaults=True) for e in entries])
    else:
        base = {"promote", "rollback"}  # a move with no version: to the base model
        _table([[e.time.strftime("%Y-%m-%d %H:%M:%S"), e.event,
                 e.version or ",".join(e.versions) or ("(base model)" if e.event in base else "-"),
                 e.reason] for e in entries], ["TIME (UTC)", "EVENT", "VERSION", "REASON"])
    return 0


def _cmd_champion_at(registry: Registry, args) -> int:
    when = datetime.fromisoformat(args.time)
    version = registry.champion_at(when)
    present = version is not None and (registry.root / VERSIONS_DIR / version).is_dir()
    if args.json:
        _print_json({"time": when.isoformat(), "version": version, "present": present})
    else:
        print("-" if version is None else version if present else f"{version} (pruned)")
    return 0 if version else 1


def _cmd_rollback(registry: Registry, args) -> int:
    if (args.version is None) == (not args.to_base):
        raise ValueError("rollback needs either a VERSION or --to-base (not both)")
    if args.to_base:
        registry.rollback_to_base(args.reason)
        info = None
    else:
        info = registry.rollback(args.version, args.reason)
    if args.json:
        _print_json(info.to_dict() if info else {"version": None})
    else:
        print(f"champion is now {info.version}" if info else "champion is now (none): the base model answers")
    return 0


def _cmd_verify(registry: Registry, args) -> int:
    problems = registry.verify()
    if args.json:
        _print_json({"ok": not problems, "problems": problems})
    else:
        print("\n".join(problems) if problems else f"ok: {len(registry.list())} versions verified")
    return 1 if problems else 0


COMMANDS = {"list": _cmd_list, "show": _cmd_show, "promoted": _cmd_promoted, "history": _cmd_history,
            "champion-at": _cmd_champion_at, "rollback": _cmd_rollback, "verify": _cmd_verify}


def build_parser(subparsers: Any = None) -> argparse.ArgumentParser:
    """The registry's parser; given the `add_subparsers()` object of another CLI, mounts itself
    there as `registry`. Dispatch with `run_command(args)` (also set as `args.func`)."""
    description = "Query, roll back and verify the adapter registry."
    if subparsers is None:
        parser = argparse.ArgumentParser(prog="python -m adapters_registry", description=description)
    else:
        parser = subparsers.add_parser("registry", help=description, description=description)
    # SUPPRESS: when mounted, do not clobber a --home the parent parser already set.
    parser.add_argument("--home", default=argparse.SUPPRESS,
                        help="runtime home (default: $NIFTYTUNE_HOME, else ./var)")
    add_commands(parser)
    parser.set_defaults(func=run_command)
    return parser


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Add the registry's subcommands (and nothing else: no --home, no func) to a parser that
    another CLI owns; dispatch with `run_command(args)`, which reads `args.home`."""
    commands = parser.add_subparsers(dest="registry_command", required=True)
    added = {
        "list": commands.add_parser("list", help="every version, oldest first (* marks the champion)"),
        "show": commands.add_parser("show", help="one version's manifest"),
        "promoted": commands.add_parser("promoted", help="the champion's version id (or --path)"),
        "history": commands.add_parser("history", help="the ledger: registrations, decisions, rollbacks, prunes"),
        "champion-at": commands.add_parser("champion-at", help="the champion at a time (ISO 8601; naive = local)"),
        "rollback": commands.add_parser("rollback", help="point the champion back at an earlier version, "
                                                         "or --to-base"),
        "verify": commands.add_parser("verify", help="re-hash every file; exit status 1 on any mismatch"),
    }
    added["show"].add_argument("version")
    added["promoted"].add_argument("--path", action="store_true", help="print the version's folder")
    added["champion-at"].add_argument("time")
    added["rollback"].add_argument("version", nargs="?", help="an earlier champion or promoted version")
    added["rollback"].add_argument("--to-base", action="store_true",
                                   help="leave no champion: the base model answers and is the gate's baseline")
    added["rollback"].add_argument("--reason", required=True, help="why (recorded in the ledger)")
    for sub in added.values():
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        # --home is accepted after the subcommand too (`registry list --home DIR`); SUPPRESS
        # keeps a value given before the subcommand when it is not repeated here.
        sub.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                         help="runtime home (default: $NIFTYTUNE_HOME, else ./var)")


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed registry command; registry errors become exit status 2 and one line."""
    try:
        return COMMANDS[args.registry_command](Registry(_home(args)), args)
    except (RegistryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))
