"""Shared fixtures: a tiny model built once per test session, the recorded market data."""
from __future__ import annotations

from pathlib import Path

import pytest

from common.home import CACHE_ENV
from tests.tinymodel import build_tiny_model

SHARED_MARKET = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"


@pytest.fixture(scope="session", autouse=True)
def _private_shared_cache(tmp_path_factory):
    """The per-user shared cache (the converted embedded model) in a folder of this test session,
    never the user's ~/.cache; subprocesses the tests start inherit it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("shared-cache")))
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + ChatML tokenizer folder (built once per session; read-only use)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def shared_market() -> Path:
    """`../shared/data/market` (real recorded bars); tests that need it skip where it is absent."""
    if not SHARED_MARKET.is_dir():
        pytest.skip(f"recorded market data not found at {SHARED_MARKET}")
    return SHARED_MARKET

