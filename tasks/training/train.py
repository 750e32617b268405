"""Train a fresh LoRA (or QLoRA) adapter on a sample set (early stopping where it evaluates).

    cand = train_adapter(home, load_config("cpu"), samples)
    cand.adapter_dir        # runs/<run-id>/adapter: adapter_model.safetensors, adapter_config.json,
                            # tokenizer + chat template, training.json (what was trained, on what, how)

Conversations are tokenized once by `tasks.samples.chat.tokenize_conversations`, so the loss is taken over
exactly the assistant tokens that scoring uses; trl's SFTTrainer receives the pre-tokenized
`input_ids` + `completion_mask` columns and folds the mask into its labels.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.timing import Stopwatch
from tasks.config import Config, TrainingConfig
from tasks.samples.chat import tokenize_conversations
from tasks.training.base_model import (BaseModelRef, build_bnb_config, default_device, load_base,  # noqa: F401
                                       resolve_base_model, resolve_compute_dtype)
from tasks.training.record import (TRAINING_JSON, format_candidate, loss_line, new_run_id,  # noqa: F401
                                   training_record, write_training_json)

if TYPE_CHECKING:  # imported where used: the training task times its imports
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
# Which of Liger's kernels `use_liger_kernel` applies (None: Liger's defaults); a hook for
# benchmarks/train_throughput.py's rows, not a setting.
LIGER_KERNEL_CONFIG: dict[str, bool] | None = None

# trl 1.16 steers `use_liger_kernel` users to kernels downloaded from the Hub at run time; this
# project trains offline, so it keeps the installed Liger package and drops that advice.
warnings.filterwarnings("ignore", message=r"`use_liger_kernel=True` is deprecated", category=FutureWarning)


class TrainingError(RuntimeError):
    """Training could not produce an adapter (empty data, nothing evaluated, ...)."""


class NonFiniteLossError(TrainingError):
    """The training or validation loss became NaN or infinite."""


@dataclass(frozen=True)
class Candidate:
    """A trained adapter; its validation losses during training, None without evaluation then."""

    run_id: str
    run_dir: Path
    adapter_dir: Path
    training_json: Path
    best_eval_loss: float | None
    initial_eval_loss: float | None
    best_step: int
    base: BaseModelRef


def build_lora_config(training: TrainingConfig) -> "LoraConfig":
    """LoRA on the configured projections of a causal LM."""
    from peft import LoraConfig

    targets = training.target_modules if isinstance(training.target_modules, str) else list(training.target_modules)
    return LoraConfig(r=training.lora_r, lora_alpha=training.lora_alpha, lora_dropout=training.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")


def build_sft_config(cfg: Config, output_dir: Path, *, compute_dtype: "torch.dtype | None" = None,
                     progress: bool = True) -> "SFTConfig":
    """trl SFTConfig: completion-only loss on the pre-tokenized mask, evaluation as
    `_evaluation_args` says, cosine warmup schedule."""
    import torch
    from trl import SFTConfig

    t = cfg.training
    dtype = compute_dtype or resolve_compute_dtype(t, default_device())
    # Mixed precision only where weights and matmuls are half precision; 4-bit bases keep their
    # own compute dtype in the bnb layers, the adapters follow AMP.
    bf16, fp16 = dtype == torch.bfloat16, dtype == torch.float16
    # transformers 5.2x renamed gradient_checkpointing to activation_checkpointing (old name warns).
    ckpt = "activation_checkpointing" if "activation_checkpointing" in SFTConfig.__dataclass_fields__ \
        else "gradient_checkpointing"
    checkpointing: dict[str, Any] = {ckpt: t.gradient_checkpointing,
                                     f"{ckpt}_kwargs": {"use_reentrant": False} if t.gradient_checkpointing else None}
    return SFTConfig(
        output_dir=str(output_dir), seed=t.seed, data_seed=t.seed,
        max_length=t.max_length, completion_only_loss=True,
        packing=t.packing, packing_strategy="bfd", padding_free=t.packing,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, num_train_epochs=t.num_train_epochs, max_steps=t.max_steps,
        warmup_steps=min(t.warmup_ratio, 0.999),  # a float < 1 is a ratio (transformers 5)
        lr_scheduler_type=t.lr_scheduler_type, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        optim=t.optim, bf16=bf16, fp16=fp16, use_cpu=default_device() == "cpu",
        **checkpointing,
        **_evaluation_args(t),
        logging_steps=t.logging_steps, logging_first_step=True, disable_tqdm=not progress,
        report_to="none", include_num_input_tokens_seen="non_padding",
        logging_nan_inf_filter=False,  # a NaN loss reaches the log and stops the run (NonFiniteLossError)
        dataloader_num_workers=t.dataloader_num_workers, dataloader_pin_memory=torch.cuda.is_available(),
        use_liger_kernel=t.use_liger_kernel, liger_kernel_config=LIGER_KERNEL_CONFIG,
        torch_compile=t.torch_compile,
        train_sampling_strategy=t.train_sampling_strategy,
        pad_to_multiple_of=t.pad_to_multiple_of,
    )


def _evaluation_args(t: TrainingConfig) -> dict[str, Any]:
    """Evaluate and checkpoint every `eval_steps`, the best checkpoint restored at the end. With
    `eval_steps` None, neither: the adapter after the last step is the candidate, and scoring
    measures its validation loss beside the base model's (the loss before training)."""
    if t.eval_steps is None:
        return {"eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False}
    return {"eval_strategy": "steps", "eval_steps": t.eval_steps, "eval_on_start": True,
            "save_strategy": "steps", "save_steps": t.eval_steps, "save_only_model": True, "save_total_limit": 1,
            "load_best_model_at_end": True, "metric_for_best_model": "eval_loss", "greater_is_better": False}


def tokenize_samples(path: Path, tokenizer: Any, max_length: int) -> "Dataset":
    """A dataset of `input_ids` + `completion_mask` rows, one per conversation of a JSONL file."""
    from datasets import Dataset

    with open(path, encoding="utf-8") as fh:
        conversations = [json.loads(line)["messages"] for line in fh if line.strip()]
    rows = tokenize_conversations(tokenizer, conversations, max_length)
    at_limit = sum(len(row["input_ids"]) >= max_length for row in rows)
    if not rows:
        raise TrainingError(f"{path}: no conversations to train or evaluate on")
    if at_limit:
        log.warning("%s: %d of %d conversations reach max_length=%d and are truncated", path, at_limit,
                    len(rows), max_length)
    return Dataset.from_list(rows)


def _non_finite_callback() -> Any:
    """A TrainerCallback that raises NonFiniteLossError on a NaN/inf training or eval loss."""
    from transformers import TrainerCallback

    class NonFiniteLossCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("loss", "eval_loss"):
                value = (logs or {}).get(key)
                if value is not None and not math.isfinite(value):
                    raise NonFiniteLossError(
                        f"{key} became {value} at step {state.global_step}: lower the learning rate "
                        f"(now {args.learning_rate}) or check the data and compute dtype")

    return NonFiniteLossCallback()


def _keep_adapters_fp32(model: Any, dtype: "torch.dtype") -> None:
    """Undo trl's bf16 cast of QLoRA adapter weights (trl sft_trainer.py, peft#2889) unless compute
    is bf16: fp16 AMP needs fp32 master weights, and CPU bf16 matmuls are slow."""
    import torch

    if dtype == torch.bfloat16 or not getattr(model, "is_loaded_in_4bit", False):
        return
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()


def _build_trainer(cfg: Config, run_dir: Path, model: Any, tokenizer: Any, train_ds: Any, val_ds: Any,
                   progress: bool, extra_callbacks: Sequence[Any] = ()) -> Any:
    """An SFTTrainer with a fresh LoRA adapter, the non-finite loss guard, and early stopping when
    it evaluates (`val_ds` None: no evaluation during training)."""
    from transformers import EarlyStoppingCallback

    from tasks.training.lean_trainer import trainer_class

    t = cfg.training
    dtype = resolve_compute_dtype(t, default_device())
    stopping = [] if val_ds is None else [EarlyStoppingCallback(t.early_stopping_patience, t.early_stopping_threshold)]
    trainer = trainer_class()(
        model=model, args=build_sft_config(cfg, run_dir / CHECKPOINTS_DIR, compute_dtype=dtype, progress=progress),
        train_dataset=train_ds, eval_dataset=val_ds, processing_class=tokenizer,
        peft_config=build_lora_config(t), callbacks=[*stopping, _non_finite_callback(), *extra_callbacks])
    _keep_adapters_fp32(trainer.model, dtype)
    if t.fused_lora:
        from tasks.training.fused_lora import fuse_lora_layers
        assert trainer.model is not None  # SFTTrainer sets it from `model=`; typed Optional
        fuse_lora_layers(trainer.model, cache_base=t.cache_dequantized_base)
    return trainer


def _prepare_kbit(model: Any, t: TrainingConfig) -> Any:
    """A 4-bit base readied for training: peft's `prepare_model_for_kbit_training` (frozen, the
    unquantised parameters cast to float32), or the same without the cast (`upcast_unquantized`
    off): frozen, with input gradients where activations are checkpointed."""
    from peft import prepare_model_for_kbit_training

    if t.upcast_unquantized:
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=t.gradient_checkpointing,
                                               gradient_checkpointing_kwargs={"use_reentrant": False})
    model.requires_grad_(False)
    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def _train(run_dir: Path, home: Path, cfg: Config, samples: Any, progress: bool,
           callbacks: Sequence[Any] = ()) -> Candidate:
    t, stopwatch = cfg.training, Stopwatch()
    log.debug("training run %s with config %s", run_dir.name, cfg.model_dump_json())  # also in the manifest
    with stopwatch("imports"):  # peft, trl, transformers' Trainer, bitsandbytes: seconds, once per process
        import trl  # noqa: F401
        import peft  # noqa: F401
        from transformers import Trainer  # noqa: F401
    with stopwatch("load"):
        ref = resolve_base_model(t, home)
        model, tokenizer = load_base(ref, t, for_training=True)
    with stopwatch("quantize"):  # 4-bit weights are quantized while loading; this readies them for k-bit training
        if t.load_in_4bit:
            model = _prepare_kbit(model, t)
    with stopwatch("tokenize"):
        train_ds = tokenize_samples(Path(samples.train_path), tokenizer, t.max_length)
        val_ds = None if t.eval_steps is None else tokenize_samples(Path(samples.val_path), tokenizer, t.max_length)
    with stopwatch("setup"):  # adapters attached, datasets packed, kernels patched
        trainer = _build_trainer(cfg, run_dir, model, tokenizer, train_ds, val_ds, progress, callbacks)
    with stopwatch("train"):
        trainer.train()
    if t.eval_steps is not None and trainer.state.best_global_step is None:
        raise TrainingError(f"no evaluation after step 0 (max_steps={t.max_steps}, eval_steps={t.eval_steps}): "
                            "nothing to pick the best adapter from")
    adapter_dir = run_dir / ADAPTER_DIR
    with stopwatch("save"):  # the best checkpoint is loaded back by load_best_model_at_end
        trainer.model.save_pretrained(adapter_dir)
        tokenizer.save_pretrained(adapter_dir)
        shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)
    counts = {"n_train": train_ds.num_rows, "n_val": _count_lines(Path(samples.val_path))}
    record = training_record(run_dir.name, cfg, samples, ref, trainer.state, counts, dict(stopwatch.seconds))
    write_training_json(adapter_dir / TRAINING_JSON, record)
    log.info("run %s: %s, phases %s", run_dir.name, loss_line(record), record["wall_seconds"])
    return Candidate(run_id=run_dir.name, run_dir=run_dir, adapter_dir=adapter_dir,
                     training_json=adapter_dir / TRAINING_JSON, best_eval_loss=record["best_eval_loss"],
                     initial_eval_loss=record["initial_eval_loss"], best_step=record["best_step"], base=ref)


def _count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def check_training_extras(training: TrainingConfig) -> None:
    """Fail before any work when the profile needs an optional package that is not installed."""
    if training.use_liger_kernel and importlib.util.find_spec("liger_kernel") is None:
        raise TrainingError("training.use_liger_kernel is on (as in the gpu and laptop-4gb profiles) but "
                            "liger-kernel is not installed: pip install -e '.[gpu]', or set use_liger_kernel: false")


def train_adapter(home: Path, cfg: Config, samples: Any, *, run_id: str | None = None,
                  progress: bool = True, callbacks: Sequence[Any] = ()) -> Candidate:
    """Train a fresh LoRA adapter on `samples` (a SampleSet) and write `runs/<run-id>/adapter/`;
    on any failure the run folder is removed and the error re-raised. `callbacks` are extra
    TrainerCallbacks (the benchmarks time steps with one)."""
    check_training_extras(cfg.training)
    run_id = run_id or new_run_id()
    run_dir = Path(home) / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    try:
        return _train(run_dir, Path(home), cfg, samples, progress, callbacks)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


