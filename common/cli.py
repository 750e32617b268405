"""Running a typer app as a command line, the same way for `niftytune` and `python -m adapters_registry`."""
from __future__ import annotations

import sys
from collections.abc import Sequence

import typer


def run_app(app: typer.Typer, prog: str, argv: Sequence[str] | None = None) -> int:
    """Run one command of `app`; its exit status. `--help` exits with 0, a usage error with
    click's message and status 2; any other error propagates to the caller's boundary."""
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with command.make_context(prog, args) as ctx:
            return command.invoke(ctx) or 0
    except typer.Exit as exc:  # --help
        raise SystemExit(exc.exit_code) from None
    except typer.TyperException as exc:  # a usage error
        # typer raises only its click fork's ClickException here, which has show(); typer does
        # not export that class, and its base TyperException declares no show().
        exc.show()  # type: ignore[attr-defined]
        raise SystemExit(exc.exit_code) from None
