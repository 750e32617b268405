"""A store write that hits a full disk names the file it was writing and leaves no temp file
(issue 16, failure 3: the ENOSPC at the fetch stage named no path)."""
from __future__ import annotations

import builtins
import errno

import pytest

from tasks.market.store import atomic_write_bytes


class FullDisk:
    """A file opened for writing on a full disk: every write fails with ENOSPC."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_store_write_that_hits_enospc_names_the_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    real_open = builtins.open

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FullDisk(handle) if "x" in mode else handle

    monkeypatch.setattr(builtins, "open", open_on_a_full_disk)
    target = tmp_path / "market" / "TCS.NS.csv"
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(target, b"bars")
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert list((tmp_path / "market").iterdir()) == []
