"""The Yahoo source drives the real yfinance parsing against a fake Yahoo (no network).

`FakeYahoo` is a curl_cffi Session (yfinance 1.x accepts only curl_cffi or requests
sessions) that answers the URLs yfinance calls: the cookie (fc.yahoo.com), the crumb
(/v1/test/getcrumb), the consent page, and the chart API /v8/finance/chart/<ticker>, with
chart-API JSON built from bars the test makes. A per-ticker script can answer history
requests with HTTP 429 or an empty result first.
"""
from __future__ import annotations

import json
from datetime import date, datetime, time
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest
from curl_cffi import requests as curl_requests
from curl_cffi.requests.models import Response

from tasks.market import sources as market_sources
from tasks.market.calendar import IST, resolve_session, sessions_between
from tasks.config import MarketConfig, TickerSpec
from tasks.market.data import stage_new_bars
from tasks.market.sources import YahooSource, normalise_yf_frame
from tasks.market.data import PermanentFetchError, TransientFetchError
from tasks.market.store import COLUMNS, read_bars_file

CHART = "/v8/finance/chart/"
NOT_FOUND = {"chart": {"result": None, "error": {"code": "Not Found",
                                                 "description": "No data found, symbol may be delisted"}}}


def yahoo_bars(end: date, n: int = 200, level: float = 2000.0) -> pd.DataFrame:
    """`n` sessions of plausible bars up to `end`, in yfinance's column names."""
    days = sessions_between(date(end.year - 2, 1, 1), end, MarketConfig())[-n:]
    close = level * np.exp(np.cumsum(np.sin(np.arange(n)) * 0.01))
    frame = pd.DataFrame({"Open": close * 0.995, "High": close * 1.01, "Low": close * 0.98, "Close": close,
                          "Adj Close": close * 0.97, "Volume": np.full(n, 1_000_000.0)},
                         index=pd.DatetimeIndex(days, name="Date"))
    return frame.round(2)


def _response(url: str, status: int, payload: object) -> Response:
    r = Response()
    r.url, r.status_code, r.ok = url, status, status < 400
    r.reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests"}.get(status, "")
    r.content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return r


def chart_payload(symbol: str, bars: pd.DataFrame) -> dict:
    """The chart API's JSON for daily bars (timestamps at the 09:15 IST open)."""
    stamps = [int(datetime.combine(d.date(), time(9, 15), IST).timestamp()) for d in bars.index]
    col = lambda c: [None if pd.isna(v) else float(v) for v in bars[c]]  # noqa: E731
    meta = {"currency": "INR", "symbol": symbol, "exchangeName": "NSI", "instrumentType": "EQUITY",
            "gmtoffset": 19800, "timezone": "IST", "exchangeTimezoneName": "Asia/Kolkata", "priceHint": 2,
            "dataGranularity": "1d", "validRanges": ["1d", "5d", "1mo", "3mo", "1y", "max"]}
    quote = {"open": col("Open"), "high": col("High"), "low": col("Low"), "close": col("Close"),
             "volume": [int(v) for v in bars["Volume"]]} if len(bars) else {}
    indicators = {"quote": [quote], "adjclose": [{"adjclose": col("Adj Close")}]}
    result = {"meta": meta, "indicators": indicators} | ({"timestamp": stamps} if len(bars) else {})
    return {"chart": {"result": [result], "error": None}}


class FakeYahoo(curl_requests.Session):
    """Answers yfinance's requests like Yahoo would, from in-memory bars; counts chart calls."""

    def __init__(self, bars: dict[str, pd.DataFrame], script: dict[str, list] | None = None):
        super().__init__()
        self.bars, self.script, self.history_calls = bars, script or {}, []

    def request(self, method, url, params=None, **kwargs):  # noqa: ANN001 (curl_cffi's signature)
        parts = urlsplit(url)
        if parts.path.startswith(CHART):
            return self._chart(url, unquote(parts.path[len(CHART):]), dict(params or {}))
        if parts.path.endswith("/getcrumb"):
            return _response(url, 200, b"fake-crumb")
        return _response(url, 404, b"<html>nothing here</html>")  # cookie, consent, quoteSummary

    def _chart(self, url: str, symbol: str, params: dict) -> Response:
        if symbol not in self.bars:
            return _response(url, 404, NOT_FOUND)
        bars = self.bars[symbol]
        if "period1" not in params:  # yfinance asking for the ticker's time zone
            return _response(url, 200, chart_payload(symbol, bars.iloc[-1:]))
        self.history_calls.append(symbol)
        plan = self.script.get(symbol) or []
        step = plan.pop(0) if plan else "ok"
        if step == 429:
            return _response(url, 429, b"Too Many Requests")
        lo, hi = (pd.Timestamp(params[k], unit="s", tz="UTC").tz_convert(IST).tz_localize(None)
                  for k in ("period1", "period2"))
        shown = bars[(bars.index >= lo.normalize()) & (bars.index < hi)] if step == "ok" else bars.iloc[:0]
        return _response(url, 200, chart_payload(symbol, shown))


@pytest.fixture
def fake_yahoo(monkeypatch, tmp_path):
    """A FakeYahoo serving TCS.NS and ^NSEI up to 2019-11-29, installed as yfinance's session."""
    import yfinance as yf
    from yfinance.data import YfData

    fake = FakeYahoo({"TCS.NS": yahoo_bars(date(2019, 11, 29)), "^NSEI": yahoo_bars(date(2019, 11, 29), level=12000)})
    monkeypatch.setattr(market_sources, "yahoo_session", lambda: fake)
    monkeypatch.setattr(market_sources, "_yf_cache_dir", [tmp_path])
    yf.set_tz_cache_location(str(tmp_path))
    YfData.cache_get.cache_clear()
    return fake


def yahoo_market(**kw) -> MarketConfig:
    tickers = [TickerSpec(symbol="TCS.NS", name="TCS", kind="stock"),
               TickerSpec(symbol="^NSEI", name="NIFTY 50", kind="index")]
    return MarketConfig(source="yahoo", tickers=tickers, backfill_sessions=150, **kw)


def test_yahoo_source_parses_the_chart_api_through_real_yfinance(fake_yahoo):
    bars = YahooSource(adjusted=False).fetch("TCS.NS", date(2019, 11, 20), date(2019, 11, 29))
    served = fake_yahoo.bars["TCS.NS"].loc["2019-11-20":"2019-11-29"]
    assert list(bars.columns) == COLUMNS and bars.index.name == "session" and bars.index.tz is None
    assert list(bars.index) == list(served.index)
    np.testing.assert_allclose(bars["close"], served["Close"])


def test_both_yfinance_column_shapes_normalise_to_one_schema(fake_yahoo):
    import yfinance as yf

    flat = yf.Ticker("TCS.NS", session=fake_yahoo).history(start="2019-11-20", end="2019-11-30", auto_adjust=False)
    multi = yf.download(["TCS.NS", "^NSEI"], start="2019-11-20", end="2019-11-30", session=fake_yahoo,
                        auto_adjust=False, progress=False, threads=False)
    assert isinstance(multi.columns, pd.MultiIndex) and not isinstance(flat.columns, pd.MultiIndex)
    by_ticker = yf.download("TCS.NS", start="2019-11-20", end="2019-11-30", session=fake_yahoo,
                            auto_adjust=False, progress=False, threads=False, group_by="ticker")
    no_adj = flat.drop(columns=["Adj Close"])
    shapes = [normalise_yf_frame(f, "TCS.NS", adjusted=False) for f in (flat, multi, by_ticker, no_adj)]
    for other in shapes[1:]:
        pd.testing.assert_frame_equal(shapes[0], other)


def test_adjusted_prices_scale_ohlc_by_adj_close(fake_yahoo):
    raw = YahooSource(adjusted=False).fetch("TCS.NS", date(2019, 11, 25), date(2019, 11, 29))
    adj = YahooSource(adjusted=True).fetch("TCS.NS", date(2019, 11, 25), date(2019, 11, 29))
    np.testing.assert_allclose(adj["close"] / raw["close"], 0.97, rtol=1e-3)
    np.testing.assert_allclose(adj["volume"], raw["volume"])


def test_http_429_is_a_transient_fault(fake_yahoo):
    fake_yahoo.script["TCS.NS"] = [429] * 2
    with pytest.raises(TransientFetchError, match="429"):
        YahooSource(adjusted=False).fetch("TCS.NS", date(2019, 11, 20), date(2019, 11, 29))


class OfflineYahoo(curl_requests.Session):
    """Fails every request the way curl does on a machine with no network."""

    def request(self, method, url, params=None, **kwargs):  # noqa: ANN001 (curl_cffi's signature)
        nothing = Response()
        nothing.status_code = 0  # curl's response when no byte came back
        raise curl_requests.exceptions.ConnectionError(
            f"Failed to perform, curl: (6) Could not resolve host: {urlsplit(url).hostname} after {len(url)} ms. "
            "See https://curl.se/libcurl/c/libcurl-errors.html first for more details.", 6, nothing)


def test_no_network_is_a_transient_fault_that_reads_the_same_for_every_ticker(monkeypatch, tmp_path):
    monkeypatch.setattr(market_sources, "yahoo_session", lambda: OfflineYahoo())
    monkeypatch.setattr(market_sources, "_yf_cache_dir", [tmp_path])
    reasons = set()
    for symbol in ("TCS.NS", "^NSEI"):
        with pytest.raises(TransientFetchError, match="Yahoo Finance unreachable") as caught:
            YahooSource(adjusted=False).fetch(symbol, date(2019, 11, 20), date(2019, 11, 29))
        reasons.add(caught.value.reason)
    (reason,) = reasons  # without curl's elapsed time (it differs per request): a failed run names the fault once
    assert reason.startswith("Yahoo Finance unreachable (ConnectionError: curl: (6) Could not resolve host: ")
    assert " ms" not in reason and "curl.se" not in reason


def test_a_locked_yfinance_cache_is_a_transient_fault(monkeypatch, tmp_path):
    """yfinance's sqlite caches, opened by several fetch threads at once on a fresh home, can raise
    'database is locked' (seen in a fresh-clone CI run: the ticker failed the whole day as a
    permanent fault); another attempt finds them free."""
    import sqlite3

    import peewee

    class LockedCache(curl_requests.Session):
        def request(self, method, url, params=None, **kwargs):  # noqa: ANN001 (curl_cffi's signature)
            raise error

    monkeypatch.setattr(market_sources, "yahoo_session", lambda: LockedCache())
    monkeypatch.setattr(market_sources, "_yf_cache_dir", [tmp_path])
    for error in (sqlite3.OperationalError("database is locked"), peewee.OperationalError("database is locked")):
        with pytest.raises(TransientFetchError, match="yfinance's cache was busy .*database is locked"):
            YahooSource(adjusted=False).fetch("^NSEI", date(2019, 11, 20), date(2019, 11, 29))
    with pytest.raises(PermanentFetchError, match="unexpected OperationalError"):  # not every OperationalError
        error = sqlite3.OperationalError("no such table: _kv")
        YahooSource(adjusted=False).fetch("^NSEI", date(2019, 11, 20), date(2019, 11, 29))


def test_unknown_ticker_is_a_permanent_fault(fake_yahoo):
    with pytest.raises(PermanentFetchError, match="NOPE.NS"):
        YahooSource(adjusted=False).fetch("NOPE.NS", date(2019, 11, 20), date(2019, 11, 29))


def test_empty_chart_result_is_a_transient_fault(fake_yahoo):
    fake_yahoo.script["TCS.NS"] = ["empty"]
    with pytest.raises(TransientFetchError, match="empty"):
        YahooSource(adjusted=False).fetch("TCS.NS", date(2019, 11, 20), date(2019, 11, 29))


def test_source_missing_the_expected_session_is_transient_and_stages_nothing(fake_yahoo, tmp_path):
    fake_yahoo.bars["TCS.NS"] = fake_yahoo.bars["TCS.NS"].loc[:"2019-11-28"]  # Yahoo lagging a day
    market = yahoo_market()
    with pytest.raises(TransientFetchError, match="2019-11-29"):
        stage_new_bars(tmp_path, market, "TCS.NS", resolve_session(date(2019, 11, 29), market))
    assert not list((tmp_path / "market").glob("**/TCS.NS*.csv"))


def test_staged_yahoo_fetch_is_validated_and_labelled(fake_yahoo, tmp_path):
    market = yahoo_market()
    path = stage_new_bars(tmp_path, market, "TCS.NS", resolve_session(date(2019, 11, 29), market))
    bars, meta = read_bars_file(path, "TCS.NS")
    assert len(bars) == 150 and bars.index[-1] == pd.Timestamp("2019-11-29")
    assert meta["source"] == "yahoo" and meta["synthetic"] is False and meta["adjusted"] is False
