"""Checks and set-up that happen before Prefect starts, so bad input gets one clear line.

    cfg = checked_config(profile, overrides, tickers)   # UserError on a bad profile or flag
    check_not_future(as_of, "--as-of")
    with writing(home) as tidied:                       # writable home, the lock, cleanup, Prefect
        ...run a flow...

A UserError is the user's to fix (a flag, a profile, a date, a home): the CLI prints its one
line and exits with status 2. Errors of the world (another run holds the lock, a corrupt
registry, a fetch that failed) are one line and status 1. Anything else is a bug and shows its
traceback. Prefect's console logs follow the same rule (`hide_expected_tracebacks`): a task that
fails on Yahoo being unreachable logs one line per attempt, no traceback.
"""
from __future__ import annotations

import copy
import errno
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError

log = logging.getLogger(__name__)


class UserError(Exception):
    """Bad input: a flag, a profile, a date or a home the user has to fix (exit status 2)."""


def describe_validation(exc: ValidationError) -> str:
    """A pydantic error as one line: `field: message; field: message`."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())


def checked_config(profile: str | None, overrides: dict[str, Any], tickers: list[str] | None = None) -> Any:
    """The resolved config, or UserError naming the profile or the field that is wrong."""
    from tasks.config import load_config, select_tickers

    try:
        return select_tickers(load_config(profile, overrides), tickers)
    except ValidationError as exc:
        raise UserError(f"invalid configuration: {describe_validation(exc)}") from None
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None


def check_not_future(day: date | None, flag: str) -> None:
    """A date after today (Asia/Kolkata) has no bars yet: refuse it before any work."""
    from tasks.market.calendar import today_in_kolkata

    today = today_in_kolkata()
    if day is not None and day > today:
        raise UserError(f"{flag} {day} is in the future (today is {today} in Asia/Kolkata)")


def check_writable(folder: Path, what: str) -> None:
    """Create and remove a file in `folder` (made if missing); UserError naming it if that fails."""
    probe = folder / f".niftytune-write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if exc.errno == errno.ENOSPC:  # writable, but full: the writer's cleanup may free space
            probe.unlink(missing_ok=True)
            return
        raise UserError(f"{what} {folder} is not writable ({exc.strerror or exc}); "
                        f"choose another --home or fix its permissions") from None


def check_home(home: Path) -> None:
    """The home and Prefect's folder in it (PREFECT_HOME) accept writes."""
    check_writable(home, "runtime home")
    check_writable(Path(os.environ.get("PREFECT_HOME") or home / "prefect"), "PREFECT_HOME")


@contextmanager
def writing(home: Path, *, registry: bool = True, prefect: bool = True,
            check: Callable[[], Any] | None = None, warm: Sequence[str] = ()) -> Iterator[list[str]]:
    """For a command that writes `home`: check it is writable, hold its lock for the block,
    clean up what killed writers left (before anything can fail on a full disk), run `check`,
    and start Prefect's temporary server as a child that dies with this process, importing the
    modules `warm` names meanwhile. Yields what the cleanup removed or recorded."""
    from flows.processes import importing_meanwhile, start_ephemeral_prefect
    from tasks.housekeeping import tidy_home
    from tasks.runlock import HOLDER_FILE, run_lock, write_holder

    check_home(home)
    with run_lock(home):
        tidied = tidy_home(home, registry=registry)
        if not (home / HOLDER_FILE).exists():  # a full disk refused it before the cleanup
            write_holder(home)
        for line in tidied:
            log.warning("cleaned up: %s", line)
        if check is not None:
            check()
        if prefect:
            with importing_meanwhile(warm):
                start_ephemeral_prefect()
        yield tidied


OUR_PACKAGES = ("tasks.", "flows.", "adapters_registry.", "deployments.")


def is_expected(exc: BaseException) -> bool:
    """An error of the world, said in one line: one this project raises on purpose, a file
    system error (it names its path), or a value our code refused. Anything else is a bug."""
    ours = any(cls.__module__.startswith(OUR_PACKAGES) for cls in type(exc).__mro__)
    return ours or isinstance(exc, (OSError, ValueError, TimeoutError))


class OneLineForExpectedErrors(logging.Formatter):
    """Wraps the console's formatter: a record carrying an expected error prints without its
    traceback (its message already names the error); a bug's record keeps it."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_expected(exc):
            record = copy.copy(record)  # other handlers (the run's logs in the UI) keep the traceback
            record.exc_info, record.exc_text = None, None
        return self.inner.format(record)


def hide_expected_tracebacks() -> None:
    """Prefect logs a failed task's or flow's traceback on the console (a task's once it is out
    of retries: Yahoo unreachable gave one per ticker, then more for the flow). For an error of
    the world its one-line message says it all; tracebacks stay for bugs, and in the UI."""
    import prefect.main  # noqa: F401  (sets up Prefect's logging: its console handler exists from here on)
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, OneLineForExpectedErrors):
            handler.setFormatter(OneLineForExpectedErrors(handler.formatter))


def report_error(prog: str, exc: BaseException) -> int:
    """Print one line for a user error (exit status 2) or an expected error (1); a bug also
    prints its traceback."""
    import sys
    import traceback

    if isinstance(exc, UserError):
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, ValidationError):
        print(f"{prog}: error: {describe_validation(exc)}", file=sys.stderr)
        return 2
    if is_expected(exc):
        print(f"{prog}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("(--debug shows the traceback)", file=sys.stderr)
        return 1
    traceback.print_exception(exc)
    print(f"{prog}: internal error (a bug, please report it): {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1
