"""The pointer against the ledger: which champion the history vouches for.

`champion.json` is swapped before its ledger line is appended, so a writer killed between the
two leaves the pointer one move ahead of the ledger. That is the only disagreement a crash can
cause, and it is recognisable: the pointer's move follows every ledger entry, starts from the
ledger's last champion, and is a move a writer could have made (the promotion just decided, or
a rollback to a version that was champion or promoted). Anything else (a pointer naming a
rejected version, an old move, a version never registered, a move dated before its version
existed) is a forged or damaged pointer: readers refuse it and writers do not "recover" it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .format import CHAMPION_EVENTS, ChampionPointer, LedgerEntry

State = Literal["none", "recorded", "pending", "invalid"]


@dataclass(frozen=True)
class PointerCheck:
    """`recorded`: the ledger's last move is the pointer. `pending`: a move a killed writer made
    and did not log yet (the next writer logs it). `none`: no pointer and no move.
    `invalid`: `problems` says why."""

    state: State
    problems: list[str] = field(default_factory=list)


def last_move(entries: list[LedgerEntry]) -> LedgerEntry | None:
    """The ledger's last promote or rollback, or None."""
    moves = [e for e in entries if e.event in CHAMPION_EVENTS]
    return moves[-1] if moves else None


def _target_problems(pointer: ChampionPointer, registered: dict[str, LedgerEntry], where: str) -> list[str]:
    if pointer.version is None:
        return []
    entry = registered.get(pointer.version)
    if entry is None:
        return [f"{where}: names {pointer.version}, which the ledger never registered"]
    if pointer.since < entry.time:
        return [f"{where}: moved to {pointer.version} at {pointer.since.isoformat()}, before it was "
                f"registered ({entry.time.isoformat()})"]
    return []


def _was_champion(version: str, entries: list[LedgerEntry]) -> bool:
    return any(e.event in CHAMPION_EVENTS and e.version == version for e in entries)


def _pending_problems(pointer: ChampionPointer, entries: list[LedgerEntry],
                      registered: dict[str, LedgerEntry], where: str) -> list[str]:
    """Why the pointer is not a move a killed writer could have made after the last entry."""
    last = last_move(entries)
    recorded = last.version if last else None
    problems = []
    if pointer.previous != recorded:
        problems.append(f"moved from {pointer.previous} but the ledger's champion was {recorded}")
    newest = max((e.time for e in entries), default=None)
    if newest is not None and pointer.since < newest:
        problems.append(f"moved at {pointer.since.isoformat()}, before the ledger's last entry "
                        f"({newest.isoformat()})")
    registrations = [e for e in entries if e.event == "register"]
    entry = registered.get(pointer.version) if pointer.version else None
    if pointer.event == "promote":
        decided = entry is not None and entry.decision is not None and entry.decision.promote
        if not decided or registrations[-1] is not entry:
            problems.append(f"{pointer.version} is not the last registration decided for promotion")
    elif pointer.version is not None and not (_was_champion(pointer.version, entries) or (
            entry is not None and entry.decision is not None and entry.decision.promote)):
        problems.append(f"{pointer.version} was rejected by the gate and never champion")
    if not problems:
        return []
    shown = f"{recorded} (moved at {last.time.isoformat()})" if last else "no champion"
    return [f"{where}: names {pointer.version} since {pointer.since.isoformat()}, but the ledger's last move "
            f"is to {shown}: " + "; ".join(problems)]


def check_pointer(pointer: ChampionPointer | None, entries: list[LedgerEntry], where: str) -> PointerCheck:
    """Whether the pointer is the champion the ledger vouches for (see the module docstring)."""
    last = last_move(entries)
    if pointer is None:
        if last is not None:
            return PointerCheck("invalid", [f"{where} is missing but the ledger records moves"])
        return PointerCheck("none")
    registered = {e.version: e for e in entries if e.event == "register" and e.version}
    problems = _target_problems(pointer, registered, where)
    if last is not None and (last.version, last.time) == (pointer.version, pointer.since):
        entry = registered.get(pointer.version) if pointer.version else None
        if last.event == "promote" and entry is not None and not (entry.decision and entry.decision.promote):
            problems.append(f"{where}: the ledger promotes {pointer.version}, which the gate rejected")
        return PointerCheck("invalid", problems) if problems else PointerCheck("recorded")
    problems += _pending_problems(pointer, entries, registered, where)
    return PointerCheck("invalid", problems) if problems else PointerCheck("pending")


def ledger_problems(entries: list[LedgerEntry], where: str) -> list[str]:
    """Entries that contradict the ones before them: a move to a version not registered yet."""
    problems, seen = [], set()
    for number, entry in enumerate(entries, start=1):
        if entry.event == "register":
            seen.add(entry.version)
        elif entry.event in CHAMPION_EVENTS and entry.version is not None and entry.version not in seen:
            problems.append(f"{where}:{number}: {entry.event} to {entry.version} before it was registered")
    return problems
