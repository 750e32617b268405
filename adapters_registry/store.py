"""`Registry`: register, promote, roll back and prune adapter versions (README.md).

Every write holds `registry.lock` and starts by cleaning up after any writer that crashed
(staging leftovers, a temp pointer, a torn ledger line, a move the ledger missed).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import uuid
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .atomic import copy_file_durably, fsync_dir, sha256_file, write_atomic
from .format import (ADAPTER_WEIGHTS, CHAMPION_EVENTS, CHAMPION_FILE, CHAMPION_TEMP_PREFIX, FORMAT_FILE, FORMAT_TEXT,
                     FORMAT_VERSION, MANIFEST_FILE, STAGING_DIR, TOKENIZER_FILES, VERSION_ID, VERSIONS_DIR,
                     ChampionPointer, DecisionRecord, FileRecord, LedgerEntry, Lineage, Manifest,
                     RegistryCorruptError, RegistryIntegrityError, dump_record, format_version_id, version_seq)
from .consistency import PointerCheck, check_pointer, last_move
from .lock import RegistryLock
from .queries import RegistryView, VersionInfo
from .verify import files_to_register, verify_version_dir

log = logging.getLogger(__name__)

CRASH_ENV = "NIFTYTUNE_REGISTRY_CRASH_AT"
"""Test hook: the step name at which a writer SIGKILLs itself (see CRASH_STEPS)."""
CRASH_STEPS = ("mid-copy", "after-version-rename", "after-register-entry", "pointer-temp-written",
               "before-pointer-replace", "after-pointer-replace")
ANY_CHAMPION = object()
LIBRARIES = ("torch", "transformers", "peft", "safetensors", "tokenizers", "trl", "bitsandbytes")


class ChampionChangedError(RegistryIntegrityError):
    """The champion moved between scoring and registration; the decision is stale."""


def _checkpoint(step: str) -> None:
    """Named points of a write; the crash tests kill the process here, the concurrency test
    records times here."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _pointer_checkpoint(step: str) -> None:
    """`write_atomic`'s steps, named as the crash tests know them for the pointer swap."""
    _checkpoint({"temp-written": "pointer-temp-written", "before-replace": "before-pointer-replace",
                 "after-replace": "after-pointer-replace"}[step])


def _now() -> datetime:
    return datetime.now(timezone.utc)


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


class Registry(RegistryView):
    """The adapter registry under `home/registry`: the queries of RegistryView, and the writes."""

    def __init__(self, home: str | Path, *, lock_timeout: float = 30.0):
        super().__init__(home)
        self.lock_timeout = lock_timeout

    # ---- writes --------------------------------------------------------------------------

    def _writing(self) -> RegistryLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return RegistryLock(self.root, self.lock_timeout)

    def _prepare(self, *, repairing: bool = False) -> None:
        """Under the lock: create the layout, clean up after a crashed writer (what frees space
        first), then bring the ledger up to date. A pointer the ledger does not vouch for stops
        every writer but a rollback (`repairing`), which replaces it."""
        if not self._check_format():
            write_atomic(self.root / FORMAT_FILE, FORMAT_TEXT.encode())
        for sub in (STAGING_DIR, VERSIONS_DIR):
            (self.root / sub).mkdir(exist_ok=True)
        for leftover in (self.root / STAGING_DIR).iterdir():
            log.warning("removing %s left by an interrupted registry write", leftover)
            shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()
        for temp in [*self.root.glob(CHAMPION_TEMP_PREFIX + "*"), *self.root.glob(".*.tmp-*")]:
            log.warning("removing %s left by an interrupted atomic write", temp)
            temp.unlink()
        if self.ledger.repair():
            self._log("recover", "removed a torn last ledger line left by an interrupted write")
        self._reconcile_ledger(repairing)

    def _reconcile_ledger(self, repairing: bool) -> None:
        """Record what a crash kept out of the ledger (a version renamed in without its entry, a
        pointer swap without its entry) and finish a promotion that was decided and logged but
        killed before the pointer moved."""
        registered = {e.version for e in self.ledger.read() if e.event == "register"}
        for version in sorted(set(self._version_names()) - registered, key=version_seq):
            manifest = self.get(version).manifest
            self._log("register", f"recovered: interrupted before its ledger entry ({manifest.decision.reason})",
                      version=version, decision=manifest.decision, previous=manifest.parent,
                      manifest_sha256=sha256_file(self.root / VERSIONS_DIR / version / MANIFEST_FILE))
        try:
            pointer = self.pointer()
            check = check_pointer(pointer, self.ledger.read(), str(self.root / CHAMPION_FILE))
        except RegistryCorruptError as exc:
            pointer, check = None, PointerCheck("invalid", [str(exc)])
        if check.state == "pending":
            self._log(pointer.event, f"recovered: pointer moved before its ledger entry ({pointer.reason})",
                      version=pointer.version, previous=pointer.previous, time=pointer.since)
        elif check.state == "invalid":
            if repairing:
                return  # the rollback replaces the pointer
            raise RegistryCorruptError("; ".join(check.problems) + ". Nothing was written; repair with "
                                       "`registry rollback VERSION --reason ...` or `--to-base`")
        self._finish_decided_promotion()

    def _finish_decided_promotion(self) -> None:
        """The last registration decided `promote` and nothing moved since: a writer was killed
        between its ledger line and the pointer swap. Carry the decision out if the champion is
        still the one it was decided against and the version verifies; else say why not."""
        entries = self.ledger.read()
        registrations = [i for i, e in enumerate(entries) if e.event == "register"]
        if not registrations or not entries[registrations[-1]].decision.promote:
            return
        decided = entries[registrations[-1]]
        later = entries[registrations[-1] + 1:]
        if any(e.event in CHAMPION_EVENTS or (e.event == "recover" and e.version == decided.version) for e in later):
            return
        champion = last_move(entries).version if last_move(entries) else None
        problems = self.verify_version(decided.version, entries)
        if champion == decided.previous and not problems:
            self._move_pointer(decided.version, f"completed after an interrupted write: {decided.reason}", "promote")
            log.warning("finished the promotion of %s decided before a crash", decided.version)
            return
        why = "; ".join(problems) or f"the champion is now {champion}, not {decided.previous}"
        self._log("recover", f"{decided.version} was decided for promotion but the write was interrupted before the "
                  f"pointer moved, and it cannot be carried out now ({why}); the champion stays {champion}",
                  version=decided.version)

    def recover(self) -> list[LedgerEntry]:
        """Take the lock and clean up after any crashed writer (see `_prepare`); return the
        ledger entries that recording and finishing its work added."""
        with self._writing():
            before = len(self.history())
            self._prepare()
            return self.history()[before:]

    def _log(self, event: str, reason: str, *, time: datetime | None = None, **fields: Any) -> None:
        self.ledger.append(LedgerEntry(time=time or _now(), event=event, reason=reason, pid=os.getpid(),
                                       host=socket.gethostname(), **fields))

    def _move_pointer(self, version: str | None, reason: str, event: str) -> None:
        """Swap champion.json atomically, then record the move in the ledger. `previous` is the
        champion the ledger vouches for (not what a damaged pointer says)."""
        last = last_move(self.ledger.read())
        pointer = ChampionPointer(format=FORMAT_VERSION, version=version, since=_now(), reason=reason, event=event,
                                  previous=last.version if last else None)
        write_atomic(self.root / CHAMPION_FILE, dump_record(pointer), temp_prefix=CHAMPION_TEMP_PREFIX,
                     before_replace=_pointer_checkpoint)
        self._log(event, reason, version=version, previous=pointer.previous, time=pointer.since)

    def register(self, adapter_dir: str | Path, manifest_fields: dict[str, Any], decision: Any, *,
                 promote: bool, expected_champion: Any = ANY_CHAMPION) -> VersionInfo:
        """Store an evaluated adapter as a new immutable version with its decision; move the
        champion pointer to it when `promote`. `expected_champion` (a version id or None), when
        given, must still be the champion, else ChampionChangedError (the decision is stale)."""
        record = DecisionRecord.model_validate(asdict(decision) if is_dataclass(decision) else dict(decision))
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
            "library_versions": lineage.library_versions or _library_versions()})
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

    def _pointer_is_sound(self, entries: list[LedgerEntry]) -> bool:
        try:
            pointer = self.pointer()
        except RegistryCorruptError:
            return False
        return check_pointer(pointer, entries, str(self.root / CHAMPION_FILE)).state != "invalid"

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


def _library_versions() -> dict[str, str]:
    import platform
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found
