"""Durable file primitives: hash, copy with fsync, atomic replace (temp + fsync + os.replace +
fsync of the folder), and a fsync'ed append. The pattern of pip's `adjacent_tmp_file` and git's
lockfile: a reader sees the old file or the new one, never a mix."""
from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename, create or unlink inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, f"{exc.strerror} (copying {src})", str(dst)) from exc
    finally:
        os.close(fd)
    return digest.hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: Path, data: bytes, *, temp_prefix: str | None = None,
                 before_replace: Callable[[str], None] | None = None) -> None:
    """Replace `path` with `data` atomically: same-folder temp file, fsync, os.replace, fsync
    of the folder. `before_replace(step)` is called at the steps a crash test stops at."""
    folder = path.parent
    temp = folder / f"{temp_prefix or '.' + path.name + '.tmp-'}{uuid.uuid4().hex}"
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
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    hook("after-replace")
    fsync_dir(folder)


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
