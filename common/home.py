"""The runtime home every command reads and writes."""
from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "NIFTYTUNE_HOME"
DEFAULT_HOME = "var"


def resolve_home(home: str | Path | None = None) -> Path:
    """The runtime home: `home`, else `$NIFTYTUNE_HOME`, else `./var`; created if missing."""
    path = Path(home or os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
