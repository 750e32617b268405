"""What the market store holds, read-only (`niftytune store`): one row per stored ticker.

    print(format_store(home, names={"^NSEI": "NIFTY 50"}))
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from common.table import format_table
from tasks.market.store import StoreError, load_bars, market_dir, store_metadata, stored_symbols

HEADER = ["ticker", "name", "source", "first session", "last session", "sessions", "close", "day change", "updated"]


def _row(home: Path, symbol: str, names: Mapping[str, str]) -> tuple[list[str], bool]:
    """A ticker's row and whether its bars are synthetic."""
    meta = store_metadata(home, symbol)
    close = load_bars(home, symbol)["close"]
    change = f"{(close.iloc[-1] / close.iloc[-2] - 1) * 100:+.2f}%" if len(close) > 1 else "-"
    updated = meta["updated"].strftime("%Y-%m-%d %H:%M UTC") if meta["updated"] else "-"
    return [symbol, names.get(symbol, "-"), str(meta.get("source", "-")), str(meta["first_session"] or "-"),
            str(meta["last_session"] or "-"), str(len(close)), f"{close.iloc[-1]:,.2f}", change,
            updated], meta["synthetic"]


def format_store(home: Path, names: Mapping[str, str] | None = None) -> str:
    """Each stored ticker's sessions, latest close and day change (from its validated bars file);
    a StoreError when the store is empty."""
    order = list(names or {})  # the universe's order (indices first), then any other stored ticker
    symbols = sorted(stored_symbols(home), key=lambda s: (order.index(s) if s in order else len(order), s))
    if not symbols:
        raise StoreError(f"no market data in {market_dir(home)}: run `niftytune fetch` first")
    rows = [_row(home, symbol, names or {}) for symbol in symbols]
    lines = ["SYNTHETIC market data: seeded random walks, not real prices."] if any(s for _, s in rows) else []
    lines.append(f"Market store {market_dir(home)}: {len(rows)} tickers")
    lines.append(format_table([row for row, _ in rows], HEADER, align="<<<<<>>><"))
    return "\n".join(lines)
