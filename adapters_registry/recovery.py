"""The writer's side of the registry that every write shares: the lock, ledger appends, the
atomic pointer move, and recovery after a crashed writer (README.md, "Writing", step 2).

Every write holds `registry.lock` and starts with `_prepare`: clean up after any writer that
crashed (staging leftovers, a temp pointer, a torn ledger line), record what its crash kept
out of the ledger, and finish a promotion it decided but did not carry out.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.files import sha256_file, write_atomic

from .consistency import PointerCheck, check_pointer, last_move
from .format import (CHAMPION_EVENTS, CHAMPION_FILE, CHAMPION_TEMP_PREFIX, FORMAT_FILE, FORMAT_TEXT, FORMAT_VERSION,
                     MANIFEST_FILE, STAGING_DIR, VERSIONS_DIR, ChampionEvent, ChampionPointer, LedgerEntry, LedgerEvent,
                     RegistryCorruptError, dump_record, version_seq)
from .lock import RegistryLock
from .queries import RegistryView
from .verify import outside_problems

log = logging.getLogger(__name__)

CRASH_ENV = "NIFTYTUNE_REGISTRY_CRASH_AT"
"""Test hook: the step name at which a writer SIGKILLs itself (see CRASH_STEPS)."""
CRASH_STEPS = ("mid-copy", "after-version-rename", "after-register-entry", "pointer-temp-written",
               "before-pointer-replace", "after-pointer-replace")

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


class RegistryWriter(RegistryView):
    """The lock, the ledger, the pointer and crash recovery; `Registry` adds the operations."""

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
            outside = outside_problems(self.root, self.root / VERSIONS_DIR / version)
            if outside:  # never vouch for what is not the registry's own
                raise RegistryCorruptError("; ".join(outside))
            manifest = self.get(version).manifest
            self._log("register", f"recovered: interrupted before its ledger entry ({manifest.decision.reason})",
                      version=version, decision=manifest.decision, previous=manifest.parent,
                      manifest_sha256=sha256_file(self.root / VERSIONS_DIR / version / MANIFEST_FILE))
        self._record_manifest_hashes()
        try:
            pointer = self.pointer()
            check = check_pointer(pointer, self.ledger.read(), str(self.root / CHAMPION_FILE))
        except RegistryCorruptError as exc:
            pointer, check = None, PointerCheck("invalid", [str(exc)])
        if check.state == "pending" and pointer is not None:  # "pending" is only ever said of a pointer
            self._log(pointer.event, f"recovered: pointer moved before its ledger entry ({pointer.reason})",
                      version=pointer.version, previous=pointer.previous, time=pointer.since)
        elif check.state == "invalid":
            if repairing:
                return  # the rollback replaces the pointer
            raise RegistryCorruptError("; ".join(check.problems) + ". Nothing was written; repair with "
                                       "`registry rollback VERSION --reason ...` or `--to-base`")
        self._finish_decided_promotion()

    def _record_manifest_hashes(self) -> None:
        """Versions registered before the ledger kept manifest hashes get theirs now (once)."""
        entries = self.ledger.read()
        hashed = {e.version for e in entries if e.manifest_sha256}
        registered = {e.version for e in entries if e.event == "register" and e.version}
        for version in sorted(registered - hashed, key=version_seq):
            manifest = self.root / VERSIONS_DIR / version / MANIFEST_FILE
            if manifest.is_file() and not manifest.is_symlink():
                self._log("recover", f"recorded the manifest hash of {version}, registered before the ledger "
                          f"kept manifest hashes", version=version, manifest_sha256=sha256_file(manifest))

    def _finish_decided_promotion(self) -> None:
        """The last registration decided `promote` and nothing moved since: a writer was killed
        between its ledger line and the pointer swap. Carry the decision out if the champion is
        still the one it was decided against and the version verifies; else say why not."""
        entries = self.ledger.read()
        registrations = [i for i, e in enumerate(entries) if e.event == "register"]
        if not registrations:
            return
        decided = entries[registrations[-1]]
        if decided.version is None or decided.decision is None or not decided.decision.promote:
            return
        later = entries[registrations[-1] + 1:]
        if any(e.event in CHAMPION_EVENTS or (e.event == "recover" and e.version == decided.version
                                              and not e.manifest_sha256) for e in later):
            return
        last = last_move(entries)
        champion = last.version if last else None
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

    def _log(self, event: LedgerEvent, reason: str, *, time: datetime | None = None, **fields: Any) -> None:
        self.ledger.append(LedgerEntry(time=time or _now(), event=event, reason=reason, pid=os.getpid(),
                                       host=socket.gethostname(), **fields))

    def _move_pointer(self, version: str | None, reason: str, event: ChampionEvent) -> None:
        """Swap champion.json atomically, then record the move in the ledger. `previous` is the
        champion the ledger vouches for (not what a damaged pointer says)."""
        last = last_move(self.ledger.read())
        pointer = ChampionPointer(format=FORMAT_VERSION, version=version, since=_now(), reason=reason, event=event,
                                  previous=last.version if last else None)
        write_atomic(self.root / CHAMPION_FILE, dump_record(pointer), temp_prefix=CHAMPION_TEMP_PREFIX,
                     before_replace=_pointer_checkpoint)
        self._log(event, reason, version=version, previous=pointer.previous, time=pointer.since)

    def _pointer_is_sound(self, entries: list[LedgerEntry]) -> bool:
        try:
            pointer = self.pointer()
        except RegistryCorruptError:
            return False
        return check_pointer(pointer, entries, str(self.root / CHAMPION_FILE)).state != "invalid"
