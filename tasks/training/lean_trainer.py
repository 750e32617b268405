"""trl's SFTTrainer without a host-device synchronisation inside a training step.

    trainer = trainer_class()(model=model, args=sft_config, ...)   # LeanSFTTrainer, an SFTTrainer

A 135M model's training step on a GPU is bound by how fast the host issues kernels, so the
GPU only stays busy while the host runs ahead of it. trl 1.16 and transformers 5 stop it
several times a step: trl's `compute_loss` reads entropy, token accuracy and the token count
with `.item()` between the forward and the backward pass, the Trainer tests the loss for NaN
with a Python `or` on a CUDA tensor, and it adds each step's token count to its state with
`.item()`. Each stop drains the GPU's queue, and it idles while the host catches up.

This subclass computes the same loss the same way (the plain path of trl's `compute_loss`:
fused LM head, assistant tokens summed over the batch's count) and keeps the metrics and the
token count as device tensors, read once per logging step, when the Trainer synchronises
anyway. A NaN loss is no longer replaced by an average (`logging_nan_inf_filter` off in
`build_sft_config`): it reaches the log, where `NonFiniteLossError` stops the run. Anything
off the plain path (a custom loss function, label smoothing, DFT, MoE auxiliary loss,
several processes, logits asked for) goes through trl's own `compute_loss` unchanged.
Evaluation without `compute_metrics` keeps only the loss, so it is not given the logits trl
would build for it with a second forward pass.
Metrics differ in one detail: entropy and token accuracy are averaged over the logging
window's tokens, not over its steps' averages.

Off a GPU, the LM head scores only the positions that have a label (`compact_lm_head`): trl's
fused head does that on CUDA and XPU but scores every position elsewhere (fixed tile shapes for
compilers such as Neuron's). On the CPU nothing is compiled, and ~90% of a grounded
conversation's positions are prompt: projecting them all onto the 49,152-token vocabulary, forward
and backward, more than doubled the demo's training pass (30.6 -> 12.2 s in float32 for 4
conversations of ~575 tokens on 2 cores, the same loss and gradients bit for bit;
benchmarks/cpu_step.py, docs/PERFORMANCE.md).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import trl.trainer.utils as trl_utils
from trl import SFTTrainer

LEAN = True
"""False: `trainer_class()` gives trl's SFTTrainer itself (benchmarks/train_throughput.py's
`+syncs` rows measure what the subclass saves)."""


@contextlib.contextmanager
def compact_lm_head(device: Any) -> Iterator[None]:
    """trl's fused LM head scores only the labelled positions for the duration, on any device (it
    decides with `trl.trainer.utils._use_triton`, true on CUDA and XPU only; the kernels it then
    runs are chosen in trl.kernels, not by this name, so they stay what the device has)."""
    if torch.device(device).type in ("cuda", "xpu"):
        yield
        return

    def compact(device: Any) -> bool:
        return True

    original = trl_utils._use_triton
    trl_utils._use_triton = compact
    try:
        yield
    finally:
        trl_utils._use_triton = original


def trainer_class() -> type:
    """The trainer training uses: `LeanSFTTrainer`, or trl's SFTTrainer where `LEAN` is off."""
    return LeanSFTTrainer if LEAN else SFTTrainer


class LeanSFTTrainer(SFTTrainer):
    """SFTTrainer whose training step leaves the GPU's queue alone (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[str, dict[str, Any]] = {"train": {}, "eval": {}}
        self._pending_input_tokens: Any = None

    def _mode(self) -> str:
        """trl's name for what the model is doing: `train` or `eval`."""
        return "train" if self.model is not None and self.model.training else "eval"

    def _plain(self, return_outputs: bool) -> bool:
        # Evaluation asks for outputs; without compute_metrics it keeps only the loss of them.
        wants_logits = return_outputs and (self._mode() == "train" or self.compute_metrics is not None)
        return (not wants_logits and self.compute_loss_func is None and self.label_smoother is None
                and getattr(self.args, "loss_type", "nll") == "nll" and not self.aux_loss_enabled
                and self.accelerator.num_processes == 1 and self.get_tp_size() == 1)

    def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if not self._plain(return_outputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = self._mode()
        inputs["use_cache"] = False
        with compact_lm_head(self.args.device):
            outputs = model(**inputs, fused_lm_head=True)
        count = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = (-outputs.log_probs).sum() / torch.as_tensor(count).clamp(min=1)
        with torch.no_grad():
            self._add(mode, valid=outputs.label_mask.sum(), entropy=outputs.entropy.detach().sum(),
                      correct=outputs.is_top1.sum())
        if mode == "train":  # trl counts every position of the batch, padding included
            if "attention_mask" in inputs:
                self._add(mode, tokens=inputs["attention_mask"].sum())
            elif "position_ids" in inputs:
                self._total_train_tokens += inputs["position_ids"].size(1)  # a host int: no sync
        return (loss, {"loss": loss}) if return_outputs else loss

    def _add(self, mode: str, **values: Any) -> None:
        pending = self._pending[mode]
        for key, value in values.items():
            pending[key] = value if key not in pending else pending[key] + value

    def _track_num_input_tokens(self, inputs: dict) -> None:
        main = getattr(self.model, "main_input_name", "input_ids")
        if (self.args.include_num_input_tokens_seen != "non_padding" or main not in inputs
                or "attention_mask" in inputs or self.accelerator.num_processes != 1):
            return super()._track_num_input_tokens(inputs)
        pad = getattr(self.processing_class, "pad_token_id", None)
        ids = inputs[main]
        count = (ids != pad).sum() if pad is not None else torch.tensor(ids.numel(), device=ids.device)
        self._pending_input_tokens = count if self._pending_input_tokens is None \
            else self._pending_input_tokens + count

    def _flush(self, mode: str) -> None:
        """The deferred counts into trl's metrics and the Trainer's state (one sync)."""
        if self._pending_input_tokens is not None:
            self.state.num_input_tokens_seen += int(self._pending_input_tokens.item())
            self._pending_input_tokens = None
        pending, self._pending[mode] = self._pending[mode], {}
        if "tokens" in pending:
            self._total_train_tokens += int(pending["tokens"].item())
        if "valid" in pending:
            valid = float(pending["valid"].item())
            self._metrics[mode]["entropy"].append(float(pending["entropy"].item()) / valid if valid else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append(
                float(pending["correct"].item()) / valid if valid else 0.0)
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        self._flush(self._mode())
        super().log(logs, start_time)
