"""A full disk never wedges a home: a registration that hits ENOSPC removes its staging folder
and names the path, and every writer cleans up what a killed one left before it needs space
(issue 16, failure 3). The small disk is a real tmpfs where this machine lets root mount one."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters_registry import Registry
from common import files
from adapters_registry.format import STAGING_DIR
from adapters_registry.store import CRASH_ENV
from flows.cli import main
from tests.adapters_registry.fakes import decision, lineage, make_fake_adapter

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 16 MiB tmpfs (skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill_up(path: Path) -> None:
    """Write to `path` until the disk is full, as a copy killed at the last byte would have."""
    with open(path, "ab", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    assert free_bytes(path.parent) == 0


def test_a_registration_that_hits_enospc_removes_its_staging_and_names_the_path(tmp_path, monkeypatch):
    registry = Registry(tmp_path / "home")
    real_write, written = os.write, []

    def disk_fills_up(fd: int, data) -> int:
        if sum(written) > 2048:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(real_write(fd, data[:1024]))
        return written[-1]

    monkeypatch.setattr(files.os, "write", disk_fills_up)
    with pytest.raises(OSError) as caught:
        registry.register(make_fake_adapter(tmp_path / "a", 1, size=64 * 1024), lineage(), decision(True, "base"),
                          promote=True)
    monkeypatch.undo()

    assert caught.value.errno == errno.ENOSPC and STAGING_DIR in str(caught.value.filename)
    assert list((registry.root / STAGING_DIR).iterdir()) == [] and registry.list() == []
    registry.register(make_fake_adapter(tmp_path / "b", 2), lineage(), decision(True, "base"), promote=True)
    assert registry.verify() == []


def test_a_registration_on_a_full_disk_gives_the_space_back(small_disk, tmp_path):
    home = small_disk / "home"
    registry = Registry(home)
    registry.register(make_fake_adapter(tmp_path / "a", 1), lineage(), decision(True, "base"), promote=True)
    free = free_bytes(small_disk)
    with pytest.raises(OSError) as caught:
        registry.register(make_fake_adapter(tmp_path / "big", 2, size=free + (1 << 20)), lineage(), decision(False),
                          promote=False)
    assert caught.value.errno == errno.ENOSPC and str(home) in str(caught.value)
    assert list((registry.root / STAGING_DIR).iterdir()) == []
    assert free_bytes(small_disk) >= free - 64 * 1024  # the partial copy is gone
    assert registry.verify() == []


def test_after_a_killed_registration_filled_the_disk_the_next_run_succeeds(small_disk, tmp_path, fast_profile,
                                                                             prefect_harness, capsys):
    home = small_disk / "home"
    env = {**os.environ, CRASH_ENV: "mid-copy", "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-m", "tests.adapters_registry.writer", str(home),
                             str(make_fake_adapter(tmp_path / "a", 1)), "1"], cwd=REPO, env=env, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    fill_up(next((home / "registry" / STAGING_DIR).iterdir()) / "adapter_config.json")  # not one byte left

    code = main(["run", "--home", str(home), "--profile", str(fast_profile), "--as-of", "2025-03-28"])

    assert code == 0, capsys.readouterr().err[-3000:]
    registry = Registry(home)
    assert len(registry.list()) == 1 and list((registry.root / STAGING_DIR).iterdir()) == []
    assert registry.verify() == []
