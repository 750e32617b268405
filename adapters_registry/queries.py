"""Read-only queries of the registry. Readers take no lock: every file they read is replaced
atomically (champion.json), appended whole (ledger.jsonl) or never changes once renamed in
(versions/)."""
from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.files import sha256_file

from .format import (ADAPTER_WEIGHTS, CHAMPION_EVENTS, CHAMPION_FILE, FORMAT_FILE, FORMAT_TEXT, FORMAT_VERSION,
                     LEDGER_FILE, MANIFEST_FILE, REGISTRY_DIR, VERSION_ID, VERSIONS_DIR, ChampionPointer, LedgerEntry,
                     Manifest, NoChampionError, RegistryCorruptError, RegistryIntegrityError, VersionNotFoundError,
                     read_json_record, version_seq)
from .consistency import check_pointer, ledger_problems
from .ledger import Ledger
from .verify import outside_problems, verify_version_dir


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
        """The current champion (manifest validated, files not re-hashed), or None (nothing
        promoted, or rolled back to the base). A pointer the ledger does not vouch for raises
        RegistryCorruptError."""
        pointer = self.pointer()
        check = check_pointer(pointer, self.history(), str(self.root / CHAMPION_FILE))
        if check.state == "invalid":
            raise RegistryCorruptError("; ".join(check.problems))
        return self.get(pointer.version) if pointer and pointer.version else None

    def verified_champion(self) -> VersionInfo | None:
        """The champion after every check `verify` makes of it (files, manifest hash, pointer
        against the ledger); RegistryIntegrityError when one fails."""
        champion = self.champion()
        if champion is None:
            return None
        problems = self.verify_version(champion.version)
        if problems:
            raise RegistryIntegrityError(f"champion {champion.version} fails verification: " + "; ".join(problems))
        return champion

    def loadable(self, version: str | None = None) -> VersionInfo:
        """`version` (default: the champion) after every check `verify` makes of it, with its
        safetensors weights present: what a loader may read (tasks.answering.load_promoted).
        NoChampionError when nothing is promoted; RegistryIntegrityError when a check fails."""
        info = self.get(version) if version else self.champion()
        if info is None:
            raise NoChampionError(f"no promoted adapter in {self.root}; run the daily flow first")
        problems = self.verify_version(info.version)
        if problems:
            raise RegistryIntegrityError(f"refusing to load {info.version}: " + "; ".join(problems))
        if not (info.path / ADAPTER_WEIGHTS).is_file():
            raise RegistryIntegrityError(f"{info.path}: no {ADAPTER_WEIGHTS} (only safetensors are loaded)")
        return info

    def get(self, version: str) -> VersionInfo:
        """One version by id; VersionNotFoundError when absent (or pruned)."""
        folder = self.root / VERSIONS_DIR / version
        if not VERSION_ID.match(version) or not folder.is_dir():
            raise VersionNotFoundError(f"no version {version!r} in {self.root / VERSIONS_DIR}")
        manifest = read_json_record(folder / MANIFEST_FILE, Manifest)
        if manifest.version != version:
            raise RegistryCorruptError(f"{folder}: manifest names version {manifest.version!r}")
        return VersionInfo(version, folder, manifest)

    # From here on, `list` in this class's annotations names this method: hence `builtins.list`.
    def list(self) -> builtins.list[VersionInfo]:
        """Every version present, oldest first."""
        if not self._check_format():
            return []
        names = [name for name in self._version_names() if VERSION_ID.match(name)]
        return [self.get(name) for name in sorted(names, key=version_seq)]

    def _unlogged_newest(self, entries: builtins.list[LedgerEntry]) -> str | None:
        """The newest version when it alone lacks its `register` line (a crash between the
        rename and the append, which the next writer completes), else None."""
        registered = {e.version for e in entries if e.event == "register"}
        names = sorted((n for n in self._version_names() if VERSION_ID.match(n)), key=version_seq)
        unlogged = [n for n in names if n not in registered]
        return unlogged[0] if unlogged and unlogged == names[-1:] else None

    def _version_names(self) -> builtins.list[str]:
        folder = self.root / VERSIONS_DIR
        return [p.name for p in folder.iterdir()] if folder.is_dir() else []

    def history(self) -> builtins.list[LedgerEntry]:
        """The ledger, oldest first."""
        return self.ledger.read() if self._check_format() else []

    def champion_at(self, when: datetime) -> str | None:
        """The version id that was champion at `when` (naive times are local time), or None.
        The id may name a version since pruned."""
        when = when.astimezone(timezone.utc) if when.tzinfo is None else when
        entries = self.history()
        moves = [(e.time, e.version) for e in entries if e.event in CHAMPION_EVENTS]
        pointer = self.pointer()
        if pointer is not None and check_pointer(pointer, entries, str(self.root / CHAMPION_FILE)).state == "pending":
            moves.append((pointer.since, pointer.version))  # crash between pointer and ledger
        earlier = [move for move in sorted(moves, key=lambda move: move[0]) if move[0] <= when]
        return earlier[-1][1] if earlier else None

    def verify_version(self, version: str, entries: builtins.list[LedgerEntry] | None = None) -> builtins.list[str]:
        """Problems of one version (empty when every file matches its manifest and the manifest
        matches the hash its ledger registration recorded)."""
        folder = self.root / VERSIONS_DIR / version
        if not VERSION_ID.match(version) or not folder.is_dir():
            return [f"{folder}: no such version"]
        problems = outside_problems(self.root, folder)
        if problems:
            return problems
        problems = verify_version_dir(folder, version)
        entries = self.history() if entries is None else entries
        if not any(e.event == "register" and e.version == version for e in entries):
            return problems + [f"{folder}: no registration of {version} in {self.ledger.path}"]
        recorded = [e.manifest_sha256 for e in entries if e.version == version and e.manifest_sha256]
        if not recorded:
            problems.append(f"{folder}: {self.ledger.path} records no manifest hash for {version} (registered "
                            f"before hashes were kept; the next registry writer records it)")
        elif (folder / MANIFEST_FILE).is_file() and not (folder / MANIFEST_FILE).is_symlink():
            digest = sha256_file(folder / MANIFEST_FILE)
            if digest != recorded[-1]:
                problems.append(f"{folder / MANIFEST_FILE}: sha256 {digest[:12]}... does not match the "
                                f"{recorded[-1][:12]}... its registration recorded in {self.ledger.path}")
        return problems

    def verify(self) -> builtins.list[str]:
        """Re-hash every version and its manifest, check the pointer against the ledger and the
        ledger's lines; return the problems found. Leftovers of a crashed writer (staging, temp
        pointer, torn ledger line, a pointer swap not yet logged) are not problems."""
        problems: builtins.list[str] = []
        try:
            if not self._check_format():
                return []
            problems += outside_problems(self.root, self.root / VERSIONS_DIR)
            entries = self.ledger.read()
            problems += ledger_problems(entries, str(self.ledger.path))
            unlogged = self._unlogged_newest(entries)
            for name in sorted(self._version_names()):
                if name == unlogged:  # renamed in by a writer killed before its ledger line
                    folder = self.root / VERSIONS_DIR / name
                    problems += outside_problems(self.root, folder) or verify_version_dir(folder, name)
                else:
                    problems += self.verify_version(name, entries)
            try:
                pointer = self.pointer()
                problems += check_pointer(pointer, entries, str(self.root / CHAMPION_FILE)).problems
            except RegistryCorruptError as exc:
                pointer = None
                problems.append(str(exc))
            if pointer and pointer.version and not (self.root / VERSIONS_DIR / pointer.version).is_dir():
                problems.append(f"{self.root / CHAMPION_FILE}: names {pointer.version}, which is not in versions/")
            pruned = {v for e in entries if e.event == "prune" for v in e.versions}
            present = set(self._version_names())
            for entry in entries:
                if entry.event == "register" and entry.version not in present | pruned:
                    problems.append(f"{self.root / VERSIONS_DIR / str(entry.version)}: registered in the ledger, "
                                    f"never pruned, but missing")
        except RegistryCorruptError as exc:
            problems.append(str(exc))
        return problems
