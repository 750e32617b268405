"""Child processes that never outlive the niftytune process that started them.

A SIGKILLed parent runs no cleanup, so an orderly `atexit` stop is not enough: each child asks
the kernel for a parent-death signal (Linux `prctl(PR_SET_PDEATHSIG)`), and a parent that is
asked to stop (SIGTERM, SIGINT, SIGHUP) passes the signal on to its child and waits for it.

    start_ephemeral_prefect()                       # before a flow: the temporary API server
    code = run_foreground(["prefect", "server", "start"], env)
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
EPHEMERAL_STARTUP_SECONDS = 120
"""Prefect's own default (20 s) is too short on a busy 2-core machine."""
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class PrefectStartError(RuntimeError):
    """Prefect's temporary API server did not start."""


def die_with_parent(parent_pid: int) -> None:
    """In a freshly forked child: be SIGKILLed when the parent dies (Linux), and exit at once
    if it already has. Elsewhere a no-op: orderly stops still reach the child."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def popen_tied_to_this_process(args: str | Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen whose child dies with this process (see `die_with_parent`); `args`
    positional or by name, as Prefect's server passes it, the rest by name.
    The tie is to the calling thread on Linux: call it from a thread that lives as long as the
    process (the main thread)."""
    parent = os.getpid()
    if kwargs.get("preexec_fn") is not None:
        raise ValueError("popen_tied_to_this_process sets preexec_fn itself")
    return subprocess.Popen(args, preexec_fn=lambda: die_with_parent(parent), **kwargs)


def start_ephemeral_prefect() -> None:
    """Start Prefect's temporary API server now, from this (main) thread, as a child that dies
    with this process. Prefect reuses the one running server for the flow; without this it
    starts one on first use, whose uvicorn process outlives a killed parent. A no-op when
    PREFECT_API_URL names a server."""
    from prefect.server.api import server
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    # Prefect's server module calls `subprocess.Popen`; give it a module whose Popen ties the
    # child to this process (the rest of `subprocess` unchanged), for this module only.
    if not getattr(server.subprocess, "niftytune_tied", False):
        # A stand-in for the module (duck-typed), which mypy types as the module itself.
        server.subprocess = types.SimpleNamespace(  # type: ignore[assignment]
            **{**vars(subprocess), "Popen": popen_tied_to_this_process, "niftytune_tied": True})
    try:
        server.SubprocessASGIServer().start(timeout=EPHEMERAL_STARTUP_SECONDS)
    except RuntimeError as exc:  # Prefect's message hides the cause; say what was tried
        raise PrefectStartError(f"Prefect's temporary API server did not answer within {EPHEMERAL_STARTUP_SECONDS} s "
                                f"(PREFECT_HOME={os.environ.get('PREFECT_HOME', '~/.prefect')}; a busy machine "
                                f"starts it slowly): {str(exc).splitlines()[0]}") from exc


def _import_quietly(modules: Sequence[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the real import, later, reports it
            log.debug("warm-up import of %s failed: %s", name, exc)
            return


@contextlib.contextmanager
def importing_meanwhile(modules: Sequence[str]) -> Iterator[None]:
    """Import `modules` in a thread during the block, and wait for it at the end. Prefect's
    temporary server takes seconds to start (a new home's database: ~15 s on 2 cores), most of it
    in its own process while this one sleeps: time a run's later imports (torch, transformers,
    trl: ~5 s) can use."""
    thread = threading.Thread(target=_import_quietly, args=(tuple(modules),), name="niftytune-imports", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def run_foreground(command: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run `command` as a child tied to this process, pass SIGTERM/SIGINT/SIGHUP on to it, and
    return its exit status once it has exited (a signal number N gives 128 + N)."""
    child = popen_tied_to_this_process(list(command), env=env)

    def forward(signum: int, _frame: types.FrameType | None) -> None:
        log.info("passing signal %d on to %s (pid %d)", signum, command[0], child.pid)
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.kill()
            child.wait()
    return 128 - code if code < 0 else code
