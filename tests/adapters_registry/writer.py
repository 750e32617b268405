"""A registry writer run as its own process by the crash and concurrency tests.

    python -m tests.adapters_registry.writer HOME ADAPTER_DIR SEED [--trace FILE --start T]

Registers the adapter as promoted. With --trace, records (pid, step, time) when it enters and
leaves the lock, holding it a little to give a second writer the chance to overlap if it could;
--start makes several writers begin at the same moment. NIFTYTUNE_REGISTRY_CRASH_AT (read by
the registry) makes it SIGKILL itself at a step.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from adapters_registry import Registry, store
from tests.adapters_registry.fakes import decision, lineage


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("home", type=Path)
    parser.add_argument("adapter_dir", type=Path)
    parser.add_argument("seed", type=int)
    parser.add_argument("--trace", type=Path)
    parser.add_argument("--start", type=float, default=0.0)
    args = parser.parse_args()
    def record(step: str) -> None:
        if args.trace:
            with open(args.trace, "a") as handle:
                handle.write(f"{os.getpid()} {step} {time.time():.6f}\n")

    real_checkpoint = store._checkpoint

    def traced(step: str) -> None:
        if step in ("locked", "unlocking"):
            record(step)
            if step == "locked":
                time.sleep(0.3)
        real_checkpoint(step)

    store._checkpoint = traced
    time.sleep(max(0.0, args.start - time.time()))
    record("begin")
    Registry(args.home, lock_timeout=30).register(args.adapter_dir, lineage(1.0 - args.seed / 100),
                                                   decision(True), promote=True)


if __name__ == "__main__":
    main()
