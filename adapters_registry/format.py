"""The on-disk format of the registry: file names, records, and their validation (README.md).

Every record read from disk goes through one of the pydantic models below, so a truncated or
hand-edited file fails loudly with the path and what was expected instead of half-loading.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FORMAT_VERSION: Final = 1  # Final: its type is Literal[1], what the records' `format` accepts
FORMAT_TEXT = f"niftytune-adapters-registry {FORMAT_VERSION}\n"

REGISTRY_DIR = "registry"                   # under the runtime home
FORMAT_FILE = "FORMAT"
LOCK_FILE = "registry.lock"
LOCK_HOLDER_FILE = "registry.lock.holder"   # JSON: pid, host, command, since of the writer
STAGING_DIR = "staging"
VERSIONS_DIR = "versions"
CHAMPION_FILE = "champion.json"
CHAMPION_TEMP_PREFIX = "champion.json.tmp-"
LEDGER_FILE = "ledger.jsonl"
MANIFEST_FILE = "manifest.json"

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
TRAINING_RECORD = "training.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")
REQUIRED_FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG, "tokenizer_config.json")
VERSION_FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG, TRAINING_RECORD) + TOKENIZER_FILES
# Pickle-based weights can run code when loaded: a folder holding one is refused outright.
FORBIDDEN_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

VERSION_ID = re.compile(r"^v(?P<seq>\d{4,})-(?P<day>\d{8})-(?P<sha>[0-9a-f]{8})$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHAMPION_EVENTS = ("promote", "rollback")
ChampionEvent = Literal["promote", "rollback"]
LedgerEvent = Literal["register", "promote", "rollback", "prune", "recover"]


class RegistryError(RuntimeError):
    """Base of every registry failure."""


class RegistryCorruptError(RegistryError):
    """A registry file does not parse or does not match the format."""


class RegistryIntegrityError(RegistryError):
    """A version's files do not match the hashes in its manifest."""


class NoChampionError(RegistryError):
    """Nothing has been promoted yet (or the registry was rolled back to the base model)."""


class VersionNotFoundError(RegistryError, KeyError):
    """No version of that id is in the registry."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileRecord(_Record):
    sha256: str
    size: int = Field(ge=0)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not SHA256.match(value):
            raise ValueError(f"not a sha256 hex digest: {value!r}")
        return value


class BaseModelRecord(_Record):
    identity: str
    """Hub id, local folder, or `embedded:...` name of the base model."""
    revision: str | None = None
    """Hub commit the base was loaded at (hub ids)."""
    file_hash: str | None = None
    """sha256 of the base model's weights file (embedded model, local folders)."""
    source: str | None = None
    """Where the weights came from (`hub`, `local`, `embedded`)."""


class DecisionRecord(_Record):
    """The gate's verdict on one candidate (tasks.promotion.decide makes it; `Decision` there)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    promote: bool
    reason: str
    baseline: Literal["champion", "base"]
    delta: float | None
    """Baseline loss minus candidate loss (positive: the candidate is better); None if not finite."""
    min_delta: float
    accuracy_delta: float | None = None
    """Candidate minus baseline answer accuracy on the same probes (None when not measured)."""
    max_accuracy_drop: float | None = None
    """The largest accuracy drop the gate allowed."""

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class ModelScoreRecord(_Record):
    """One model's scores on the validation file (tasks.evaluation.score's `ModelScore` adds the
    probe answers, which are not recorded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    loss: float | None
    """Token-weighted mean cross-entropy over every assistant token of the file (float32 logits);
    None on disk when it was not finite."""
    n_tokens: int = Field(ge=0)
    accuracy: dict[str, float] | None = None
    """Per family: share of the reference numbers the greedy probe answers got right."""
    accuracy_overall: float | None = None
    """Share of the reference numbers of every probe (grounded and closed-book) answered right."""
    accuracy_by_mode: dict[str, float] | None = None
    """The same share over the grounded probes and over the closed-book ones."""


class ScoresRecord(_Record):
    """Every model scored in one process on one validation file (tasks.evaluation.score's
    `ScoreReport` adds what the gate needs in the run and the manifest does not keep)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    val_hash: str
    """sha256 of the val.jsonl every score below was computed on, in the same process."""
    val_path: str | None = None
    n_samples: int = Field(ge=0)
    n_tokens: int = Field(ge=0)
    models: Mapping[str, ModelScoreRecord]
    """`base`, `candidate`, and `champion` when there was one. (A Mapping, read-only like the
    record: tasks.evaluation.score's ScoreReport narrows it to its ModelScore.)"""
    settings: dict[str, Any] = Field(default_factory=dict)
    """What every model was scored with (max length, batch size, dtype, probe size)."""
    probe_ids: list[str] = Field(default_factory=list)
    """Ids of the validation questions answered greedily for the accuracy."""
    champion_version: str | None = None
    """The version scored as `champion` (the gate's decision is only valid against it)."""

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON data (a loss that is not finite becomes None)."""
        data = self.model_dump(mode="json")
        for score in data["models"].values():
            if isinstance(score["loss"], float) and not math.isfinite(score["loss"]):
                score["loss"] = None
        return data

    @model_validator(mode="after")
    def _roles(self) -> "ScoresRecord":
        missing = {"base", "candidate"} - set(self.models)
        if missing:
            raise ValueError(f"scores lack the models {sorted(missing)}; got {sorted(self.models)}")
        if not SHA256.match(self.val_hash):
            raise ValueError(f"val_hash is not a sha256 hex digest: {self.val_hash!r}")
        return self


class Lineage(_Record):
    """What the caller of `Registry.register` says about where the adapter came from."""

    base_model: BaseModelRecord
    config: dict[str, Any]
    """The resolved niftytune config of the run (`Config.model_dump(mode="json")`)."""
    scores: ScoresRecord
    tokenizer_hash: str | None = None
    """sha256 over the tokenizer files; the registry computes it when not given."""
    chat_template_hash: str | None = None
    """sha256 of the chat template text; the registry computes it when not given."""
    data_window: dict[str, Any] = Field(default_factory=dict)
    """Per ticker, the first and last session the samples were built from."""
    sample_hashes: dict[str, str] = Field(default_factory=dict)
    """Content hashes of the sample sets (`train`, `val`)."""
    library_versions: dict[str, str] = Field(default_factory=dict)
    """Filled with this process's versions when not given."""
    seed: int | None = None
    flow_run_id: str | None = None
    session: date | None = None
    """Trading session the adapter was trained for; gives the date in the version id."""
    training: dict[str, Any] = Field(default_factory=dict)
    """Free-form training record (per-eval losses, wall times, ...)."""
    coverage: dict[str, Any] = Field(default_factory=dict)
    """What the market fetch of the run covered (per ticker)."""


class Manifest(_Record):
    format: Literal[1]
    version: str
    created: datetime
    parent: str | None
    """The champion when this version was registered."""
    decision: DecisionRecord
    files: dict[str, FileRecord]
    lineage: Lineage

    @model_validator(mode="after")
    def _check(self) -> "Manifest":
        if not VERSION_ID.match(self.version):
            raise ValueError(f"version id {self.version!r} does not match {VERSION_ID.pattern}")
        missing = set(REQUIRED_FILES) - set(self.files)
        if missing:
            raise ValueError(f"manifest lists no {sorted(missing)}")
        unknown = set(self.files) - set(VERSION_FILES)
        if unknown:
            raise ValueError(f"manifest lists files outside the format: {sorted(unknown)}")
        return self


def _version_id_or_none(value: str | None) -> str | None:
    """A version id (never a path such as `../x`), or None for the base model."""
    if value is not None and not VERSION_ID.match(value):
        raise ValueError(f"not a version id: {value!r}")
    return value


class ChampionPointer(_Record):
    format: Literal[1]
    version: str | None
    """The champion; None after `rollback --to-base` (the base model answers)."""
    since: datetime
    previous: str | None
    reason: str
    event: ChampionEvent = "promote"
    """The ledger event of this move (a crash between the swap and the ledger line leaves the
    pointer ahead of the ledger: the next writer logs this event for it)."""

    _ids = field_validator("version", "previous")(_version_id_or_none)


class LedgerEntry(_Record):
    time: datetime
    event: LedgerEvent
    reason: str
    version: str | None = None
    previous: str | None = None
    decision: DecisionRecord | None = None
    versions: list[str] = Field(default_factory=list)
    manifest_sha256: str | None = None
    """`register`: sha256 of the version's manifest.json, kept here where the manifest cannot
    rewrite it (verify compares the two)."""
    pid: int | None = None
    host: str | None = None

    _ids = field_validator("version", "previous")(_version_id_or_none)

    @field_validator("manifest_sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not SHA256.match(value):
            raise ValueError(f"not a sha256 hex digest: {value!r}")
        return value


def read_json_record(path: Path, model: type[_Record]) -> Any:
    """Read and validate one JSON record; RegistryCorruptError names the file and the fault."""
    try:
        return model.model_validate(json.loads(path.read_bytes()))
    except FileNotFoundError:
        raise
    except (ValueError, ValidationError, UnicodeDecodeError) as exc:
        raise RegistryCorruptError(f"{path}: not a valid {model.__name__}: {exc}") from exc


def dump_record(record: _Record) -> bytes:
    """Canonical JSON bytes of a record (sorted keys, no NaN)."""
    return (json.dumps(record.model_dump(mode="json"), sort_keys=True, indent=2, allow_nan=False) + "\n").encode()


def version_seq(version: str) -> int:
    """The sequence number of a version id (`v0003-...` -> 3)."""
    match = VERSION_ID.match(version)
    if not match:
        raise ValueError(f"not a version id: {version!r}")
    return int(match["seq"])


def format_version_id(seq: int, day: date, weights_sha: str) -> str:
    """`v0003-20191129-1a2b3c4d`: sorts by sequence, reads as the session and the weights' hash."""
    return f"v{seq:04d}-{day:%Y%m%d}-{weights_sha[:8]}"
