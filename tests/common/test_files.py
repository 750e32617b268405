"""common.files: an atomic write leaves the old file or the new one, never a partial file."""
from __future__ import annotations

import errno
import hashlib
import os

import pytest

from common import files
from common.files import sha256_file, write_atomic


def test_sha256_file_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "blob"
    data = os.urandom(3 * files.CHUNK + 5)  # several read blocks
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_write_atomic_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["state.json"]


@pytest.mark.parametrize("step", ["temp-written", "before-replace"])
def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_partial_file(tmp_path, step):
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    def fail_at(seen: str) -> None:
        if seen == step:
            raise KeyboardInterrupt  # any exception, not only an OSError

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, b"new", before_replace=fail_at)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["state.json"]


def test_a_full_disk_names_the_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # like the kernel's: no file name

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match="No space left") as caught:
        write_atomic(tmp_path / "bars.csv", b"data")
    monkeypatch.undo()
    assert caught.value.filename == str(tmp_path / "bars.csv") and os.listdir(tmp_path) == []


def test_temp_names_are_unique_and_follow_the_prefix_and_suffix(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(files.os, "replace", lambda src, dst: (seen.append(os.path.basename(src)), real_replace(src, dst)))
    for _ in range(2):
        write_atomic(tmp_path / "x.csv", b"1", temp_prefix=".x.csv.", temp_suffix=".tmp")
    assert len(set(seen)) == 2 and all(n.startswith(".x.csv.") and n.endswith(".tmp") for n in seen)


def test_append_line_durably_takes_exactly_one_line(tmp_path):
    path = tmp_path / "ledger.jsonl"
    files.append_line_durably(path, b'{"a": 1}\n')
    files.append_line_durably(path, b'{"a": 2}\n')
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    with pytest.raises(ValueError):
        files.append_line_durably(path, b"two\nlines\n")
