"""Where daily bars come from: Yahoo Finance, a folder of yfinance CSV files, or a seeded
synthetic market. One interface: `make_source(market).fetch(symbol, start, end)` returns the
bars dated `start`..`end` (both included) in the store's schema, not yet cleaned: junk rows
and odd dates are the caller's to judge (`tasks.market.data.clean_bars`). The synthetic market
is in tasks/market/synthetic.py.

    source = make_source(cfg.market)
    raw = source.fetch("TCS.NS", date(2019, 11, 1), date(2019, 11, 29))

Fetch faults are typed: `TransientFetchError` (retry) or `PermanentFetchError` (give up).
"""
from __future__ import annotations

import json
import re
import threading
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from tasks.market.calendar import IST
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
    from tasks.market.synthetic import SyntheticSource  # it imports this module's errors

    return SyntheticSource(market)
