"""What every `niftytune` command shares: --home and --debug, the config options (generated from
`tasks.overrides`: one flag per named override, `--set` for any field), the error boundary,
the Prefect and logging set-up, and a progress display for long work."""
from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Optional

import typer

from tasks import overrides

MARKET, CONFIG = "market data", "configuration"
Debug = Annotated[bool, typer.Option("--debug", help="show the traceback of any error")]
Home = Annotated[Optional[str], typer.Option("--home", metavar="DIR",
                                             help="runtime home (default: $NIFTYTUNE_HOME, else ./var)")]


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not a date (YYYY-MM-DD): {text!r}") from None


def _tickers(value: str | None) -> list[str] | None:
    symbols = [s.strip() for s in value.split(",") if s.strip()] if value is not None else None
    if symbols == []:
        raise typer.BadParameter("--tickers needs at least one symbol, e.g. ^NSEI,TCS.NS")
    return symbols


def _sets(values: list[str] | None) -> list[tuple[str, Any]]:
    try:
        return [overrides.parse_set(text) for text in values or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def date_option(flag: str, help_: str, **kwargs: Any) -> Any:
    return typer.Option(flag, parser=parse_date, metavar="DATE", help=help_, **kwargs)


AsOf = Annotated[Optional[date], date_option("--as-of", "the day to act as of (YYYY-MM-DD; default: today in "
                                                        "Asia/Kolkata)", rich_help_panel=MARKET)]


class ConfigChoice(NamedTuple):
    """The config options of one invocation, before they are applied to the profile."""

    profile: str | None
    named: dict[str, Any]  # dotted path -> a named flag's value (None: not given)
    sets: list[tuple[str, Any]]  # --set, parsed and key-checked
    tickers: list[str] | None

    def overrides(self) -> dict[str, Any]:
        return overrides.merge(self.named, dict(self.sets))

    def resolve(self) -> Any:
        """The resolved config; UserError (exit status 2) naming the field or the profile."""
        from flows.preflight import UserError, checked_config

        try:
            merged = self.overrides()
        except ValueError as exc:
            raise UserError(str(exc)) from None
        return checked_config(self.profile, merged, self.tickers)

    def flow_parameters(self) -> dict[str, Any]:
        """The same choice as daily-retrain's parameters: named ones by name, --set as `overrides`."""
        named = {o.param: self.named[o.path] for o in overrides.NAMED}
        return {"profile": self.profile, "tickers": self.tickers, **named, "overrides": dict(self.sets) or None}


def _option(name: str, annotation: Any, option: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[annotation, option])


def _config_parameters() -> list[inspect.Parameter]:
    """--tickers, --profile, one flag per named override (type from the config field), --set."""
    params = [_option("tickers", Optional[str], typer.Option(
                  "--tickers", metavar="A,B,C", callback=_tickers, rich_help_panel=MARKET,
                  help="replace the configured universe for this run, e.g. ^NSEI,^BSESN,TCS.NS")),
              _option("profile", Optional[str], typer.Option(
                  "--profile", metavar="NAME|FILE", rich_help_panel=CONFIG,
                  help="config profile: cpu, gpu, laptop-4gb or a YAML path (default: gpu with CUDA, else cpu)"))]
    leaves = overrides.leaf_fields()
    for named in overrides.NAMED:
        panel = MARKET if named.path.startswith("market.") else CONFIG
        params.append(_option(named.param, Optional[overrides.without_none(leaves[named.path].annotation)],
                              typer.Option(named.flag, metavar=named.metavar, help=named.help, rich_help_panel=panel)))
    params.append(_option("set_", Optional[list[str]], typer.Option(
        "--set", metavar="SECTION.FIELD=VALUE", callback=_sets, rich_help_panel=CONFIG,
        help="set any config field, as its YAML key in a profile, e.g. --set training.lora_r=32 (repeatable; "
             "null for none, \\[a, b] for a list); every field is documented in tasks/config_sections.py and configs/")))
    return params


def with_config(command: Callable[..., int]) -> Callable[..., int]:
    """Give `command` the config options; it receives them as `config: ConfigChoice`."""
    signature = inspect.signature(command, eval_str=True)
    kept = [p for name, p in signature.parameters.items() if name != "config"]

    @functools.wraps(command)
    def run(**kwargs: Any) -> int:
        named = {o.path: kwargs.pop(o.param) for o in overrides.NAMED}
        choice = ConfigChoice(kwargs.pop("profile"), named, kwargs.pop("set_") or [], kwargs.pop("tickers"))
        return command(config=choice, **kwargs)

    params = kept + _config_parameters()
    # inspect (hence typer) reads __signature__, which function types do not declare.
    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


def is_debug(debug: bool = False) -> bool:
    return bool(debug or os.environ.get("NIFTYTUNE_DEBUG"))


def boundary(name: str, command: Callable[..., int]) -> Callable[..., int]:
    """The command's errors as one clear line and an exit status (2: the user's to fix, 1: the
    world's); a traceback for bugs, or with --debug."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            return command(*args, **kwargs) or 0
        except KeyboardInterrupt:
            print("niftytune: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            from flows.preflight import report_error

            if is_debug(kwargs.get("debug", False)):
                raise
            return report_error(f"niftytune {name}", exc)
    return run


def register(app: typer.Typer, name: str, short: str, description: str, *, config: bool = False) -> Callable:
    """Add a command to `app` behind the error boundary (with the config options if `config`)."""
    def add(command: Callable[..., int]) -> Callable[..., int]:
        app.command(name, short_help=short, help=description)(boundary(name, with_config(command) if config
                                                                           else command))
        return command
    return add


def prepare_home(home: str | None) -> Path:
    from common.home import resolve_home

    path = resolve_home(home)
    # Prefect keeps its database and settings under the runtime home, never in ~/.prefect.
    os.environ.setdefault("PREFECT_HOME", str(path / "prefect"))
    # The local server must not phone home (this tool runs offline, and quietly).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # `evaluate` copies the local metric module into a cache: keep it under the home too.
    os.environ.setdefault("HF_MODULES_CACHE", str(path / "cache" / "hf-modules"))
    return path


def prefect_api() -> None:
    """Runs go to the server of `niftytune server` when one answers (they show in its UI), else to
    a temporary local Prefect; decided before Prefect is imported (deployments/local_api.py)."""
    from deployments.local_api import use_server

    url = use_server(required=False)
    where = f"the server at {url}" if url else "a temporary local server (no `niftytune server` running)"
    print(f"Prefect: {where}", file=sys.stderr)


def flow_logs(debug: bool) -> None:
    """A flow's console logs show an expected error (Yahoo unreachable, a bad CSV) as Prefect's
    one-line messages, without tracebacks; --debug keeps them."""
    if not is_debug(debug):
        from flows.preflight import hide_expected_tracebacks

        hide_expected_tracebacks()


def as_of_or_today(as_of: date | None) -> date:
    from tasks.market.data import today_in_kolkata

    return as_of or today_in_kolkata()


@contextmanager
def progress(message: str) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while long work runs, on a terminal only (logs
    and pipes get nothing); it disappears when the work ends."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        bar.add_task(message, total=None)
        yield
