"""Where daily bars come from: Yahoo Finance, a folder of yfinance CSV files, or a seeded
synthetic market. One interface: `make_source(market).fetch(symbol, start, end)` returns the
bars dated `start`..`end` (both included) in the store's schema, not yet cleaned: junk rows
and odd dates are the caller's to judge (`tasks.market.data.clean_bars`).

    source = make_source(cfg.market)
    raw = source.fetch("TCS.NS", date(2019, 11, 1), date(2019, 11, 29))

Fetch faults are typed: `TransientFetchError` (retry) or `PermanentFetchError` (give up).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from tasks.market.calendar import IST, sessions_between
from tasks.config import MarketConfig
from tasks.market.store import COLUMNS, PRICES, MarketDataError, session_index


class FetchError(MarketDataError):
    """A source could not deliver the bars of one ticker."""

    def __init__(self, symbol: str, reason: str):
        self.symbol, self.reason = symbol, reason
        super().__init__(f"{symbol}: {reason}")

    def __reduce__(self):  # keep (symbol, reason) through pickling (Prefect states)
        return type(self), (self.symbol, self.reason)


class TransientFetchError(FetchError):
    """A fault worth retrying: network error, HTTP 429, an empty answer for a due session."""


class PermanentFetchError(FetchError):
    """A fault retrying cannot fix: unknown ticker, a source that says no, a mismatched store."""


class BarSource(Protocol):
    name: str
    """`yahoo`, `csv` or `synthetic`: recorded in the store's metadata."""
    synthetic: bool

    def fetch(self, symbol: str, start: date, end: date) -> pd.DataFrame:
        """Bars dated `start`..`end` (inclusive), columns open..volume, index `session`."""
        ...


def _select_ticker(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """The columns of `symbol` from yf.download's MultiIndex (either `group_by`)."""
    for level in range(frame.columns.nlevels):
        if symbol in frame.columns.get_level_values(level):
            return frame.xs(symbol, axis=1, level=level)
    raise PermanentFetchError(symbol, f"multi-ticker frame has no columns for it: {list(frame.columns)}")


def _to_dates(index: pd.Index) -> pd.DatetimeIndex:
    """Exchange-local dates of a yfinance index (tz-aware) or of date strings; NaT if unreadable."""
    if isinstance(index, pd.DatetimeIndex):
        stamps = index
    else:
        stamps = pd.to_datetime(pd.Index(index).astype(str).str.strip(), errors="coerce", format="ISO8601")
    if stamps.tz is not None:
        stamps = stamps.tz_convert(IST).tz_localize(None)
    return session_index(stamps.normalize())


def normalise_yf_frame(frame: pd.DataFrame, symbol: str, adjusted: bool) -> pd.DataFrame:
    """One schema from either yfinance shape (MultiIndex from yf.download, flat from
    Ticker.history or a CSV export, with or without `Adj Close`): float64 open..volume on a
    `session` date index. `adjusted` scales OHLC by Adj Close / Close; a frame without
    `Adj Close` is taken as already in the wanted basis (indices: both are equal)."""
    if isinstance(frame.columns, pd.MultiIndex):
        frame = _select_ticker(frame, symbol)
    names = {str(c).strip().lower().replace(" ", "_"): c for c in frame.columns}
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise PermanentFetchError(symbol, f"source frame lacks columns {missing}: {list(frame.columns)}")
    out = pd.DataFrame({c: pd.to_numeric(frame[names[c]], errors="coerce") for c in COLUMNS}).astype("float64")
    if adjusted and "adj_close" in names:
        factor = pd.to_numeric(frame[names["adj_close"]], errors="coerce").astype("float64") / out["close"]
        out[PRICES] = out[PRICES].mul(factor, axis=0)
    out.index = _to_dates(frame.index)
    return out


def yahoo_session() -> Any | None:
    """The HTTP session yfinance uses; None lets yfinance build its own (curl_cffi with
    browser impersonation). Tests replace this with a fake that answers like Yahoo."""
    return None


CURL_NOISE = re.compile(r" after \d+ (?:ms|milliseconds)| See https://curl\.se/\S+ first for more details\.")


def network_message(err: Exception) -> str:
    """A connection error's message without curl's elapsed time and link, so that one fault (no
    network, DNS, a refused connection) reads the same for every ticker and a failed fetch can
    name it once."""
    return CURL_NOISE.sub("", str(err)).removeprefix("Failed to perform, ").rstrip(". ")


def classify_yahoo_error(symbol: str, err: Exception) -> FetchError:
    """A yfinance or HTTP failure as a transient (retry) or permanent (give up) fault."""
    from yfinance import exceptions as yfe

    status = getattr(getattr(err, "response", None), "status_code", None) or None  # curl: 0 when nothing came back
    if isinstance(err, FetchError):
        return err
    if isinstance(err, yfe.YFRateLimitError) or status == 429:
        return TransientFetchError(symbol, "HTTP 429 Too Many Requests (Yahoo rate limit)")
    if isinstance(err, yfe.YFTzMissingError):
        return PermanentFetchError(symbol, f"unknown ticker: Yahoo knows no such symbol ({err})")
    if isinstance(err, yfe.YFPricesMissingError):
        if err.yahoo_reason:  # Yahoo said why, e.g. "No data found, symbol may be delisted"
            return PermanentFetchError(symbol, f"Yahoo says: {err.yahoo_reason}")
        return TransientFetchError(symbol, f"empty answer from Yahoo ({err})")
    if isinstance(err, yfe.YFInvalidPeriodError):
        return PermanentFetchError(symbol, str(err))
    if status in (400, 403, 404):
        return PermanentFetchError(symbol, f"HTTP {status} from Yahoo ({err})")
    if status is not None:
        return TransientFetchError(symbol, f"HTTP {status} from Yahoo ({err})")
    network = type(err).__module__.startswith(("curl_cffi", "requests"))  # their connection/timeout errors
    if network or isinstance(err, OSError):
        return TransientFetchError(symbol, f"Yahoo Finance unreachable ({type(err).__name__}: {network_message(err)})")
    if type(err).__name__ == "OperationalError" and "locked" in str(err):
        # yfinance's sqlite caches (timezones, cookies; sqlite3's or peewee's error), opened by
        # several fetch threads at once on a first run: another attempt finds them free
        return TransientFetchError(symbol, f"yfinance's cache was busy ({type(err).__name__}: {err})")
    if isinstance(err, (json.JSONDecodeError, yfe.YFDataException)):
        return TransientFetchError(symbol, f"{type(err).__name__}: {err}")
    return PermanentFetchError(symbol, f"unexpected {type(err).__name__} from yfinance: {err}")


_yf_cache_dir: list[Path] = []
_yf_cache_lock = threading.Lock()


def _use_yfinance_cache(folder: Path) -> None:
    """Keep yfinance's cookie/timezone caches under the runtime home (set once per process:
    yfinance reads the location when it first opens the cache)."""
    import yfinance as yf

    with _yf_cache_lock:
        if not _yf_cache_dir:
            folder.mkdir(parents=True, exist_ok=True)
            yf.set_tz_cache_location(str(folder))
            _yf_cache_dir.append(folder)


class YahooSource:
    """Live Yahoo Finance daily bars through yfinance."""

    name, synthetic = "yahoo", False

    def __init__(self, adjusted: bool, session: Any | None = None, cache_dir: Path | None = None):
        self.adjusted, self.session, self.cache_dir = adjusted, session, cache_dir

    def fetch(self, symbol: str, start: date, end: date) -> pd.DataFrame:
        """Bars `start`..`end` from the chart API (yfinance's `end` is exclusive, hence +1 day)."""
        import yfinance as yf
        from yfinance.data import YfData

        # yfinance logs most failures and returns an empty frame (ranaroussi/yfinance#2411,
        # #2740); with hide_exceptions off it raises, so a failure can be told from "no bars".
        yf.config.debug.hide_exceptions = False
        # yfinance memoises answers for past ranges in-process; a retry must ask again.
        YfData.cache_get.cache_clear()
        if self.cache_dir is not None:
            _use_yfinance_cache(self.cache_dir)
        try:
            ticker = yf.Ticker(symbol, session=self.session or yahoo_session())
            raw = ticker.history(start=start.isoformat(), end=(end + timedelta(days=1)).isoformat(),
                                 interval="1d", auto_adjust=False, actions=False, repair=False)
        except Exception as err:
            raise classify_yahoo_error(symbol, err) from err
        return normalise_yf_frame(raw, symbol, self.adjusted)


class CsvSource:
    """A folder of yfinance-format `<TICKER>.csv` files, replayed as if live."""

    name, synthetic = "csv", False

    def __init__(self, folder: Path, adjusted: bool):
        self.folder, self.adjusted = Path(folder), adjusted

    def fetch(self, symbol: str, start: date, end: date) -> pd.DataFrame:
        """The file's bars dated `start`..`end`; rows with unreadable dates come too (as junk)."""
        path = self.folder / f"{symbol}.csv"
        if not path.is_file():
            raise PermanentFetchError(symbol, f"no file {path} in the csv source folder")
        raw = read_csv_file(path, symbol)
        bars = normalise_yf_frame(raw.set_index(raw.columns[0]), symbol, self.adjusted)
        stamps = bars.index
        visible = stamps.isna() | ((stamps >= pd.Timestamp(start)) & (stamps <= pd.Timestamp(end)))
        return bars[visible]


def read_csv_file(path: Path, symbol: str) -> pd.DataFrame:
    """A yfinance-format CSV as strings; PermanentFetchError names the file (and the line)
    when it is empty, not UTF-8 or not CSV, instead of pandas' bare error."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise PermanentFetchError(symbol, f"{path}: empty file (no header line)") from None
    except UnicodeDecodeError:
        data = path.read_bytes()
        try:
            data.decode("utf-8")
            where = ""
        except UnicodeDecodeError as err:  # pandas decodes in chunks: find the offset in the file
            line = data[:err.start].count(b"\n") + 1
            where = f", line {line} (byte {err.start}: {err.reason})"
        raise PermanentFetchError(symbol, f"{path}{where}: not UTF-8 text") from None
    except (pd.errors.ParserError, ValueError) as err:
        raise PermanentFetchError(symbol, f"{path}: unreadable CSV ({err})") from None


# Typical level (points or rupees), daily volatility, typical daily volume (0: none reported).
SYNTHETIC_PROFILES: dict[str, tuple[float, float, float]] = {
    "^NSEI": (24_000, 0.009, 2.5e8), "^BSESN": (80_000, 0.009, 1.2e4),
    "^NSEBANK": (52_000, 0.011, 1.5e8), "NIFTY_MIDCAP_100.NS": (56_000, 0.011, 0.0),
    "^CNXSC": (18_000, 0.013, 0.0), "GOLDBEES.NS": (65, 0.008, 1.2e7),
    "0P0000XVH9.BO": (85, 0.007, 0.0), "TCS.NS": (4_000, 0.014, 2.5e6),
    "RELIANCE.NS": (1_300, 0.015, 1.0e7), "HDFCBANK.NS": (1_700, 0.013, 1.5e7),
    "INFY.NS": (1_800, 0.016, 7.0e6), "ICICIBANK.NS": (1_300, 0.014, 1.5e7),
}


def _hash_int(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def synthetic_profile(symbol: str) -> tuple[float, float, float]:
    """Level, daily volatility and volume of a ticker; unknown ones get a level from a hash."""
    if symbol in SYNTHETIC_PROFILES:
        return SYNTHETIC_PROFILES[symbol]
    u = _hash_int("level", symbol) / 2**64
    return round(10 ** (1.5 + 2.5 * u), 2), 0.018, (0.0 if symbol.startswith("^") else 1.0e6)


ORIGIN = date(1990, 1, 1)
"""Day 0 of every synthetic path; the path is computed forward from it, so it never changes."""
MEAN_REVERSION = 1 / 250
"""Pull of the log price back to the profile level per calendar day: prices wander about
+-10% around it (a random walk would drift to unrealistic levels over the years)."""


def _noise(seed: int, symbol: str, last: date) -> np.ndarray:
    """Standard normals, 5 per calendar day ORIGIN..`last`, fixed by (seed, ticker, day):
    drawn per calendar year, so a later `last` extends the same path instead of redrawing it."""
    blocks = [np.random.default_rng(_hash_int(seed, symbol, y)).standard_normal((366, 5))
              [:(date(y + 1, 1, 1) - date(y, 1, 1)).days] for y in range(ORIGIN.year, last.year + 1)]
    return np.concatenate(blocks)[: (last - ORIGIN).days + 1]


def _log_deviation(steps: np.ndarray) -> np.ndarray:
    """Mean-reverting log-price deviation from the level, one value per calendar day."""
    out, x = np.empty_like(steps), 0.0
    for i, step in enumerate(steps):
        x = x * (1 - MEAN_REVERSION) + step
        out[i] = x
    return out


class SyntheticSource:
    """Seeded, realistic bars (a mean-reverting random walk) on the session calendar."""

    name, synthetic = "synthetic", True

    def __init__(self, market: MarketConfig):
        self.market, self.seed = market, market.synthetic_seed

    def fetch(self, symbol: str, start: date, end: date) -> pd.DataFrame:
        """Bars for every session `start`..`end`; the same (seed, ticker, session) gives the same bar."""
        level, vol, volume = synthetic_profile(symbol)
        if start <= ORIGIN:
            raise PermanentFetchError(symbol, f"the synthetic market starts after {ORIGIN}")
        z = _noise(self.seed, symbol, end)
        log_close = math.log(level) + _log_deviation(vol * math.sqrt(5 / 7) * z[:, 0])
        days = sessions_between(start, end, self.market)
        at = np.array([(d - ORIGIN).days for d in days], dtype=int)
        close = np.exp(log_close[at])
        open_ = np.exp(log_close[at - 1] + 0.3 * vol * z[at, 1])
        high = np.maximum(open_, close) * np.exp(0.5 * vol * np.abs(z[at, 2]))
        low = np.minimum(open_, close) * np.exp(-0.5 * vol * np.abs(z[at, 3]))
        if symbol.startswith("0P"):  # a mutual fund: one NAV a day, no traded volume
            open_ = high = low = close
        bars = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close}).round(2)
        bars["high"] = bars[PRICES].max(axis=1)
        bars["low"] = bars[PRICES].min(axis=1)
        bars["volume"] = np.round(volume * np.exp(0.35 * z[at, 4]))
        bars.index = session_index(days)
        return bars.astype("float64")


YF_CACHE_DIR = ".yfinance"
"""yfinance's caches, inside the store folder (a dot folder, so never read as bars)."""


def make_source(market: MarketConfig, home: Path | None = None) -> BarSource:
    """The source the config names (`home`: where yfinance may keep its caches)."""
    if market.source == "yahoo":
        cache = Path(home) / "market" / YF_CACHE_DIR if home is not None else None
        return YahooSource(market.adjusted_prices, cache_dir=cache)
    if market.source == "csv":
        if market.csv_dir is None:
            raise ValueError("market.source is 'csv' but market.csv_dir is not set")
        return CsvSource(market.csv_dir, market.adjusted_prices)
    return SyntheticSource(market)
