"""Load a registered adapter on its base model, ready to answer: verified, offline, safetensors
only, no remote code. The registry hands over a verified version (`RegistryView.loadable`); the
base model comes from tasks.training.base_model.

    model, tokenizer, info = load_promoted(home)            # the champion
    model, tokenizer, info = load_promoted(home, "v0003-20191129-1a2b3c4d")
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from adapters_registry import Manifest, RegistryError, RegistryView, VersionInfo

log = logging.getLogger(__name__)


class BaseModelMismatchError(RegistryError):
    """The base model found now is not the one the adapter was trained on."""


def _offline() -> None:
    # Read by huggingface_hub when it is first imported; loading never needs the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load_base_for(manifest: Manifest, home: Path) -> tuple[Any, Any]:
    """The base model (and its tokenizer) a manifest names, checked against the recorded
    identity (embedded, hub or local folder: tasks.training.base_model)."""
    from tasks.config import TrainingConfig
    from tasks.training import base_model

    recorded = manifest.lineage.base_model
    training = TrainingConfig.model_validate(manifest.lineage.config.get("training", {}))
    training = training.model_copy(update={"base_model": recorded.identity,
                                           "base_revision": recorded.revision or training.base_revision})
    ref = base_model.resolve_base_model(training, Path(home))
    if recorded.file_hash and ref.file_hash != recorded.file_hash:
        raise BaseModelMismatchError(f"{manifest.version} was trained on {recorded.identity} with weights "
                                     f"{recorded.file_hash[:12]}..., but {ref.path} has {ref.file_hash[:12]}...")
    if recorded.revision and ref.revision != recorded.revision:
        raise BaseModelMismatchError(f"{manifest.version} was trained on {recorded.identity}@{recorded.revision}, "
                                     f"found revision {ref.revision}")
    if not recorded.file_hash and not recorded.revision:
        log.warning("%s records neither a revision nor a file hash of its base model %s; loading unchecked",
                    manifest.version, recorded.identity)
    return base_model.load_base(ref, training, for_training=False)


def load_promoted(home: str | Path, version: str | None = None) -> tuple[Any, Any, VersionInfo]:
    """The champion (or `version`) as a PeftModel in eval mode on its base, its tokenizer, and
    its VersionInfo. Re-hashes every file first and refuses a version that does not verify
    (NoChampionError when nothing is promoted)."""
    _offline()
    info = RegistryView(home).loadable(version)
    model, _ = load_base_for(info.manifest, Path(home))
    from peft import PeftModel  # after the base: tasks.training.base_model quiets what importing peft logs
    from transformers import AutoTokenizer

    # The tokenizer saved with the adapter is the one training used (chat template included).
    tokenizer = AutoTokenizer.from_pretrained(info.path, trust_remote_code=False, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    peft_model = PeftModel.from_pretrained(model, info.path, is_trainable=False, local_files_only=True)
    return peft_model.eval(), tokenizer, info
