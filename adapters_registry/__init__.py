"""The adapter registry: immutable, hash-verified adapter versions, an atomic champion pointer
and an append-only ledger under `<home>/registry` (format: README.md next to this file).

    from adapters_registry import Registry
    info = Registry(home).register(adapter_dir, lineage, decision, promote=decision.promote)
    info = Registry(home).loadable()        # the champion, verified: its folder and manifest

The registry returns verified paths and manifests and imports nothing above it (only `common`);
loading a version on its base model is `tasks.answering.load_promoted`, answering is
`tasks.answering.ask`. Importing this package does not import torch.
"""
from .format import (FORMAT_VERSION, ChampionPointer, DecisionRecord, LedgerEntry, Lineage, Manifest,
                     ModelScoreRecord, NoChampionError, RegistryCorruptError, RegistryError, RegistryIntegrityError,
                     ScoresRecord, VersionNotFoundError)
from .lock import RegistryLockedError
from .queries import RegistryView, VersionInfo
from .store import ChampionChangedError, Registry

__all__ = ["FORMAT_VERSION", "ChampionChangedError", "ChampionPointer", "DecisionRecord", "LedgerEntry",
           "Lineage", "Manifest", "ModelScoreRecord", "NoChampionError", "Registry", "RegistryCorruptError",
           "RegistryError", "RegistryIntegrityError", "RegistryLockedError", "RegistryView", "ScoresRecord",
           "VersionInfo", "VersionNotFoundError"]
