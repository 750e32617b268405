"""What a run says while it works, in the terminal and in the Prefect UI's run logs.

Prefect sends only its own loggers to the API; the stages log with plain module loggers
(`tasks.*`, `flows.*`, `adapters_registry.*`), so a run's logs in the UI showed "stage train:
started" and then minutes of silence, and dropped rows only in the terminal.
`send_module_logs_to_run()` attaches one handler that forwards those records to the current
flow run (records outside a run are left to the terminal). `training_progress()` logs each logged
step and evaluation with steps per second and the time left.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

PROJECT_LOGGERS = ("tasks", "flows", "adapters_registry")
log = logging.getLogger("tasks.training.train")


class _RunLogHandler(APILogHandler):
    """Prefect's API handler, for records emitted inside a flow or task run only."""

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
            super().emit(record)


def send_module_logs_to_run(level: int = logging.INFO) -> None:
    """Forward INFO and above of the project's module loggers to the current run's logs (once)."""
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _RunLogHandler) for h in logger.handlers):
            handler = _RunLogHandler()
            handler.setLevel(level)
            logger.addHandler(handler)
        if logger.getEffectiveLevel() > level:
            logger.setLevel(level)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def training_progress() -> Any:
    """A TrainerCallback that logs progress (transformers is imported here, not with this module:
    the training task times its imports)."""
    from transformers import TrainerCallback

    return type("TrainingProgress", (_TrainingProgress, TrainerCallback), {})()


class _TrainingProgress:
    """Logs `step 8/16 (50%): loss 1.234, 0.9 steps/s, about 9 s left` and each evaluation."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start, self.first_step = time.perf_counter(), state.global_step
        every = f"every {args.eval_steps} steps" if args.eval_strategy != "no" else "after training, by scoring"
        log.info("training: %d steps, validation %s", state.max_steps, every)

    def _rate(self, state: Any) -> tuple[float, str]:
        done, elapsed = state.global_step - self.first_step, time.perf_counter() - self.start
        rate = done / elapsed if done and elapsed > 0 else 0.0
        left = _duration((state.max_steps - state.global_step) / rate) if rate else "unknown"
        return rate, left

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" not in logs or not state.max_steps:
            return
        rate, left = self._rate(state)
        log.info("training step %d/%d (%.0f%%): loss %.4f, %.2f steps/s, about %s left", state.global_step,
                 state.max_steps, 100 * state.global_step / state.max_steps, logs["loss"], rate, left)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None,
                    **kwargs: Any) -> None:
        loss = (metrics or {}).get("eval_loss")
        if loss is not None:
            best = state.best_metric if state.best_metric is not None else loss
            log.info("evaluation at step %d/%d: validation loss %.4f (best so far %.4f)", state.global_step,
                     state.max_steps, loss, min(best, loss))
