"""Load a registered adapter on its base model, ready to answer: verified, offline,
safetensors only, no remote code.

    model, tokenizer, info = load_promoted(home)            # the champion
    model, tokenizer, info = load_promoted(home, "v0003-20191129-1a2b3c4d")
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .format import ADAPTER_WEIGHTS, Manifest, RegistryError, RegistryIntegrityError
from .queries import VersionInfo
from .store import Registry

log = logging.getLogger(__name__)


class NoChampionError(RegistryError):
    """Nothing has been promoted yet."""


class BaseModelMismatchError(RegistryError):
    """The base model found now is not the one the adapter was trained on."""


def _offline() -> None:
    # Read by huggingface_hub when it is first imported; loading never needs the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _load_local_folder(folder: Path) -> tuple[Any, Any]:
    """A transformers causal LM from a local folder: offline, safetensors only, no remote code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    common = dict(trust_remote_code=False, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, **common)
    return model.eval(), AutoTokenizer.from_pretrained(folder, **common)


def _load_base_for(manifest: Manifest, home: Path) -> tuple[Any, Any]:
    """The base model (and its tokenizer) a manifest names, checked against the recorded
    identity: through tasks.training.base_model (embedded, hub, local), else a local folder directly."""
    recorded = manifest.lineage.base_model
    try:
        from tasks.training import base_model
        from tasks.config import TrainingConfig
    except ImportError:
        folder = Path(recorded.identity).expanduser()
        if not folder.is_dir():
            raise BaseModelMismatchError(f"{manifest.version}: base model {recorded.identity!r} is not a local "
                                         f"folder and tasks.training.base_model is not importable to resolve it") from None
        return _load_local_folder(folder)
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
    its VersionInfo. Re-hashes every file first and refuses a version that does not verify."""
    _offline()
    registry = Registry(home)
    info = registry.get(version) if version else registry.champion()
    if info is None:
        raise NoChampionError(f"no promoted adapter in {registry.root}; run the daily flow first")
    problems = registry.verify_version(info.version)
    if problems:
        raise RegistryIntegrityError(f"refusing to load {info.version}: " + "; ".join(problems))
    if not (info.path / ADAPTER_WEIGHTS).is_file():
        raise RegistryIntegrityError(f"{info.path}: no {ADAPTER_WEIGHTS} (only safetensors are loaded)")
    model, _ = _load_base_for(info.manifest, Path(home))
    from peft import PeftModel  # after the base: tasks.training.base_model quiets what importing peft logs
    from transformers import AutoTokenizer

    # The tokenizer saved with the adapter is the one training used (chat template included).
    tokenizer = AutoTokenizer.from_pretrained(info.path, trust_remote_code=False, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    peft_model = PeftModel.from_pretrained(model, info.path, is_trainable=False, local_files_only=True)
    return peft_model.eval(), tokenizer, info
