"""The on-disk market store: validated daily bars, one file per ticker, every write atomic.

Format, under `NIFTYTUNE_HOME/market/`:

    <TICKER>.csv            the bars of one ticker (`^NSEI.csv`, `TCS.NS.csv`): line 1 is
                            `# niftytune-bars {json metadata}`, then a CSV with the columns
                            `session,open,high,low,close,volume` (ISO dates, oldest first)
    .lock                   held by every writer of the store (filelock)
    .staging/<T>.<id>.csv   a validated fetch waiting for the commit; same format; never data.
                            Every niftytune writer holds the home lock (tasks/runlock.py) and
                            removes all of them first (tasks/housekeeping.py): they are dead
    .<name>.<id>.tmp        a write in progress (or killed mid-way); never read, and removed
                            by the next writer that holds the lock
    .yfinance/              yfinance's own cookie and time-zone caches (source yahoo)

The metadata line holds `format` (FORMAT_VERSION), `symbol`, `source` (yahoo, csv or
synthetic), `synthetic` (bool), `adjusted` (bool: split/dividend-adjusted prices),
`first_session`, `last_session`, `rows`, `updated` (UTC, ISO) and `sha256` of the CSV part.
Metadata and bars share one file so a single `os.replace` swaps both: there is no moment
where they disagree. Every read checks the header, the checksum, the schema and the bar
rules of `check_bars`; a file that fails raises, it is never half-used.

Writes: same-folder temp file, fsync, `os.replace`, fsync of the folder. A loadable file is
never overwritten in place. A commit of several tickers replaces them one by one: a crash
mid-commit leaves each file either as it was or as it should be, both valid, and the next
run's incremental fetch converges.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock

from common.files import write_atomic

MARKET_DIR = "market"
STAGING_DIR = ".staging"
LOCK_FILE = ".lock"
BARS_SUFFIX = ".csv"
TMP_SUFFIX = ".tmp"
HEADER_PREFIX = "# niftytune-bars "
FORMAT_VERSION = 1
INDEX_NAME = "session"
PRICES = ["open", "high", "low", "close"]
COLUMNS = [*PRICES, "volume"]
LOCK_TIMEOUT_SECONDS = 120.0
STALE_STAGING_SECONDS = 24 * 3600
_SYMBOL = re.compile(r"^[A-Za-z0-9^&=_-][A-Za-z0-9^&=._-]*$")


class MarketDataError(Exception):
    """Base of every market-data failure."""


class BarValidationError(MarketDataError):
    """A bar breaks a rule; the message names the ticker, the date and the rule."""

    def __init__(self, symbol: str, session: date | None, rule: str, detail: str = ""):
        self.symbol, self.session, self.rule, self.detail = symbol, session, rule, detail
        where = session.isoformat() if session else "(no date)"
        super().__init__(f"{symbol} {where}: {rule}" + (f" ({detail})" if detail else ""))

    def __reduce__(self):
        return type(self), (self.symbol, self.session, self.rule, self.detail)


class StoreError(MarketDataError):
    """A store file is missing or unreadable."""


class MissingBarsError(StoreError):
    """No store file for a ticker: it was never fetched into this home."""


class CorruptStoreError(StoreError):
    """A store file exists but fails its header, checksum or schema check."""


def market_dir(home: Path) -> Path:
    """The store folder, `home/market`."""
    return Path(home) / MARKET_DIR


def bars_path(home: Path, symbol: str) -> Path:
    """The store file of one ticker."""
    if not _SYMBOL.match(symbol):
        raise ValueError(f"ticker {symbol!r} cannot name a store file (letters, digits, ^&=._- only)")
    return market_dir(home) / f"{symbol}{BARS_SUFFIX}"


def session_index(values: Any) -> pd.DatetimeIndex:
    """Dates as the store's index: tz-naive midnight timestamps (ns), named `session`."""
    index = pd.DatetimeIndex(pd.to_datetime(values)).astype("datetime64[ns]")
    return index.rename(INDEX_NAME)


def _first(mask: pd.Series, bars: pd.DataFrame) -> date | None:
    hits = bars.index[np.asarray(mask, dtype=bool)]
    return hits[0].date() if len(hits) else None


def check_bars(bars: pd.DataFrame, symbol: str) -> None:
    """Raise BarValidationError on the first bar (by date) that breaks a store rule."""
    if list(bars.columns) != COLUMNS:
        raise BarValidationError(symbol, None, f"columns must be exactly {COLUMNS}", str(list(bars.columns)))
    index = bars.index
    if not isinstance(index, pd.DatetimeIndex) or index.name != INDEX_NAME or index.tz is not None:
        raise BarValidationError(symbol, None, "index must be a tz-naive DatetimeIndex named 'session'")
    if index.hasnans:
        raise BarValidationError(symbol, None, "a bar has no date")
    if (index != index.normalize()).any():
        raise BarValidationError(symbol, _first(index != index.normalize(), bars), "date has a time of day")
    if index.has_duplicates:
        raise BarValidationError(symbol, _first(index.duplicated(), bars), "duplicate date")
    if not index.is_monotonic_increasing:
        raise BarValidationError(symbol, _first(index[1:] < index[:-1], bars.iloc[1:]), "dates out of order")
    prices, volume = bars[PRICES].astype("float64"), bars["volume"].astype("float64")
    rules = [
        ("price is missing (NaN)", prices.isna().any(axis=1)),
        ("price is not finite", np.isinf(prices).any(axis=1)),
        ("price is not positive", (prices <= 0).any(axis=1)),
        ("high < low", prices.high < prices.low),
        ("high < max(open, close)", prices.high < prices[["open", "close"]].max(axis=1)),
        ("low > min(open, close)", prices.low > prices[["open", "close"]].min(axis=1)),
        ("volume is missing (NaN)", volume.isna()),
        ("volume is not finite", np.isinf(volume)),
        ("volume is negative", volume < 0),
    ]
    for rule, mask in rules:
        if mask.any():
            day = _first(mask, bars)
            row = bars.loc[pd.Timestamp(day)].to_dict()
            raise BarValidationError(symbol, day, rule, ", ".join(f"{k}={v}" for k, v in row.items()))


def encode_bars(bars: pd.DataFrame, meta: dict[str, Any]) -> bytes:
    """The file bytes of validated bars: the metadata line, then the CSV."""
    body = bars.to_csv(index_label=INDEX_NAME, date_format="%Y-%m-%d", lineterminator="\n").encode()
    full = {**meta, "format": FORMAT_VERSION, "rows": len(bars),
            "first_session": bars.index[0].date().isoformat() if len(bars) else None,
            "last_session": bars.index[-1].date().isoformat() if len(bars) else None,
            "sha256": hashlib.sha256(body).hexdigest()}
    return (HEADER_PREFIX + json.dumps(full, sort_keys=True, default=str) + "\n").encode() + body


def decode_bars(raw: bytes, symbol: str, path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Bars and metadata from file bytes; CorruptStoreError or BarValidationError if bad."""
    head, _, body = raw.partition(b"\n")
    if not head.startswith(HEADER_PREFIX.encode()):
        raise CorruptStoreError(f"{path}: no '{HEADER_PREFIX.strip()}' header line")
    try:
        meta = json.loads(head[len(HEADER_PREFIX):])
    except json.JSONDecodeError as err:
        raise CorruptStoreError(f"{path}: unreadable metadata line ({err})") from err
    if meta.get("format") != FORMAT_VERSION:
        raise CorruptStoreError(f"{path}: format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    if meta.get("symbol") != symbol:
        raise CorruptStoreError(f"{path}: holds {meta.get('symbol')!r}, expected {symbol!r}")
    if hashlib.sha256(body).hexdigest() != meta.get("sha256"):
        raise CorruptStoreError(f"{path}: checksum mismatch (file changed outside niftytune?)")
    try:
        frame = pd.read_csv(io.BytesIO(body), index_col=INDEX_NAME, dtype={c: "float64" for c in COLUMNS})
        frame.index = session_index(frame.index)
    except (ValueError, KeyError, pd.errors.ParserError) as err:
        raise CorruptStoreError(f"{path}: unreadable bars ({err})") from err
    check_bars(frame, symbol)
    if meta.get("rows") != len(frame):
        raise CorruptStoreError(f"{path}: metadata says {meta.get('rows')} rows, file has {len(frame)}")
    return frame, meta


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (common.files.write_atomic), as `.<name>.<id>.tmp` first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, temp_prefix=f".{path.name}.", temp_suffix=TMP_SUFFIX)


def write_bars(path: Path, bars: pd.DataFrame, meta: dict[str, Any], symbol: str) -> None:
    """Validate `bars` and write them with `meta` atomically to `path`."""
    check_bars(bars, symbol)
    atomic_write_bytes(path, encode_bars(bars, {**meta, "symbol": symbol}))


def read_bars_file(path: Path, symbol: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Bars and metadata of a store or staged file, validated."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError as err:
        raise MissingBarsError(f"{symbol}: no bars file at {path}") from err
    return decode_bars(raw, symbol, Path(path))


def load_bars(home: Path, symbol: str) -> pd.DataFrame:
    """The stored, validated bars of one ticker (index `session`, columns open..volume)."""
    path = bars_path(home, symbol)
    if not path.exists():
        raise MissingBarsError(f"{symbol}: no stored bars at {path} (run `niftytune fetch` first)")
    return read_bars_file(path, symbol)[0]


def store_metadata(home: Path, symbol: str) -> dict[str, Any]:
    """Metadata of one stored ticker (dates as `date`, `updated` as `datetime`), validated."""
    path = bars_path(home, symbol)
    if not path.exists():
        raise MissingBarsError(f"{symbol}: no stored bars at {path} (run `niftytune fetch` first)")
    meta = dict(read_bars_file(path, symbol)[1])
    for key in ("first_session", "last_session"):
        meta[key] = date.fromisoformat(meta[key]) if meta.get(key) else None
    meta["updated"] = datetime.fromisoformat(meta["updated"]) if meta.get("updated") else None
    meta["synthetic"] = bool(meta.get("synthetic", False))
    return meta


def stored_symbols(home: Path) -> list[str]:
    """Tickers with a store file (temp files and staged fetches are not store files)."""
    return [name[: -len(BARS_SUFFIX)] for name in _store_file_names(market_dir(home))]


def store_lock(home: Path) -> FileLock:
    """The lock every writer of the store holds."""
    folder = market_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / LOCK_FILE), timeout=LOCK_TIMEOUT_SECONDS)


@contextmanager
def store_snapshot(home: Path) -> Iterator[None]:
    """Put every store file back as it was if the block raises (e.g. training failed after
    the fetch committed). Best effort: a killed process restores nothing."""
    folder = market_dir(home)
    before = {name: (folder / name).read_bytes() for name in _store_file_names(folder)}
    try:
        yield
    except BaseException:
        with store_lock(home):
            for name in set(_store_file_names(folder)) - set(before):
                (folder / name).unlink()
            for name, data in before.items():
                if not (folder / name).exists() or (folder / name).read_bytes() != data:
                    atomic_write_bytes(folder / name, data)
        raise


def _store_file_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    names = (p.name for p in folder.iterdir() if p.is_file())
    return sorted(n for n in names if n.endswith(BARS_SUFFIX) and not n.startswith("."))


def staging_path(home: Path, symbol: str) -> Path:
    """A fresh path for a staged fetch of `symbol`."""
    bars_path(home, symbol)  # checks the symbol
    return market_dir(home) / STAGING_DIR / f"{symbol}.{os.urandom(6).hex()}{BARS_SUFFIX}"


def remove_leftovers(home: Path) -> int:
    """Remove temp files of killed store writes and day-old staged fetches; hold the lock.
    (Store writes happen only under the lock, so any temp file in the store folder is dead;
    staged files are written without it, so only old ones are.)"""
    folder, staging = market_dir(home), market_dir(home) / STAGING_DIR
    stale_before = time.time() - STALE_STAGING_SECONDS
    leftovers = list(folder.glob(f".*{TMP_SUFFIX}"))
    leftovers += [p for p in staging.glob("*") if p.is_file() and p.stat().st_mtime < stale_before]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def utc_now_iso() -> str:
    """Now, UTC, ISO 8601 to the second (the `updated` field)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
