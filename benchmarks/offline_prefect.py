"""Imported for its effect by the benchmark scripts: Prefect when it is installed, else (on a GPU
host without it) the stand-in decorators of benchmarks/offline/, which is all the stage modules
need from Prefect outside a flow run."""
import os
import sys
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
if "prefect" not in sys.modules:
    try:
        import prefect  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent / "offline"))
