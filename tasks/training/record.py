"""What a training run records about itself: `training.json` next to the adapter (what was
trained, on what, with which libraries, how it went) and the lines people read about it."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.files import write_atomic
from common.versions import library_versions

TRAINING_JSON = "training.json"


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a short random suffix."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def eval_history(state: Any) -> list[dict[str, float]]:
    """The validation losses the trainer logged, by step (none without evaluation during training)."""
    return [{"step": e["step"], "eval_loss": e["eval_loss"]} for e in state.log_history if "eval_loss" in e]


def training_record(run_id: str, cfg: Any, samples: Any, ref: Any, state: Any, counts: dict[str, int],
                    phases: dict[str, float]) -> dict[str, Any]:
    """Everything training.json records. Without evaluation during training (`eval_steps` null)
    the losses are None and the adapter is the last step's: scoring measures its loss."""
    evals = eval_history(state)
    evaluated = cfg.training.eval_steps is not None
    return {
        "run_id": run_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.model_dump(mode="json"),
        "base_model": {"identity": ref.identity, "revision": ref.revision, "file_hash": ref.file_hash,
                       "source": ref.source},
        "samples": {"session": str(samples.session), "train_hash": samples.train_hash,
                    "val_hash": samples.val_hash, "content_hash": samples.content_hash,
                    "train_path": str(samples.train_path), "val_path": str(samples.val_path), **counts},
        "seed": cfg.training.seed, "libraries": library_versions(), "evaluated_during_training": evaluated,
        "eval_losses": evals, "initial_eval_loss": evals[0]["eval_loss"] if evals else None,
        "best_step": state.best_global_step if evaluated else state.global_step,
        "best_eval_loss": state.best_metric if evaluated else None,
        "steps_trained": state.global_step, "max_steps": state.max_steps,
        "stopped_early": state.global_step < state.max_steps,
        "tokens_seen": int(state.num_input_tokens_seen), "wall_seconds": phases,
    }


def write_training_json(path: Path, record: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(record, indent=2, default=str).encode("utf-8"))


def loss_line(record: dict[str, Any]) -> str:
    """How the validation loss moved during training, or that scoring measures it."""
    if record["best_eval_loss"] is None:
        return (f"no evaluation during training ({record['steps_trained']} steps): scoring measures the "
                "validation loss")
    return (f"validation loss {record['initial_eval_loss']:.4f} before training -> {record['best_eval_loss']:.4f} "
            f"at step {record['best_step']} of {record['steps_trained']}"
            + (" (stopped early)" if record["stopped_early"] else ""))


def format_candidate(candidate: Any) -> str:
    """A few lines for people: where the adapter is, how the validation loss moved, phase times."""
    record = json.loads(Path(candidate.training_json).read_text())
    phases = ", ".join(f"{name} {sec:.1f}s" for name, sec in record["wall_seconds"].items())
    return "\n".join([
        f"run {candidate.run_id}: adapter {candidate.adapter_dir}",
        f"base {candidate.base.identity} ({candidate.base.source}, {candidate.base.file_hash[:12]})",
        loss_line(record), f"tokens seen {record['tokens_seen']:,}; {phases}"])
