"""Score models on a validation file: assistant-token cross-entropy and answer accuracy.

    report = score_models(base, tokenizer, {"champion": champ_dir, "candidate": cand_dir}, val_path, cfg)
    report.scores["candidate"].loss, report.val_hash, report.to_dict()

Every model of one call is scored in the same process on the same file with the same
tokenizer, chat template (`tasks.samples.chat.tokenize_conversations`, the tokens training optimises),
max length, batch size and precision: the base is loaded once and scored alone first, then
each adapter is attached to it by name and switched in.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from adapters_registry.format import SHA256, ModelScoreRecord, ScoresRecord
from common.files import sha256_file
from tasks.config import Config
from tasks.evaluation.generation import attention_without_cudnn, device_of, generate_answers, merged_adapter
from tasks.evaluation.probes import accuracy_of, select_probes, visible_truths
from tasks.samples.chat import tokenize_conversations

log = logging.getLogger(__name__)

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
    incomparable_champion: str | None = Field(default=None, exclude=True)
    """The champion when it was not scored because it was trained on another base model (the
    gate then compares with the base model; the decision is only valid while it is champion)."""
    incomparable_reason: str | None = Field(default=None, exclude=True)
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
    with torch.no_grad(), attention_without_cudnn():
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
            device = device_of(model)
            target = mask[:, 1:].to(device)  # token t is predicted at position t-1
            scored = _scored_logits(model, ids.to(device), attention.to(device), target).float()
            labels = ids[:, 1:].to(device)[target]
            total += F.cross_entropy(scored, labels, reduction="sum").double().item()
            count += int(target.sum())
    return total, count


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


def _encode(tokenizer: Any, records: list[dict[str, Any]], val_path: Path, cfg: Config) -> list[dict]:
    """The conversations tokenized as training saw them; a warning names those left without answer tokens."""
    encoded = tokenize_conversations(tokenizer, [r["messages"] for r in records], cfg.training.max_length)
    empty = [r["id"] for r, row in zip(records, encoded) if not any(row["completion_mask"][1:])]
    if empty:
        log.warning("%s: %d of %d conversations keep no answer tokens within max_length %d (e.g. %s); "
                    "they do not count in the loss", val_path, len(empty), len(records), cfg.training.max_length,
                    empty[0])
    return encoded


def _score_adapters(base_model: Any, adapters: Mapping[str, Path], score: Any) -> dict[str, ModelScore]:
    """`score(model)` of each adapter, attached to `base_model` by name and switched in; removed after."""
    from peft import PeftModel

    scores, peft_model = {}, None
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
                scores[name] = score(peft_model)
    finally:
        if peft_model is not None:
            peft_model.unload()  # takes the LoRA layers out of base_model again
    return scores


def score_models(base_model: Any, tokenizer: Any, adapters: Mapping[str, Path], val_path: Path, cfg: Config,
                 *, include_base: bool = True) -> ScoreReport:
    """Score the base (as `base`) and each named adapter on `val_path` with identical settings.
    The adapters are attached to `base_model` for the call and removed again afterwards."""
    val_path = Path(val_path)
    val_hash, records = sha256_file(val_path), read_validation(val_path)
    encoded = _encode(tokenizer, records, val_path, cfg)
    probes = select_probes(records, cfg.evaluation.probe_size)
    truths = visible_truths(tokenizer, probes, cfg)
    for name, folder in adapters.items():
        if name == "base" or not (Path(folder) / "adapter_model.safetensors").is_file():
            raise ValueError(f"adapter {name!r}: need a name other than 'base' and {folder}/adapter_model.safetensors")
    was_training, scores = base_model.training, {}
    base_model.eval()  # dropout off, in the base and in every LoRA layer
    try:
        if include_base:  # before any adapter is attached: no LoRA layers to step through
            scores["base"] = _score(base_model, tokenizer, encoded, probes, cfg, truths)
        scores.update(_score_adapters(base_model, adapters,
                                      lambda model: _score(model, tokenizer, encoded, probes, cfg, truths)))
    finally:
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
                                     "incomparable_champion": champion.version if champion and why_not else None,
                                     "incomparable_reason": why_not})
