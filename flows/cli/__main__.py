"""`python -m flows.cli ...`: the `niftytune` command (see flows/cli/__init__.py)."""
import sys

from flows.cli import main

sys.exit(main())
