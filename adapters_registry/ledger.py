"""`ledger.jsonl`: the append-only history of the registry, one JSON record a line.

Each line is written whole in one `write` and fsync'ed. A crash mid-write can only leave a
last line without its newline; readers skip it with a warning and the next writer cuts it off
(and records that it did). Any other unreadable line is corruption and fails loudly.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from .atomic import append_line_durably
from .format import LedgerEntry, RegistryCorruptError

log = logging.getLogger(__name__)


class Ledger:
    def __init__(self, path: Path):
        self.path = path

    def _split(self) -> tuple[list[bytes], bytes]:
        """Complete lines, and the torn tail (b"" when the file ends with a newline)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], b""
        *lines, tail = data.split(b"\n")
        return lines, tail

    def read(self) -> list[LedgerEntry]:
        """Every entry, oldest first; a torn last line is skipped with a warning."""
        lines, tail = self._split()
        if tail:
            log.warning("%s: ignoring a torn last line (%d bytes) left by an interrupted write; "
                        "the next registry writer removes it", self.path, len(tail))
        entries = []
        for number, line in enumerate(lines, start=1):
            try:
                entries.append(LedgerEntry.model_validate(json.loads(line)))
            except (ValueError, ValidationError) as exc:
                raise RegistryCorruptError(f"{self.path}:{number}: not a valid ledger entry: {exc}") from exc
        return entries

    def torn_tail(self) -> bytes:
        """The bytes after the last newline (an interrupted append), or b""."""
        return self._split()[1]

    def repair(self) -> int:
        """Cut off a torn last line; return how many bytes were removed. Call under the lock."""
        tail = self.torn_tail()
        if tail:
            size = self.path.stat().st_size
            with open(self.path, "r+b") as handle:
                handle.truncate(size - len(tail))
                handle.flush()
                os.fsync(handle.fileno())
            log.warning("%s: removed a torn last line of %d bytes", self.path, len(tail))
        return len(tail)

    def append(self, entry: LedgerEntry) -> None:
        """Append one entry durably. Call under the lock, after `repair()`."""
        line = json.dumps(entry.model_dump(mode="json", exclude_defaults=True), sort_keys=True, allow_nan=False)
        append_line_durably(self.path, line.encode() + b"\n")
