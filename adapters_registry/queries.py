"""Read-only queries of the registry. Readers take no lock: every file they read is replaced
atomically (champion.json), appended whole (ledger.jsonl) or never changes once renamed in
(versions/)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .format import (CHAMPION_EVENTS, CHAMPION_FILE, FORMAT_FILE, FORMAT_TEXT, FORMAT_VERSION, LEDGER_FILE,
                     MANIFEST_FILE, REGISTRY_DIR, VERSION_ID, VERSIONS_DIR, ChampionPointer, LedgerEntry, Manifest,
                     RegistryCorruptError, VersionNotFoundError, read_json_record, version_seq)
from .ledger import Ledger
from .verify import verify_version_dir


@dataclass(frozen=True)
class VersionInfo:
    """One registered version: its id, folder and (validated) manifest."""

    version: str
    path: Path
    manifest: Manifest

    @property
    def promoted(self) -> bool:
        """Whether the gate decided to promote it (the pointer may since have moved on)."""
        return self.manifest.decision.promote

    @property
    def candidate_loss(self) -> float | None:
        return self.manifest.lineage.scores.models["candidate"].loss

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "path": str(self.path), **self.manifest.model_dump(mode="json")}


class RegistryView:
    """Queries of the registry under `home/registry`."""

    def __init__(self, home: str | Path):
        self.home = Path(home)
        self.root = self.home / REGISTRY_DIR
        self.ledger = Ledger(self.root / LEDGER_FILE)

    def _check_format(self) -> bool:
        """False for a registry never written to; raises on another format version."""
        if not (self.root / FORMAT_FILE).exists():
            if (self.root / VERSIONS_DIR).exists():
                raise RegistryCorruptError(f"{self.root}: versions/ exists but {FORMAT_FILE} is missing")
            return False
        text = (self.root / FORMAT_FILE).read_text()
        if text != FORMAT_TEXT:
            raise RegistryCorruptError(f"{self.root / FORMAT_FILE}: expected {FORMAT_TEXT.strip()!r}, got "
                                       f"{text.strip()!r}; this code reads format {FORMAT_VERSION} only")
        return True

    def pointer(self) -> ChampionPointer | None:
        """The parsed champion pointer, or None before the first promotion."""
        if not self._check_format():
            return None
        try:
            return read_json_record(self.root / CHAMPION_FILE, ChampionPointer)
        except FileNotFoundError:
            if any(e.event in CHAMPION_EVENTS for e in self.ledger.read()):
                raise RegistryCorruptError(f"{self.root / CHAMPION_FILE} is missing but the ledger "
                                           f"records promotions") from None
            return None

    def champion(self) -> VersionInfo | None:
        """The current champion (manifest validated, files not re-hashed), or None."""
        pointer = self.pointer()
        return self.get(pointer.version) if pointer else None

    def get(self, version: str) -> VersionInfo:
        """One version by id; VersionNotFoundError when absent (or pruned)."""
        folder = self.root / VERSIONS_DIR / version
        if not VERSION_ID.match(version) or not folder.is_dir():
            raise VersionNotFoundError(f"no version {version!r} in {self.root / VERSIONS_DIR}")
        manifest = read_json_record(folder / MANIFEST_FILE, Manifest)
        if manifest.version != version:
            raise RegistryCorruptError(f"{folder}: manifest names version {manifest.version!r}")
        return VersionInfo(version, folder, manifest)

    def list(self) -> list[VersionInfo]:
        """Every version present, oldest first."""
        if not self._check_format():
            return []
        names = [name for name in self._version_names() if VERSION_ID.match(name)]
        return [self.get(name) for name in sorted(names, key=version_seq)]

    def _version_names(self) -> list[str]:
        folder = self.root / VERSIONS_DIR
        return [p.name for p in folder.iterdir()] if folder.is_dir() else []

    def history(self) -> list[LedgerEntry]:
        """The ledger, oldest first."""
        return self.ledger.read() if self._check_format() else []

    def champion_at(self, when: datetime) -> str | None:
        """The version id that was champion at `when` (naive times are local time), or None.
        The id may name a version since pruned."""
        when = when.astimezone(timezone.utc) if when.tzinfo is None else when
        moves = [(e.time, e.version) for e in self.history() if e.event in CHAMPION_EVENTS]
        pointer = self.pointer()
        if pointer and (pointer.since, pointer.version) not in moves:
            moves.append((pointer.since, pointer.version))  # crash between pointer and ledger
        earlier = [move for move in sorted(moves) if move[0] <= when]
        return earlier[-1][1] if earlier else None

    def verify_version(self, version: str) -> list[str]:
        """Problems of one version (empty when every file matches its manifest)."""
        folder = self.root / VERSIONS_DIR / version
        if not folder.is_dir():
            return [f"{folder}: no such version"]
        return verify_version_dir(folder, version)

    def verify(self) -> list[str]:
        """Re-hash every version, check the pointer and the ledger; return the problems found.
        Leftovers of a crashed writer (staging, temp pointer, torn ledger line) are not problems."""
        problems: list[str] = []
        try:
            if not self._check_format():
                return []
            for name in sorted(self._version_names()):
                problems += self.verify_version(name)
            pointer = self.pointer()
            if pointer and not (self.root / VERSIONS_DIR / pointer.version).is_dir():
                problems.append(f"{self.root / CHAMPION_FILE}: names {pointer.version}, which is not in versions/")
            entries = self.ledger.read()
            pruned = {v for e in entries if e.event == "prune" for v in e.versions}
            present = set(self._version_names())
            for entry in entries:
                if entry.event == "register" and entry.version not in present | pruned:
                    problems.append(f"{self.root / VERSIONS_DIR / str(entry.version)}: registered in the ledger, "
                                    f"never pruned, but missing")
        except RegistryCorruptError as exc:
            problems.append(str(exc))
        return problems

