"""`Registry`: register, promote, roll back and prune adapter versions (README.md).

Every write holds `registry.lock` and starts by cleaning up after any writer that crashed
(recovery.py: staging leftovers, a temp pointer, a torn ledger line, a move the ledger missed,
a decided promotion never carried out).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from common.files import copy_file_durably, fsync_dir, sha256_file, write_atomic
from common.versions import library_versions

from .consistency import last_move
from .format import (ADAPTER_WEIGHTS, CHAMPION_EVENTS, FORMAT_VERSION, MANIFEST_FILE, STAGING_DIR, TOKENIZER_FILES,
                     VERSION_ID, VERSIONS_DIR, DecisionRecord, FileRecord, Lineage, Manifest, RegistryIntegrityError,
                     dump_record, format_version_id, version_seq)
from .queries import VersionInfo
from .recovery import CRASH_ENV, CRASH_STEPS, RegistryWriter, _checkpoint, _now
from .verify import files_to_register, verify_version_dir

__all__ = ["ANY_CHAMPION", "CRASH_ENV", "CRASH_STEPS", "ChampionChangedError", "Registry"]

log = logging.getLogger(__name__)

ANY_CHAMPION = object()


class ChampionChangedError(RegistryIntegrityError):
    """The champion moved between scoring and registration; the decision is stale."""


def _hash_tokenizer(folder: Path) -> tuple[str, str | None]:
    """sha256 over the tokenizer files (name and content), and of the chat template text."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            digest.update(name.encode() + b"\0" + sha256_file(folder / name).encode() + b"\n")
    template = None
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text()
    elif (folder / "tokenizer_config.json").is_file():
        template = json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template")
    template_hash = hashlib.sha256(str(template).encode()).hexdigest() if template else None
    return digest.hexdigest(), template_hash


class Registry(RegistryWriter):
    """The adapter registry under `home/registry`: the queries of RegistryView, and the writes."""

    def register(self, adapter_dir: str | Path, manifest_fields: dict[str, Any], decision: Any, *,
                 promote: bool, expected_champion: Any = ANY_CHAMPION) -> VersionInfo:
        """Store an evaluated adapter as a new immutable version with its decision; move the
        champion pointer to it when `promote`. `expected_champion` (a version id or None), when
        given, must still be the champion, else ChampionChangedError (the decision is stale)."""
        record = decision if isinstance(decision, DecisionRecord) else DecisionRecord.model_validate(
            asdict(decision) if is_dataclass(decision) and not isinstance(decision, type) else dict(decision))
        if record.promote != promote:
            raise ValueError(f"promote={promote} contradicts the decision ({record.promote}: {record.reason})")
        lineage = Lineage.model_validate(manifest_fields)
        sources = files_to_register(Path(adapter_dir))
        with self._writing():
            _checkpoint("locked")
            self._prepare()
            parent = self.pointer()
            parent_id = parent.version if parent else None
            if expected_champion is not ANY_CHAMPION and expected_champion != parent_id:
                raise ChampionChangedError(f"the decision was made against champion {expected_champion}, "
                                           f"but the champion is now {parent_id}; score again")
            version = self._stage_and_rename(sources, lineage, record, parent_id)
            self._log("register", record.reason, version=version, decision=record, previous=parent_id,
                      manifest_sha256=sha256_file(self.root / VERSIONS_DIR / version / MANIFEST_FILE))
            _checkpoint("after-register-entry")
            if promote:
                self._move_pointer(version, record.reason, "promote")
            _checkpoint("unlocking")
        return self.get(version)

    def _stage_and_rename(self, sources: list[Path], lineage: Lineage, decision: DecisionRecord,
                          parent: str | None) -> str:
        """Copy into staging/<uuid>, hash, write and check the manifest, rename into versions/.
        On any error (a full disk, a changed source) the staging folder is removed."""
        staging = self.root / STAGING_DIR / uuid.uuid4().hex
        staging.mkdir()
        try:
            version = self._stage(staging, sources, lineage, decision, parent)
            os.rename(staging, self.root / VERSIONS_DIR / version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(self.root / VERSIONS_DIR)
        fsync_dir(self.root / STAGING_DIR)
        _checkpoint("after-version-rename")
        return version

    def _stage(self, staging: Path, sources: list[Path], lineage: Lineage, decision: DecisionRecord,
               parent: str | None) -> str:
        """Fill `staging` with the files and their manifest; return the new version id."""
        files = {}
        for source in sources:
            before = sha256_file(source)
            digest = copy_file_durably(source, staging / source.name)
            if digest != before:
                raise RegistryIntegrityError(f"{source} changed while it was being copied")
            files[source.name] = FileRecord(sha256=digest, size=(staging / source.name).stat().st_size)
            _checkpoint("mid-copy")
        tokenizer_hash, template_hash = _hash_tokenizer(staging)
        lineage = lineage.model_copy(update={
            "tokenizer_hash": lineage.tokenizer_hash or tokenizer_hash,
            "chat_template_hash": lineage.chat_template_hash or template_hash,
            "library_versions": lineage.library_versions or library_versions()})
        version = format_version_id(self._next_seq(), lineage.session or _now().date(),
                                    files[ADAPTER_WEIGHTS].sha256)
        manifest = Manifest(format=FORMAT_VERSION, version=version, created=_now(), parent=parent,
                            decision=decision, files=files, lineage=lineage)
        write_atomic(staging / MANIFEST_FILE, dump_record(manifest))
        problems = verify_version_dir(staging, version)
        if problems:
            raise RegistryIntegrityError(f"staged version {version} failed its check: {problems}")
        return version

    def _next_seq(self) -> int:
        """One past every sequence number ever used, pruned versions included."""
        used = [version_seq(name) for name in self._version_names() if VERSION_ID.match(name)]
        used += [version_seq(v) for e in self.ledger.read() for v in [e.version, *e.versions] if v]
        return max(used, default=0) + 1

    def rollback(self, version: str, reason: str) -> VersionInfo:
        """Point the champion back at an earlier promoted version (verified first); logged.
        Also the repair of a pointer the ledger does not vouch for."""
        if not reason.strip():
            raise ValueError("a rollback needs a reason")
        with self._writing():
            self._prepare(repairing=True)
            target = self.get(version)
            problems = self.verify_version(version)
            if problems:
                raise RegistryIntegrityError(f"cannot roll back to {version}: {problems}; "
                                             f"`rollback --to-base` leaves no champion")
            entries = self.ledger.read()
            last = last_move(entries)
            if last and last.version == version and self._pointer_is_sound(entries):
                raise ValueError(f"{version} is already the champion")
            was_champion = any(e.version == version for e in entries if e.event in CHAMPION_EVENTS)
            if not (target.promoted or was_champion):
                raise ValueError(f"{version} was rejected by the gate and never champion; not rolling back to it")
            self._move_pointer(version, reason, "rollback")
        return target

    def rollback_to_base(self, reason: str) -> None:
        """Leave no champion: the base model answers and is the gate's baseline; logged. Works
        whatever state the champion's files or the pointer are in."""
        if not reason.strip():
            raise ValueError("a rollback needs a reason")
        with self._writing():
            self._prepare(repairing=True)
            entries = self.ledger.read()
            last = last_move(entries)
            if (last is None or last.version is None) and self._pointer_is_sound(entries):
                raise ValueError(f"there is no champion in {self.root}: the base model already answers")
            self._move_pointer(None, reason, "rollback")

    def prune(self, keep_promoted: int, keep_rejected: int) -> list[str]:
        """Delete all but the champion, the last `keep_promoted` promoted and the last
        `keep_rejected` rejected versions; logged. Returns the pruned ids."""
        with self._writing():
            self._prepare()
            pointer = self.pointer()
            versions = self.list()
            promoted = [v.version for v in versions if v.promoted and (not pointer or v.version != pointer.version)]
            rejected = [v.version for v in versions if not v.promoted]
            doomed = promoted[:max(len(promoted) - keep_promoted, 0)] + rejected[:max(len(rejected) - keep_rejected, 0)]
            if not doomed:
                return []
            self._log("prune", f"retention: keep the champion, the last {keep_promoted} promoted and the "
                      f"last {keep_rejected} rejected", versions=sorted(doomed, key=version_seq))
            for version in doomed:  # out of versions/ in one rename, then deleted
                trash = self.root / STAGING_DIR / f"pruned-{version}-{uuid.uuid4().hex[:8]}"
                os.rename(self.root / VERSIONS_DIR / version, trash)
                fsync_dir(self.root / VERSIONS_DIR)
                shutil.rmtree(trash)
        return sorted(doomed, key=version_seq)

