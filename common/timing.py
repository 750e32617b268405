"""Wall seconds per stage: `with stopwatch("train"): ...`."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """`with stopwatch("train"): ...` adds the block's wall time to `seconds["train"]` (rounded
    to `digits`); with a `log`, each stage's start and time are logged at INFO too."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter | None = None, *, digits: int = 3) -> None:
        self.log, self.digits = log, digits
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.log:
            self.log.info("stage %s: started", stage)
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, self.digits)
            if self.log:
                self.log.info("stage %s: %.1f s", stage, self.seconds[stage])
