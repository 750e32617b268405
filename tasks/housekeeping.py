"""Clean up after killed writers, first thing in every writer of a home.

Called with the home lock held (tasks.runlock), before anything that can fail on a full disk,
so the space a crashed run left behind is given back before the next run needs it:

    removed = tidy_home(home)       # paths removed; the registry also finishes its recovery

Under the lock no other writer is alive, so whatever a write leaves in flight (temp files,
staging folders, training scratch) is dead. Training runs that `niftytune train` finished are
kept: their adapter is that command's output.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

from tasks.market.store import STAGING_DIR as MARKET_STAGING, TMP_SUFFIX, market_dir

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
SCRATCH_SUFFIX = "-scratch"
"""Run ids of the daily flow's training end with this: its scratch, pruned after the decision."""
FINISHED_MARKERS = ("adapter/adapter_model.safetensors", "adapter/training.json")
SAMPLES_DIR = "samples"


def scratch_run_id() -> str:
    """A run id for the daily flow's training (sortable; removable by `tidy_home` once dead)."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}{SCRATCH_SUFFIX}"


def _remove(path: Path, why: str) -> str:
    log.warning("removing %s (%s)", path, why)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return str(path)


def dead_runs(home: Path) -> list[Path]:
    """Training folders no live run owns: the daily flow's scratch, and any run killed before
    its adapter was written."""
    runs = Path(home) / RUNS_DIR
    if not runs.is_dir():
        return []
    finished = lambda run: all((run / marker).is_file() for marker in FINISHED_MARKERS)  # noqa: E731
    return sorted(run for run in runs.iterdir() if run.is_dir()
                  and (run.name.endswith(SCRATCH_SUFFIX) or not finished(run)))


def _market_leftovers(home: Path) -> list[Path]:
    folder = market_dir(home)
    if not folder.is_dir():
        return []
    staged = list((folder / MARKET_STAGING).glob("*")) if (folder / MARKET_STAGING).is_dir() else []
    return sorted([*folder.glob(f".*{TMP_SUFFIX}"), *staged])


def _sample_leftovers(home: Path) -> list[str]:
    """Staging folders of a killed sample write; a set moved aside and never replaced is put back."""
    root, removed = Path(home) / SAMPLES_DIR, []
    if not root.is_dir():
        return []
    for path in sorted(root.glob(".*")):
        name, _, kind = path.name[1:].rpartition(".replaced-")
        if kind and not (root / name).exists():
            log.warning("putting back %s, moved aside by a killed sample write", root / name)
            os.rename(path, root / name)
        else:
            removed.append(_remove(path, "left by a killed sample write"))
    return removed


def _registry_recovery(home: Path) -> list[str]:
    from adapters_registry import Registry, RegistryCorruptError

    if not (Path(home) / "registry").is_dir():
        return []
    try:
        return [f"registry: {e.event} {e.version or ''} ({e.reason})" for e in Registry(home).recover()]
    except RegistryCorruptError as exc:  # leftovers are gone; the champion's fault is reported where used
        log.warning("registry needs repair: %s", exc)
        return []


def tidy_home(home: Path, *, registry: bool = True) -> list[str]:
    """Remove what killed writers left in `home` (hold the home lock): dead training runs,
    staged and temp market files, sample staging folders; then, when `registry`, the
    registry's own recovery (its staging, temp pointer, torn ledger line, unfinished moves).
    Returns what was removed or recorded."""
    removed = [_remove(run, "training scratch of a run that is not alive") for run in dead_runs(home)]
    removed += [_remove(path, "left by a killed market write") for path in _market_leftovers(home)]
    removed += _sample_leftovers(home)
    if registry:
        removed += _registry_recovery(home)
    return removed
