"""The on-disk store: its read contract, validation on read, and atomic writes under SIGKILL."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest

from tasks.market.calendar import IST, resolve_session
from tasks.config import Config, MarketConfig, TickerSpec
from tasks.market.data import commit_staged, stage_new_bars
from tasks.market.store import (COLUMNS, CorruptStoreError, MissingBarsError, bars_path, load_bars,
                                market_dir, store_metadata, store_snapshot, stored_symbols)

REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ["^NSEI", "TCS.NS", "INFY.NS"]
CFG = Config(market=MarketConfig(
    source="synthetic", backfill_sessions=140,
    tickers=[TickerSpec(symbol=s, name=s, kind="index" if s.startswith("^") else "stock") for s in SYMBOLS]))


def fetch(home: Path, as_of: date) -> None:
    """One fetch run with the plain functions (no Prefect)."""
    session = resolve_session(as_of, CFG.market, now=datetime(2025, 1, 1, tzinfo=IST))
    staged = {s: stage_new_bars(home, CFG.market, s, session) for s in SYMBOLS}
    commit_staged(home, CFG, session, staged, {})


def snapshot(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in market_dir(home).iterdir() if p.is_file() and p.suffix == ".csv"}


def test_stored_bars_follow_the_read_contract(tmp_path):
    fetch(tmp_path, date(2024, 6, 14))
    bars = load_bars(tmp_path, "TCS.NS")
    assert isinstance(bars.index, pd.DatetimeIndex) and bars.index.name == "session" and bars.index.tz is None
    assert bars.index.is_monotonic_increasing and bars.index.is_unique
    assert (bars.index == bars.index.normalize()).all()
    assert list(bars.columns) == COLUMNS and (bars.dtypes == "float64").all()
    assert stored_symbols(tmp_path) == sorted(SYMBOLS)
    meta = store_metadata(tmp_path, "TCS.NS")
    assert meta["source"] == "synthetic" and meta["synthetic"] is True and meta["adjusted"] is False
    assert meta["last_session"] == date(2024, 6, 14) and meta["rows"] == len(bars) == 140
    assert isinstance(meta["updated"], datetime)


def test_missing_store_file_raises_missing_bars_error(tmp_path):
    with pytest.raises(MissingBarsError, match="TCS.NS"):
        load_bars(tmp_path, "TCS.NS")


def test_store_file_edited_by_hand_fails_validation_on_read(tmp_path):
    fetch(tmp_path, date(2024, 6, 14))
    path = bars_path(tmp_path, "TCS.NS")
    path.write_text(path.read_text().replace("\n2024-06-14,", "\n2024-06-13,"))
    with pytest.raises(CorruptStoreError, match="checksum"):
        load_bars(tmp_path, "TCS.NS")


KILLER = textwrap.dedent("""
    import os, signal, sys
    from datetime import date
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from tests.tasks import test_market_store as t

    real_replace = os.replace
    def replace_then_die(src, dst):  # dies after the temp file is written and fsynced
        if Path(dst).parent.name == "market":
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)
    os.replace = replace_then_die
    t.fetch(Path(sys.argv[2]), date(2024, 6, 21))
""")


def test_kill_between_write_and_rename_leaves_the_store_as_before(tmp_path):
    fetch(tmp_path, date(2024, 6, 14))
    before = snapshot(tmp_path)
    run = subprocess.run([sys.executable, "-c", KILLER, str(REPO), str(tmp_path)], capture_output=True, timeout=60)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()[-2000:]
    assert snapshot(tmp_path) == before
    leftovers = list(market_dir(tmp_path).glob(".*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the killed write, complete but never renamed
    assert stored_symbols(tmp_path) == sorted(SYMBOLS)
    assert all(load_bars(tmp_path, s).index[-1] == pd.Timestamp("2024-06-14") for s in SYMBOLS)
    fetch(tmp_path, date(2024, 6, 21))  # the next writer clears the leftover and converges
    assert not list(market_dir(tmp_path).glob(".*.tmp"))
    assert load_bars(tmp_path, "TCS.NS").index[-1] == pd.Timestamp("2024-06-21")


def test_store_snapshot_puts_the_store_back_when_a_later_stage_fails(tmp_path):
    fetch(tmp_path, date(2024, 6, 14))
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError, match="training failed"):
        with store_snapshot(tmp_path):
            fetch(tmp_path, date(2024, 6, 21))
            (market_dir(tmp_path) / "NEW.NS.csv").write_bytes(before["TCS.NS.csv"])
            raise RuntimeError("training failed")
    assert snapshot(tmp_path) == before
    with store_snapshot(tmp_path):  # a block that succeeds keeps what it wrote
        fetch(tmp_path, date(2024, 6, 21))
    assert load_bars(tmp_path, "TCS.NS").index[-1] == pd.Timestamp("2024-06-21")
