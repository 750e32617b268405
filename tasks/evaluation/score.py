"""Score models on a validation file: assistant-token cross-entropy and answer accuracy.

    report = score_models(base, tokenizer, {"champion": champ_dir, "candidate": cand_dir}, val_path, cfg)
    report.scores["candidate"].loss, report.val_hash, report.to_dict()

Every model of one call is scored in the same process on the same file with the same
tokenizer, chat template (`tasks.samples.chat.tokenize_conversations`, the tokens training optimises),
max length, batch size and precision: the base is loaded once and scored alone first, then
each adapter is attached to it by name and switched in.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from adapters_registry.format import SHA256, ModelScoreRecord, ScoresRecord
from common.files import sha256_file
from tasks.config import Config
from tasks.samples.chat import Message, render_prompt, tokenize_conversations

log = logging.getLogger(__name__)

METRIC_DIR = Path(__file__).resolve().parent / "metrics" / "number_accuracy"
REQUIRED_KEYS = ("id", "family", "messages", "truth")


class ValidationFileError(ValueError):
    """A validation file line is not a scorable conversation."""


class ModelScore(ModelScoreRecord):
    """A model's scores (the registry's record), with the probe answers scoring produced."""

    answers: tuple[str, ...] = Field(default=(), exclude=True, repr=False)
    """The probe answers, in probe order (for benchmarks and debugging; not recorded in manifests)."""
    shares: tuple[float | None, ...] = Field(default=(), exclude=True, repr=False)
    """Each probe's share of its reference numbers answered right."""


class ScoreReport(ScoresRecord):
    """Every model scored on one validation file (the registry's record: `to_dict()` is a
    manifest's `scores`), with what the gate needs in this run and the manifest does not keep."""

    val_path: str
    models: dict[str, ModelScore]
    incomparable_champion: str | None = Field(None, exclude=True)
    """The champion when it was not scored because it was trained on another base model (the
    gate then compares with the base model; the decision is only valid while it is champion)."""
    incomparable_reason: str | None = Field(None, exclude=True)
    """Why that champion was not scored, in words for the decision's reason."""

    @model_validator(mode="after")
    def _roles(self) -> "ScoreReport":  # any models: the registry checks the roles when it records them
        if not SHA256.match(self.val_hash):
            raise ValueError(f"val_hash is not a sha256 hex digest: {self.val_hash!r}")
        return self

    @property
    def scores(self) -> dict[str, ModelScore]:
        """The scores by model (`base`, `champion`, `candidate`)."""
        return self.models

    @property
    def champion_at_scoring(self) -> str | None:
        """The champion when scoring began, scored or not: a decision is only valid against it."""
        return self.champion_version or self.incomparable_champion


def read_validation(path: Path) -> list[dict[str, Any]]:
    """The conversations of a validation JSONL file, each checked for the fields scoring needs."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ValidationFileError(f"{path}:{number}: not JSON: {exc}") from exc
        missing = [key for key in REQUIRED_KEYS if key not in record]
        if missing or not record["messages"] or record["messages"][-1].get("role") != "assistant":
            raise ValidationFileError(f"{path}:{number}: needs {list(REQUIRED_KEYS)} and messages ending with "
                                      f"the assistant's answer (missing {missing})")
        records.append(record)
    if not records:
        raise ValidationFileError(f"{path}: no conversations")
    return records


def select_probes(records: list[dict[str, Any]], size: int | None) -> list[dict[str, Any]]:
    """A fixed probe subset: round-robin over families (sorted), each family in the order of the
    sha256 of its ids, so the same file always gives the same probes; `size` None: every record."""
    if size is None:
        return list(records)
    by_family: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_family.setdefault(record["family"], []).append(record)
    queues = [sorted(group, key=lambda r: hashlib.sha256(str(r["id"]).encode()).hexdigest())
              for _, group in sorted(by_family.items())]
    chosen: list[dict[str, Any]] = []
    while len(chosen) < min(size, len(records)):
        for queue in queues:
            if queue and len(chosen) < size:
                chosen.append(queue.pop(0))
    return chosen


def _attention_without_cudnn() -> Any:
    """SDPA limited to its flash, memory-efficient and math kernels. cuDNN's attention builds an
    execution plan for every new shape, and greedy decoding makes a new shape every token: on
    an H100 that cost 9.8 of the 16 s of a process's first 24 x 96-token generation (torch 2.11,
    profiled in docs/PERFORMANCE.md); later passes over the same lengths were fast."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def _scored_logits(model: Any, ids: Any, attention: Any, target: Any) -> Any:
    """The logits of the positions `target` marks ([rows, width - 1]: position t predicts token
    t + 1): the decoder's last hidden states at those positions through the output layer, not
    [rows x width x vocab] logits of which the answer tokens are a fifth (a 49k vocabulary is a
    fifth of a 135M model's work per token, and its logits the largest tensor of a forward pass).
    Models whose head does more than one linear layer (logit soft-capping or scaling) take the
    whole forward pass."""
    config = getattr(model, "config", None)
    plain_head = not (getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None))
    decoder = model.get_decoder() if plain_head and hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if decoder is not None else None
    if decoder is None or head is None:
        return model(input_ids=ids, attention_mask=attention).logits[:, :-1][target]
    hidden = getattr(decoder(input_ids=ids, attention_mask=attention), "last_hidden_state", None)
    if hidden is None:  # get_decoder() gave a model with a head of its own
        return model(input_ids=ids, attention_mask=attention).logits[:, :-1][target]
    return head(hidden[:, :-1][target])


def _summed_loss(model: Any, encoded: list[dict[str, list[int]]], batch_size: int, pad_id: int) -> tuple[float, int]:
    """Sum of assistant-token cross-entropies and their count, in length-sorted right-padded
    no-grad batches; logits of the scored positions are taken in float32."""
    import torch
    import torch.nn.functional as F

    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]["input_ids"]))
    total, count = 0.0, 0
    with torch.no_grad(), _attention_without_cudnn():
        for start in range(0, len(order), batch_size):
            rows = [encoded[i] for i in order[start:start + batch_size]]
            width = max(len(r["input_ids"]) for r in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.bool)
            for j, row in enumerate(rows):
                n = len(row["input_ids"])
                ids[j, :n] = torch.tensor(row["input_ids"])
                attention[j, :n] = 1
                mask[j, :n] = torch.tensor(row["completion_mask"], dtype=torch.bool)
            device = _device(model)
            target = mask[:, 1:].to(device)  # token t is predicted at position t-1
            scored = _scored_logits(model, ids.to(device), attention.to(device), target).float()
            labels = ids[:, 1:].to(device)[target]
            total += F.cross_entropy(scored, labels, reduction="sum").double().item()
            count += int(target.sum())
    return total, count


@contextlib.contextmanager
def merged_adapter(model: Any) -> Iterator[bool]:
    """The active LoRA adapter folded into the base weights for the duration, then the base
    weights restored bit for bit; yields whether it merged. Greedy decoding is bound by the
    per-layer overhead, and a merged layer is one matmul instead of three (measured on an H100:
    30 against 51 ms per generated token, docs/PERFORMANCE.md). Left as it is: a model without
    adapters, with adapters disabled (the base), on 4-bit weights (merging would requantise), or
    where a copy of the merged weights does not fit."""
    import torch
    from peft.tuners.lora import LoraLayer

    from tasks.training.base_model import fits_twice

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    weights = [m.get_base_layer().weight for m in layers]
    need = sum(w.numel() * w.element_size() for w in weights)
    if (not layers or any(m.disable_adapters or m.merged for m in layers)
            or any(getattr(w, "quant_state", None) is not None or w.element_size() < 2 for w in weights)
            or not fits_twice(need, weights[0].device)):
        yield False
        return
    saved = [w.detach().clone() for w in weights]
    try:
        for layer in layers:
            layer.merge()
        yield True
    finally:
        with torch.no_grad():
            for layer, weight, copy in zip(layers, weights, saved):
                weight.copy_(copy)
                layer.merged_adapters.clear()


def generate_answers(model: Any, tokenizer: Any, conversations: list[list[Message]], max_new_tokens: int,
                     batch_size: int = 8, **generate_options: Any) -> list[str]:
    """Greedy answers to (system, user) conversations through the chat template.
    `generate_options` go to `model.generate` (the answer API passes a streamer, one conversation)."""
    import torch

    prompts = [render_prompt(tokenizer, c) for c in conversations]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths batch together
    answers, side = [""] * len(prompts), tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge
    try:
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            batch = tokenizer([prompts[i] for i in chosen], add_special_tokens=False, padding=True,
                              return_tensors="pt").to(_device(model))
            with torch.no_grad(), _attention_without_cudnn():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                     **generate_options)
            texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            for i, text in zip(chosen, texts):
                answers[i] = text.strip()
    finally:
        tokenizer.padding_side = side
    return answers


@functools.lru_cache(maxsize=1)
def load_number_accuracy() -> Any:
    """The local `number_accuracy` metric, loaded by path; never looked up on the hub."""
    for var in ("HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        os.environ.setdefault(var, "1")
    import evaluate
    return evaluate.load(str(METRIC_DIR), keep_in_memory=True)


def visible_truths(tokenizer: Any, probes: list[dict[str, Any]], cfg: Config) -> list[list[dict[str, Any]]]:
    """Each probe's reference numbers that its own reference answer states within the first
    `evaluation.max_new_tokens` tokens: what a right answer can show before generation stops.
    A long answer (a market summary runs to ~220 tokens of 18 numbers) is scored on the numbers
    of its first `max_new_tokens` tokens, so a model that answers exactly like the reference scores
    100% instead of being marked wrong for numbers it was never given room to write."""
    if not probes:
        return []
    limit = cfg.evaluation.max_new_tokens
    cut = [tokenizer.decode(tokenizer(p["messages"][-1]["content"], add_special_tokens=False)["input_ids"][:limit])
           for p in probes]
    shares = load_number_accuracy().compute(
        predictions=cut, references=[p["truth"] for p in probes], price_tolerance=cfg.evaluation.price_tolerance,
        pct_tolerance=cfg.evaluation.pct_tolerance)["per_sample"]
    # Numbers are matched in order and a cut only removes the tail, so the visible ones lead the list.
    return [p["truth"][:round(share * len(p["truth"]))] if share else [] for p, share in zip(probes, shares)]


def _score(model: Any, tokenizer: Any, encoded: list[dict], probes: list[dict], cfg: Config,
           truths: list[list[dict[str, Any]]]) -> ModelScore:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total, count = _summed_loss(model, encoded, cfg.training.per_device_eval_batch_size, pad_id)
    loss = total / count if count else float("nan")
    if not probes:
        return ModelScore(loss=loss, n_tokens=count)
    with merged_adapter(model):
        answers = generate_answers(model, tokenizer, [p["messages"][:-1] for p in probes],
                                   cfg.evaluation.max_new_tokens, cfg.evaluation.generation_batch_size)
    return ModelScore(loss=loss, n_tokens=count, **accuracy_of(answers, probes, truths, cfg))


def probe_family(probe: dict[str, Any]) -> str:
    """The per-family key of a probe: its family, marked when it was asked closed-book."""
    return probe["family"] + (" (closed-book)" if probe.get("mode") == "closed_book" else "")


def accuracy_of(answers: list[str], probes: list[dict[str, Any]], truths: list[list[dict[str, Any]]],
                cfg: Config) -> dict[str, Any]:
    """Number accuracy of `answers`: per family, overall, and per mode (grounded, closed-book)."""
    ev = cfg.evaluation
    result = load_number_accuracy().compute(
        predictions=answers, references=truths, families=[probe_family(p) for p in probes],
        price_tolerance=ev.price_tolerance, pct_tolerance=ev.pct_tolerance)
    counts: dict[str, list[int]] = {}  # mode -> [numbers right, numbers], from the per-probe shares
    for probe, truth, share in zip(probes, truths, result["per_sample"]):
        if truth:
            right_total = counts.setdefault(probe.get("mode", "grounded"), [0, 0])
            right_total[0] += round(share * len(truth))
            right_total[1] += len(truth)
    by_mode = {mode: right / total for mode, (right, total) in sorted(counts.items())}
    return {"accuracy": result["per_family"], "accuracy_overall": result["accuracy"], "accuracy_by_mode": by_mode,
            "answers": tuple(answers), "shares": tuple(result["per_sample"])}


def score_models(base_model: Any, tokenizer: Any, adapters: Mapping[str, Path], val_path: Path, cfg: Config,
                 *, include_base: bool = True) -> ScoreReport:
    """Score the base (as `base`) and each named adapter on `val_path` with identical settings.
    The adapters are attached to `base_model` for the call and removed again afterwards."""
    from peft import PeftModel

    val_path = Path(val_path)
    val_hash, records = sha256_file(val_path), read_validation(val_path)
    encoded = tokenize_conversations(tokenizer, [r["messages"] for r in records], cfg.training.max_length)
    empty = [r["id"] for r, row in zip(records, encoded) if not any(row["completion_mask"][1:])]
    if empty:
        log.warning("%s: %d of %d conversations keep no answer tokens within max_length %d (e.g. %s); "
                    "they do not count in the loss", val_path, len(empty), len(records), cfg.training.max_length,
                    empty[0])
    probes = select_probes(records, cfg.evaluation.probe_size)
    truths = visible_truths(tokenizer, probes, cfg)
    for name, folder in adapters.items():
        if name == "base" or not (Path(folder) / "adapter_model.safetensors").is_file():
            raise ValueError(f"adapter {name!r}: need a name other than 'base' and {folder}/adapter_model.safetensors")
    was_training, scores = base_model.training, {}
    base_model.eval()  # dropout off, in the base and in every LoRA layer
    if include_base:  # before any adapter is attached: no LoRA layers to step through
        scores["base"] = _score(base_model, tokenizer, encoded, probes, cfg, truths)
    peft_model = None
    try:
        for name, folder in adapters.items():
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(base_model, folder, adapter_name=name, is_trainable=False)
            else:
                peft_model.load_adapter(folder, adapter_name=name, is_trainable=False)
        if peft_model is not None:
            peft_model.eval()
            for name in adapters:
                peft_model.set_adapter(name)
                scores[name] = _score(peft_model, tokenizer, encoded, probes, cfg, truths)
    finally:
        if peft_model is not None:
            peft_model.unload()  # takes the LoRA layers out of base_model again
        base_model.train(was_training)
    settings = {"max_length": cfg.training.max_length, "batch_size": cfg.training.per_device_eval_batch_size,
                "dtype": str(next(base_model.parameters()).dtype), "probe_size": len(probes),
                "max_new_tokens": cfg.evaluation.max_new_tokens}
    n_tokens = sum(sum(row["completion_mask"][1:]) for row in encoded)
    return ScoreReport(val_hash=val_hash, val_path=str(val_path), n_samples=len(records), n_tokens=n_tokens,
                       models=scores, settings=settings, probe_ids=[str(p["id"]) for p in probes])


def load_for_scoring(ref: Any, cfg: Config) -> tuple[Any, Any, bool]:
    """The base model and tokenizer as scoring runs them (`load_base` for inference, a 4-bit base
    dequantised once when `evaluation.dequantize_base` and it fits); the bool says whether it was."""
    from tasks.training.base_model import dequantize_for_scoring, load_base

    model, tokenizer = load_base(ref, cfg.training, for_training=False)
    return model, tokenizer, cfg.evaluation.dequantize_base and dequantize_for_scoring(model)


def score_candidate(home: Path, cfg: Config, candidate: Any, sample_set: Any) -> ScoreReport:
    """Score base, champion (verified first; fails closed) and candidate on the session's
    val.jsonl in this process, with the base loaded once. A champion trained on another base
    model than the candidate's is not scored: its loss would not be comparable (or its adapter
    would not even fit), so the candidate is compared with its own base model instead."""
    from tasks.promotion import base_model_change, resolve_champion

    champion = resolve_champion(home)
    why_not = base_model_change(champion, candidate.base) if champion else None
    if why_not:
        log.warning(why_not)
    scored = None if why_not else champion
    model, tokenizer, _ = load_for_scoring(candidate.base, cfg)
    adapters = {"champion": scored.path} if scored else {}
    report = score_models(model, tokenizer, {**adapters, "candidate": candidate.adapter_dir}, sample_set.val_path, cfg)
    if report.val_hash != sample_set.val_hash:
        raise ValidationFileError(f"{sample_set.val_path} changed: sha256 {report.val_hash} is not the sample "
                                  f"set's {sample_set.val_hash}")
    return report.model_copy(update={"champion_version": scored.version if scored else None,
                                     "incomparable_champion": champion.version if why_not else None,
                                     "incomparable_reason": why_not})
