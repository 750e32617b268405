"""Durable file primitives: hash, atomic replace (same-folder temp file, fsync, `os.replace`,
fsync of the folder), a fsync'ed write, copy and append. The pattern of pip's `adjacent_tmp_file`
and git's lockfile: a reader sees the old file or the new one, never a mix."""
from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename, create or unlink inside `path` durable."""
    if os.name == "nt":  # Windows cannot open a folder for fsync; os.replace is atomic there
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder below `folder`, then `folder` itself (before renaming it into place)."""
    for path in Path(folder).rglob("*"):
        if path.is_dir():
            fsync_dir(path)
        else:
            _fsync_file(path)
    fsync_dir(folder)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _named(exc: OSError, path: Path, note: str = "") -> OSError:
    """`exc` itself when it names a file, else the same error naming `path` (ENOSPC names none)."""
    if exc.filename is not None:
        return exc
    return OSError(exc.errno, f"{exc.strerror}{note}", str(path))


def write_synced(path: Path, data: bytes) -> None:
    """Write a new file (or overwrite one no reader sees yet, in a staging folder) and fsync it."""
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def write_atomic(path: Path, data: bytes, *, temp_prefix: str | None = None, temp_suffix: str = "",
                 before_replace: Callable[[str], None] | None = None) -> None:
    """Replace `path` with `data` atomically: a uniquely named temp file in the same folder
    (`<temp_prefix><uuid><temp_suffix>`, default `.<name>.tmp-<uuid>`), fsync, os.replace, fsync
    of the folder. On any failure the temp file is removed and an OSError names `path`.
    `before_replace(step)` is called at the steps a crash test stops at."""
    path = Path(path)
    folder = path.parent
    temp = folder / f"{temp_prefix or '.' + path.name + '.tmp-'}{uuid.uuid4().hex}{temp_suffix}"
    hook = before_replace or (lambda step: None)
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            handle.flush()
            hook("temp-written")
            os.fsync(handle.fileno())
        hook("before-replace")
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        named = _named(exc, path)
        if named is exc:
            raise
        raise named from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    hook("after-replace")
    fsync_dir(folder)


def copy_file_durably(src: Path, dst: Path) -> str:
    """Copy `src` to a new file `dst`, fsync it, and return the sha256 of the bytes written.
    An OSError (a full disk) names `dst`; the partial file is left for the caller's cleanup."""
    digest = hashlib.sha256()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with open(src, "rb") as source:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                _write_all(fd, chunk)
        os.fsync(fd)
    except OSError as exc:
        named = _named(exc, dst, f" (copying {src})")
        if named is exc:
            raise
        raise named from exc
    finally:
        os.close(fd)
    return digest.hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append_line_durably(path: Path, line: bytes) -> None:
    """Append one newline-terminated line in a single write and fsync it (and the folder when
    the file is new)."""
    if not line.endswith(b"\n") or b"\n" in line[:-1]:
        raise ValueError("a ledger line must be exactly one newline-terminated line")
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"{path}: short write ({written} of {len(line)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        fsync_dir(path.parent)
