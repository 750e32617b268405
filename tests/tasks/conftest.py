"""Fixtures of the answering tests: a home with a promoted tiny adapter and TCS's recorded bars."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adapters_registry import Registry
from tasks.training.base_model import hash_weight_files
from tasks.market.store import bars_path, write_bars
from tests.adapters_registry.fakes import decision, lineage, make_lora_adapter
from tests.tasks.test_samples_real import read_recorded_bars


@pytest.fixture(scope="module")
def answering_home(tmp_path_factory, tiny_model_dir, shared_market) -> Path:
    """A home with a promoted tiny adapter (default config) and TCS's recorded bars to 2019-11-29."""
    home = tmp_path_factory.mktemp("home")
    adapter = make_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("run") / "adapter", seed=3)
    fields = lineage(base_identity=str(tiny_model_dir), file_hash=hash_weight_files(tiny_model_dir))
    Registry(home).register(adapter, fields, decision(True, "base"), promote=True)
    frame = read_recorded_bars(shared_market / "TCS.NS.csv")
    bars_path(home, "TCS.NS").parent.mkdir(parents=True, exist_ok=True)
    write_bars(bars_path(home, "TCS.NS"), frame.loc[:"2019-11-29"].iloc[-300:], {}, "TCS.NS")
    return home


@pytest.fixture
def served(answering_home, tmp_path) -> Path:
    """A copy of `answering_home` to change (promote, tamper, roll back) while it is served."""
    return Path(shutil.copytree(answering_home, tmp_path / "home"))
