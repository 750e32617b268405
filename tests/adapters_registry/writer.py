"""A registry writer run as its own process by the crash and concurrency tests.

    python -m tests.adapters_registry.writer HOME ADAPTER_DIR SEED [--trace FILE] [--hold-until FILE]
                                                                   [--expect-locked]

Registers the adapter as promoted. With --trace, appends `pid step` lines, in the order they
happen, when it enters (`locked`) and leaves (`unlocking`) the registry lock. --hold-until keeps
the lock after `locked` until FILE exists, so a test decides when another writer may have its
turn; --expect-locked first tries the lock without waiting, records `found-locked` when it is
held (exit status 3 if it is not), then registers waiting as usual. NIFTYTUNE_REGISTRY_CRASH_AT
(read by the registry) makes it SIGKILL itself at a step.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from adapters_registry import Registry, RegistryLockedError, store
from tests.adapters_registry.fakes import decision, lineage


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("home", type=Path)
    parser.add_argument("adapter_dir", type=Path)
    parser.add_argument("seed", type=int)
    parser.add_argument("--trace", type=Path)
    parser.add_argument("--hold-until", type=Path)
    parser.add_argument("--expect-locked", action="store_true")
    args = parser.parse_args()

    def record(step: str) -> None:
        if args.trace:
            with open(args.trace, "a") as handle:
                handle.write(f"{os.getpid()} {step}\n")

    real_checkpoint = store._checkpoint

    def traced(step: str) -> None:
        if step in ("locked", "unlocking"):
            record(step)
        if step == "locked" and args.hold_until:
            deadline = time.monotonic() + 120  # a test that never releases must not leave it behind
            while not args.hold_until.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        real_checkpoint(step)

    store._checkpoint = traced

    def register(lock_timeout: float) -> None:
        Registry(args.home, lock_timeout=lock_timeout).register(args.adapter_dir, lineage(1.0 - args.seed / 100),
                                                                decision(True), promote=True)

    if args.expect_locked:
        try:
            register(lock_timeout=0)
        except RegistryLockedError:
            record("found-locked")
        else:
            sys.exit(3)
    register(lock_timeout=30)


if __name__ == "__main__":
    main()
