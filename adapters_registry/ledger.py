"""`ledger.jsonl`: the append-only history of the registry, one JSON record a line.

Each line is written whole in one `write` and fsync'ed. A crash mid-write can only leave a
last line without its newline, and that line is a strict prefix of a JSON object, so it never
parses; readers skip it with a warning and the next writer cuts it off (and records that it
did). A last line that holds a complete JSON object but whose newline is missing or damaged
was written whole: it is damage, not a torn write, and is never cut. Any other unreadable line
is corruption and fails loudly.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from common.files import append_line_durably

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

    def _check_tail(self, lines: list[bytes], tail: bytes) -> None:
        """Raise when the bytes after the last newline are a whole entry, not a torn one."""
        try:
            json.JSONDecoder().raw_decode(tail.decode())
        except (ValueError, UnicodeDecodeError):
            return  # a prefix of an entry: torn by a crash
        raise RegistryCorruptError(f"{self.path}:{len(lines) + 1}: a complete entry whose newline is missing or "
                                   f"damaged ({tail[-20:]!r}); not a torn write, so it is not removed")

    def read(self) -> list[LedgerEntry]:
        """Every entry, oldest first; a torn last line is skipped with a warning."""
        lines, tail = self._split()
        self._check_tail(lines, tail)
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
        lines, tail = self._split()
        self._check_tail(lines, tail)
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
