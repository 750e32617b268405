"""Integrity checks: a version folder against its manifest, and the registry as a whole.

Problems are returned as sentences naming the path and what was expected; callers decide
whether to raise (`load_promoted`, rollback, the gate) or to report (`verify`, the CLI).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from common.files import sha256_file

from .format import (ADAPTER_CONFIG, FORBIDDEN_SUFFIXES, MANIFEST_FILE, VERSION_FILES, Manifest, RegistryCorruptError,
                     read_json_record)

log = logging.getLogger(__name__)


def check_source_files(folder: Path) -> list[str]:
    """Problems that keep an adapter folder from being registered or loaded safely."""
    forbidden = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in FORBIDDEN_SUFFIXES)
    if forbidden:
        return [f"{folder}: pickle-based files are not allowed (safetensors only): {forbidden}"]
    return []


def outside_problems(root: Path, path: Path) -> list[str]:
    """A symlink, or a path that resolves outside the registry, is never read as registry data."""
    if path.is_symlink():
        return [f"{path}: a symlink (to {os.readlink(path)}); registry files must be real files in {root}"]
    if not path.resolve().is_relative_to(root.resolve()):
        return [f"{path}: resolves to {path.resolve()}, outside the registry {root}"]
    return []


def verify_version_dir(folder: Path, expected_id: str) -> list[str]:
    """Re-hash every file of a version folder against its manifest (no symlinks anywhere)."""
    links = [p.name for p in folder.iterdir() if p.is_symlink()]
    if links:
        return [f"{folder}: symlinks are not registry files: {sorted(links)}"]
    try:
        manifest = read_json_record(folder / MANIFEST_FILE, Manifest)
    except FileNotFoundError:
        return [f"{folder}: no {MANIFEST_FILE}"]
    except RegistryCorruptError as exc:
        return [str(exc)]
    problems = check_source_files(folder)
    if manifest.version != expected_id:
        problems.append(f"{folder}: manifest names version {manifest.version!r}, folder is {expected_id!r}")
    present = {p.name for p in folder.iterdir()} - {MANIFEST_FILE}
    for name in sorted(present - set(manifest.files)):
        problems.append(f"{folder / name}: file not listed in the manifest")
    for name, record in sorted(manifest.files.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing (manifest lists sha256 {record.sha256[:12]}...)")
            continue
        size, digest = path.stat().st_size, sha256_file(path)
        if size != record.size or digest != record.sha256:
            problems.append(f"{path}: sha256 {digest[:12]}... ({size} bytes) does not match the manifest's "
                            f"{record.sha256[:12]}... ({record.size} bytes)")
    if (folder / ADAPTER_CONFIG).is_file() and not problems:
        try:
            json.loads((folder / ADAPTER_CONFIG).read_bytes())
        except ValueError as exc:
            problems.append(f"{folder / ADAPTER_CONFIG}: not JSON: {exc}")
    return problems


def files_to_register(adapter_dir: Path) -> list[Path]:
    """The files of an adapter folder that a version keeps (the rest is logged and left)."""
    if not adapter_dir.is_dir():
        raise FileNotFoundError(f"adapter folder not found: {adapter_dir}")
    problems = check_source_files(adapter_dir)
    if problems:
        raise RegistryCorruptError("; ".join(problems))
    kept = [adapter_dir / name for name in VERSION_FILES if (adapter_dir / name).is_file()]
    left = sorted({p.name for p in adapter_dir.iterdir()} - {p.name for p in kept})
    if left:
        log.info("%s: not registering %s (not part of a version)", adapter_dir, left)
    return kept
