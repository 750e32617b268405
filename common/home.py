"""The runtime home every command reads and writes."""
from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "NIFTYTUNE_HOME"
DEFAULT_HOME = "var"
CACHE_ENV = "NIFTYTUNE_CACHE_DIR"
"""The per-user cache shared by every home (the converted embedded model); empty turns it off."""


def resolve_home(home: str | Path | None = None) -> Path:
    """The runtime home: `home`, else `$NIFTYTUNE_HOME`, else `./var`; created if missing."""
    path = Path(home or os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def stored_home(home: str | Path | None = None) -> Path:
    """The runtime home as `resolve_home` names it, for commands that only read: not created; a
    FileNotFoundError when it does not exist."""
    path = Path(home or os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"no niftytune home at {path} (--home, $NIFTYTUNE_HOME, else ./var)")
    return path


def shared_cache_dir() -> Path | None:
    """The per-user cache every home shares: `$NIFTYTUNE_CACHE_DIR`, else
    `$XDG_CACHE_HOME/niftytune`, else `~/.cache/niftytune`; None when `$NIFTYTUNE_CACHE_DIR` is
    set and empty (each home keeps its own copy only). Not created here."""
    override = os.environ.get(CACHE_ENV)
    if override is not None:
        return Path(override).expanduser().resolve() if override.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "niftytune"
