"""Which Prefect API a `niftytune` command talks to, decided before Prefect reads its settings.

    niftytune server --home var    # the API + UI on http://127.0.0.1:4200
    niftytune serve  --home var    # registers and runs the deployment there: nothing to export
    niftytune run    --home var    # with that server up, the run shows in its UI; else a temporary one

Prefect 3 reads its settings once, when `prefect` is first imported (`prefect.context` builds the
global settings context at import). A PREFECT_API_URL set after that import is seen by the flow-run
subprocesses (they inherit the environment) but not by this process: `serve` then started its own
temporary server on the same database, and the concurrency lease its runner took there was unknown
to the server the flow runs reported to, which cancelled every run ("slot lost during
provisioning"). So the URL goes into the environment first, and Prefect's global settings are
rebuilt if something imported Prefect earlier (tests do).
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_API_URL = "http://127.0.0.1:4200/api"  # where `niftytune server` listens by default


class NoServerError(RuntimeError):
    """`serve` needs a Prefect server and none answers."""


def server_answers(url: str, timeout: float = 3.0) -> bool:
    """True when a Prefect API answers its health check at `url`."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def use_server(*, required: bool) -> str | None:
    """Point this process (and the flow runs it starts) at a running Prefect server.

    An exported PREFECT_API_URL wins; otherwise the server of `niftytune server` at
    DEFAULT_API_URL when it answers. Without one, `required` raises NoServerError (serve) and
    otherwise None means a temporary local Prefect (run, backfill). Returns the URL used.
    """
    url = os.environ.get("PREFECT_API_URL") or None
    if url is None and server_answers(DEFAULT_API_URL):
        url = os.environ["PREFECT_API_URL"] = DEFAULT_API_URL
    if required and (url is None or not server_answers(url)):
        raise NoServerError(
            f"no Prefect server answers at {url or DEFAULT_API_URL}; start one in another terminal "
            "with `niftytune server --home DIR` (or export PREFECT_API_URL=<your server>/api)")
    _refresh_prefect_settings()
    return url


def _refresh_prefect_settings() -> None:
    """Rebuild Prefect's global settings from the environment if Prefect is already imported."""
    context = sys.modules.get("prefect.context")
    if context is not None:
        context.refresh_global_settings_context()
