"""The seeded synthetic market: realistic daily bars (a mean-reverting random walk) on the NSE
session calendar, for the offline demo and the tests. The same (seed, ticker, session) always
gives the same bar, and a later end date extends a path instead of redrawing it.

    bars = SyntheticSource(cfg.market).fetch("TCS.NS", date(2026, 11, 2), date(2026, 11, 20))
"""
from __future__ import annotations

import hashlib
import math
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import MarketConfig
from tasks.market.calendar import sessions_between
from tasks.market.sources import PermanentFetchError
from tasks.market.store import PRICES, session_index


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
