"""The installed versions of the libraries a result depends on, for the records that say how it was made."""
from __future__ import annotations

import platform
from importlib import metadata

LIBRARIES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "safetensors",
             "tokenizers")
"""What training.json and a registry manifest record (the union of the two lists they kept)."""


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """`python` and each of `names` that is installed, with its version (a missing one is left out)."""
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found
