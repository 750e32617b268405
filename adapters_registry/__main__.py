"""`python -m adapters_registry ...`: see adapters_registry/cli.py."""
import sys

from .cli import main

sys.exit(main())
