"""The adapter registry: immutable, hash-verified adapter versions, an atomic champion pointer
and an append-only ledger under `<home>/registry` (format: README.md next to this file).

    from adapters_registry import Registry, load_promoted
    info = Registry(home).register(adapter_dir, lineage, decision, promote=decision.promote)
    model, tokenizer, info = load_promoted(home)

Importing this package does not import torch; `load_promoted` does, when called.
"""
from .format import (FORMAT_VERSION, ChampionPointer, DecisionRecord, LedgerEntry, Lineage, Manifest,
                     RegistryCorruptError, RegistryError, RegistryIntegrityError, VersionNotFoundError)
from .lock import RegistryLockedError
from .queries import RegistryView, VersionInfo
from .store import ChampionChangedError, Registry


def ask(home, question, version=None, **options):
    """A grounded answer from the champion (or `version`): see tasks.answering.ask, where it lives."""
    from tasks.answering import ask as _ask
    return _ask(home, question, version, **options)


def load_promoted(home, version=None):
    """The champion (or `version`) as a verified PeftModel + tokenizer + VersionInfo."""
    from .loading import load_promoted as _load_promoted
    return _load_promoted(home, version)


__all__ = ["FORMAT_VERSION", "ChampionChangedError", "ChampionPointer", "DecisionRecord", "LedgerEntry",
           "Lineage", "Manifest", "Registry", "RegistryCorruptError", "RegistryError", "RegistryIntegrityError",
           "RegistryLockedError", "RegistryView", "VersionInfo", "VersionNotFoundError", "ask", "load_promoted"]
