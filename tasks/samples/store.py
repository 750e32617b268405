"""The on-disk sample set of one session, written atomically and verified on every read.

Format, under `NIFTYTUNE_HOME/samples/`:

    <session>/train.jsonl     one conversation per line (schema in tasks/samples/build.py)
    <session>/val.jsonl       the same schema, validation samples
    <session>/samples.json    format, session, file hashes, content hash, counts per family and
                              split, data window per ticker, the samples config and universe used
    .<session>-<random>/      a set being written; never read; removed when the write ends (a
                              killed write leaves it behind, safe to delete)

`content_hash` is sha256 over both files, each preceded by its byte length (so moving a line
from one file to the other changes it). A set is written in a same-folder temp folder (files
fsynced) and renamed into place; an existing folder with the same content hash is reused, one
with a different hash (new bars, another config) is renamed aside, replaced and then deleted.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from common.files import fsync_dir, sha256_file, write_synced

SAMPLES_DIR = "samples"
TRAIN_FILE = "train.jsonl"
VAL_FILE = "val.jsonl"
META_FILE = "samples.json"
FORMAT_VERSION = 2  # 2: grounded samples (mode, today, a data sheet in the prompt)


class SampleSetError(ValueError):
    """A sample set folder is missing a file, has an unknown format, or fails its hashes."""


@dataclass(frozen=True)
class SampleSet:
    """The train/validation files of one session, with their hashes and what they were built from."""

    session: date
    dir: Path
    train_path: Path
    val_path: Path
    train_hash: str
    val_hash: str
    content_hash: str
    counts: dict[str, dict[str, int]]
    data_window: dict[str, list[str]]
    n_train: int
    n_val: int

    @classmethod
    def from_dir(cls, path: Path) -> "SampleSet":
        """Reload a sample set from its `samples.json`, checking the files against their hashes."""
        path = Path(path)
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SampleSetError(f"{path}: cannot read {META_FILE}: {exc}") from exc
        if meta.get("format") != FORMAT_VERSION:
            raise SampleSetError(f"{path}: sample set format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        train_path, val_path = path / TRAIN_FILE, path / VAL_FILE
        for file, expected in ((train_path, meta["train_hash"]), (val_path, meta["val_hash"])):
            if not file.is_file() or sha256_file(file) != expected:
                raise SampleSetError(f"{file}: missing or its sha256 differs from {META_FILE} ({expected})")
        return cls(date.fromisoformat(meta["session"]), path, train_path, val_path, meta["train_hash"],
                   meta["val_hash"], meta["content_hash"], meta["counts"], meta["data_window"],
                   meta["n_train"], meta["n_val"])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file, one per non-empty line."""
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def jsonl_bytes(records: list[dict[str, Any]]) -> bytes:
    """Records as UTF-8 JSONL (₹ kept as is), one per line, in order."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def content_hash(train: bytes, val: bytes) -> str:
    """sha256 over both files, each preceded by its length."""
    digest = hashlib.sha256()
    for data in (train, val):
        digest.update(f"{len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def save_sample_set(home: Path, session: date, train: list[dict[str, Any]], val: list[dict[str, Any]],
                    meta: dict[str, Any]) -> SampleSet:
    """Write `samples/<session>/` atomically (or reuse it when its content hash is the same)."""
    root = Path(home) / SAMPLES_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / session.isoformat()
    train_bytes, val_bytes = jsonl_bytes(train), jsonl_bytes(val)
    meta = {"format": FORMAT_VERSION, "session": session.isoformat(),
            "train_hash": hashlib.sha256(train_bytes).hexdigest(),
            "val_hash": hashlib.sha256(val_bytes).hexdigest(),
            "content_hash": content_hash(train_bytes, val_bytes),
            "n_train": len(train), "n_val": len(val), **meta}
    if (final / META_FILE).is_file():
        try:
            existing = SampleSet.from_dir(final)
        except SampleSetError:
            existing = None  # damaged or older format: rebuilt below, never used
        if existing is not None and existing.content_hash == meta["content_hash"]:
            return existing
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it owner-only; the set is for every reader
        write_synced(staging / TRAIN_FILE, train_bytes)
        write_synced(staging / VAL_FILE, val_bytes)
        write_synced(staging / META_FILE, (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode())
        fsync_dir(staging)
        _swap_in(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SampleSet.from_dir(final)


def _swap_in(staging: Path, final: Path) -> None:
    # A folder cannot be os.replace'd over a non-empty one: move the old set aside first, so
    # a reader sees the old set, no set (and fails loudly), or the new one, never a mixture.
    aside = final.with_name(f".{final.name}.replaced-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.rename(final, aside)
    os.rename(staging, final)
    fsync_dir(final.parent)
    shutil.rmtree(aside, ignore_errors=True)
