"""The market-data stage: fetch the bars since the store's last session, judge them, stage
them, and commit them all at once when the run's coverage is good enough.

    session = resolve_session(as_of, cfg.market)                 # tasks.market.calendar
    staged = fetch_new_bars(home, cfg, "TCS.NS", session)        # Path of a validated fetch
    fetch_task(cfg).submit(home, cfg, "TCS.NS", session)        # the same in a flow, retried as configured
    report = commit_bars(home, cfg, session, {"TCS.NS": staged}, failures={})

What happens to a bad bar (source-agnostic, before anything is stored):
- dropped with a warning, counted in the report: a junk row with no prices (the string
  `null`, blanks), a row with an unreadable date, a row on a date that is not a session
  (weekend, NSE holiday, e.g. the 2019-10-27 Sunday Muhurat row, unless the date is in
  `market.special_sessions`), and today's bar before the close plus margin (not final yet);
- the whole fetch rejected with BarValidationError (ticker, date, rule): a real row with a
  missing (NaN) or non-finite price, a price <= 0, High < Low, High < max(Open, Close),
  Low > min(Open, Close), negative volume, a duplicate date, dates out of order, a bar
  dated after `as_of`;
- flagged as an anomaly, kept: volume > `volume_jump_factor` x the 20-session median, a
  close more than 20% from the previous one, zero volume on a stock, a calendar session the
  source has no bar for.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import Config, MarketConfig
from tasks.market.calendar import (TradingSession, non_session_reason, previous_sessions, resolve_session,
                                   sessions_between, today_in_kolkata)
from tasks.market.sources import PermanentFetchError, TransientFetchError, make_source
from tasks.market.store import (COLUMNS, PRICES, BarValidationError, MarketDataError, bars_path, check_bars,
                                load_bars, read_bars_file, remove_leftovers, session_index, staging_path, store_lock,
                                store_metadata, store_snapshot, stored_symbols, utc_now_iso, write_bars)

__all__ = ["BarValidationError", "CoverageError", "FetchReport", "MarketDataError", "PermanentFetchError",
           "TickerReport", "TradingSession", "TransientFetchError", "commit_staged", "fetch_new_bars", "load_bars",
           "resolve_session", "store_metadata", "store_snapshot", "stored_symbols", "today_in_kolkata"]

log = logging.getLogger(__name__)
PRICE_JUMP = 0.20
"""A close this far (20%) from the previous one is flagged: NSE circuit limits stop most moves sooner."""


@dataclass(frozen=True)
class DroppedRow:
    """A row the source sent that was not stored, and why (None: the date was unreadable)."""

    session: date | None
    reason: str


@dataclass(frozen=True)
class TickerReport:
    """What one ticker's fetch did."""

    symbol: str
    source: str
    synthetic: bool
    last_session: date | None
    has_session: bool = False
    last_close: float | None = None
    rows_added: int = 0
    rows_revised: int = 0
    dropped: tuple[DroppedRow, ...] = ()
    anomalies: tuple[str, ...] = ()
    requested: tuple[date, date] | None = None
    error: str | None = None


@dataclass(frozen=True)
class FetchReport:
    """What a fetch run did, per ticker; `committed` is False when coverage failed."""

    session: TradingSession
    source: str
    synthetic: bool
    committed: bool
    coverage: float
    tickers: tuple[TickerReport, ...]

    def ticker(self, symbol: str) -> TickerReport:
        """The report of one ticker."""
        return next(t for t in self.tickers if t.symbol == symbol)


class CoverageError(MarketDataError):
    """Too few tickers (or a required one) have the expected session: nothing was stored."""

    def __init__(self, message: str, report: FetchReport):
        self.report = report
        super().__init__(message)

    def __reduce__(self):
        return type(self), (str(self), self.report)


def _drop(bars: pd.DataFrame, mask: Any, reason: str, dropped: list[DroppedRow]) -> pd.DataFrame:
    for stamp in bars.index[mask]:
        dropped.append(DroppedRow(None if pd.isna(stamp) else stamp.date(), reason))
    return bars[~mask]


def clean_bars(raw: pd.DataFrame, symbol: str, session: TradingSession,
               market: MarketConfig) -> tuple[pd.DataFrame, list[DroppedRow]]:
    """Drop junk and not-yet-final rows (with reasons), reject corrupt ones, validate the rest."""
    dropped: list[DroppedRow] = []
    bars = _drop(raw, raw.index.isna(), "unreadable date", dropped)
    bars = _drop(bars, bars[PRICES].isna().all(axis=1).to_numpy(),
                 "junk row: no prices (e.g. the string 'null')", dropped)
    future = bars.index > pd.Timestamp(session.as_of)
    if future.any():
        raise BarValidationError(symbol, bars.index[future][0].date(), "bar dated after as_of",
                                 f"as_of is {session.as_of}")
    pending = bars.index > pd.Timestamp(session.session)
    bars = _drop(bars, pending, f"not final: {session.as_of} before the close plus margin", dropped)
    reasons = [non_session_reason(stamp.date(), market) for stamp in bars.index]
    off = pd.notna(pd.Series(reasons, dtype=object)).to_numpy()
    for stamp, why in zip(bars.index[off], (r for r in reasons if r)):
        dropped.append(DroppedRow(stamp.date(), f"not a session ({why}); list the date in "
                                  "market.special_sessions to keep it"))
    bars = bars[~off]
    dropped.sort(key=lambda row: (row.session is None, row.session or date.min))
    for row in dropped:
        log.warning("%s %s: dropped row: %s", symbol, row.session, row.reason)
    check_bars(bars, symbol)
    return bars, dropped


@dataclass(frozen=True)
class FetchPlan:
    """The range to ask the source for; `start` None means nothing to ask."""

    start: date | None
    end: date
    stored_last: date | None
    why: str


def plan_fetch(home: Path, market: MarketConfig, symbol: str, session: TradingSession) -> FetchPlan:
    """Backfill on a first run, else from `overlap_sessions` before the last stored session."""
    if not bars_path(home, symbol).exists():
        start = previous_sessions(session.session, market.backfill_sessions, market)[0]
        return FetchPlan(start, session.session, None, f"first run: backfill {market.backfill_sessions} sessions")
    meta = store_metadata(home, symbol)
    if (meta["source"], meta["adjusted"]) != (market.source, market.adjusted_prices):
        raise PermanentFetchError(symbol, f"the store holds {meta['source']} bars (adjusted={meta['adjusted']}), "
                                  f"this run uses {market.source} (adjusted={market.adjusted_prices}); "
                                  f"delete {bars_path(home, symbol)} or use another NIFTYTUNE_HOME")
    last = meta["last_session"]
    if last > session.session or (last == session.session and market.overlap_sessions == 0):
        return FetchPlan(None, session.session, last, f"store already has bars up to {last}")
    if market.overlap_sessions == 0:
        return FetchPlan(last + timedelta(days=1), session.session, last, f"after {last}")
    start = previous_sessions(last, market.overlap_sessions, market)[0]
    return FetchPlan(start, session.session, last, f"after {last}, re-checking {market.overlap_sessions} sessions")


def stage_new_bars(home: Path, market: MarketConfig, symbol: str, session: TradingSession) -> Path:
    """Fetch, clean and validate the bars the store lacks; write them to a staged file."""
    plan = plan_fetch(home, market, symbol, session)
    source = make_source(market, home)
    bars, dropped = pd.DataFrame({c: [] for c in COLUMNS}, index=session_index([]), dtype="float64"), list[DroppedRow]()
    if plan.start is not None:
        raw = source.fetch(symbol, plan.start, plan.end)
        bars, dropped = clean_bars(raw, symbol, session, market)
        if bars.empty:
            raise TransientFetchError(symbol, f"empty answer from {source.name} for {plan.start}..{plan.end} "
                                      "although the calendar expects sessions")
        stored_has = plan.stored_last is not None and plan.stored_last >= session.session
        if pd.Timestamp(session.session) not in bars.index and not stored_has:
            raise TransientFetchError(symbol, f"no bar yet for the expected session {session.session} "
                                      f"(latest from {source.name}: {bars.index[-1].date()})")
    meta = {"source": source.name, "synthetic": source.synthetic, "adjusted": market.adjusted_prices,
            "as_of": session.as_of.isoformat(), "expected_session": session.session.isoformat(),
            "requested": [plan.start.isoformat(), plan.end.isoformat()] if plan.start else None,
            "plan": plan.why, "dropped": [[r.session and r.session.isoformat(), r.reason] for r in dropped],
            "updated": utc_now_iso()}
    path = staging_path(home, symbol)
    write_bars(path, bars, meta, symbol)
    return path


def find_anomalies(bars: pd.DataFrame, new: pd.DatetimeIndex, market: MarketConfig, kind: str,
                   expected: list[date]) -> list[str]:
    """Odd but possible things among the `new` bars, as readable lines (the bars are kept)."""
    found: list[str] = []
    median = bars["volume"].rolling(20, min_periods=5).median().shift(1)
    ratio = (bars["volume"] / median)[(median > 0) & bars.index.isin(new)]
    jumps = ratio[ratio > market.volume_jump_factor]
    if len(jumps):
        span = f"{jumps.index[0].date()}" + (f" .. {jumps.index[-1].date()}" if len(jumps) > 1 else "")
        found.append(f"volume > {market.volume_jump_factor:g}x the 20-session median on {len(jumps)} sessions "
                     f"({span}; peak {jumps.max():.0f}x on {jumps.idxmax().date()})")
    move = bars["close"].pct_change()
    for stamp in bars.index[(move.abs() > PRICE_JUMP) & bars.index.isin(new)]:
        found.append(f"{stamp.date()}: close moved {move[stamp]:+.1%} from the previous bar")
    zero = bars.index.isin(new) & (bars["volume"] == 0)
    if kind == "stock" and zero.any():
        found.append(f"volume 0 on {int(zero.sum())} sessions of a stock (first {bars.index[zero][0].date()})")
    absent = sorted(set(expected) - set(bars.index.date))
    if absent:
        found.append(f"no bar for {len(absent)} calendar sessions: {', '.join(map(str, absent[:5]))}"
                     + (" ..." if len(absent) > 5 else ""))
    return found


def _merge_one(home: Path, cfg: Config, symbol: str, staged: Path,
               session: date) -> tuple[pd.DataFrame | None, TickerReport]:
    """The store's bars merged with a staged fetch (None if unchanged), and the ticker's report."""
    new, meta = read_bars_file(staged, symbol)
    if meta["expected_session"] != session.isoformat():
        raise MarketDataError(f"{symbol}: {staged} was fetched for {meta['expected_session']}, not {session}")
    path = bars_path(home, symbol)
    stored = read_bars_file(path, symbol)[0] if path.exists() else new.iloc[0:0]
    common = new.index.intersection(stored.index)
    revised = int((new.loc[common] != stored.loc[common]).any(axis=1).sum())
    merged = pd.concat([stored.drop(common), new]).sort_index()
    added = new.index.difference(stored.index)
    first, last = (date.fromisoformat(d) for d in meta["requested"]) if meta["requested"] else (None, None)
    expected = sessions_between(first, last, cfg.market) if first and last else []
    kind = next((t.kind for t in cfg.market.tickers if t.symbol == symbol), "stock")
    report = TickerReport(
        symbol, meta["source"], bool(meta["synthetic"]), merged.index[-1].date() if len(merged) else None,
        rows_added=len(added), rows_revised=revised, requested=(first, last) if first and last else None,
        dropped=tuple(DroppedRow(d and date.fromisoformat(d), r) for d, r in meta["dropped"]),
        anomalies=tuple(find_anomalies(merged, added, cfg.market, kind, expected)),
        last_close=float(merged["close"].iloc[-1]) if len(merged) else None)
    changed = len(added) > 0 or revised > 0
    return (merged if changed else None), report


def _failed_report(home: Path, cfg: Config, symbol: str, error: str) -> TickerReport:
    path = bars_path(home, symbol)
    meta = store_metadata(home, symbol) if path.exists() else {}
    source = cfg.market.source
    return TickerReport(symbol, meta.get("source", source), bool(meta.get("synthetic", source == "synthetic")),
                        meta.get("last_session"), error=error)


def check_coverage(cfg: Config, reports: list[TickerReport], session: date) -> str | None:
    """Why the run must stop before training (a required ticker or too many lack `session`)."""
    required = cfg.market.required_tickers or [t.symbol for t in cfg.market.tickers]
    lacking = [r for r in reports if not r.has_session]
    share = 1 - len(lacking) / max(len(reports), 1)
    missing_required = [r for r in lacking if r.symbol in required]
    if not missing_required and share >= cfg.market.min_coverage:
        return None
    # One line: tickers that failed the same way (Yahoo unreachable: all of them) are named together.
    why: dict[str, list[str]] = {}
    for r in lacking:
        why.setdefault(r.error or f"latest bar {r.last_session}", []).append(r.symbol)
    named = f"; required missing: {', '.join(r.symbol for r in missing_required)}" if missing_required else ""
    return (f"market data for session {session} incomplete: {len(lacking)} of {len(reports)} tickers lack it "
            f"(coverage {share:.0%}, need {cfg.market.min_coverage:.0%}{named}); nothing was stored; "
            + "; ".join(f"{', '.join(symbols)}: {reason}" for reason, symbols in why.items()))


def commit_staged(home: Path, cfg: Config, session: TradingSession, staged: dict[str, Path],
                  failures: dict[str, str]) -> FetchReport:
    """Apply the coverage policy, then merge every staged fetch into the store atomically."""
    source, synthetic = cfg.market.source, cfg.market.source == "synthetic"
    with store_lock(home):
        try:
            removed = remove_leftovers(home)
            if removed:
                log.warning("removed %d leftover temp/staged files of earlier killed runs", removed)
            reports, writes = [], {}
            for symbol in (t.symbol for t in cfg.market.tickers):
                if symbol not in staged:
                    reports.append(_failed_report(home, cfg, symbol, failures.get(symbol, "not fetched")))
                    continue
                writes[symbol], ticker_report = _merge_one(home, cfg, symbol, staged[symbol], session.session)
                reports.append(ticker_report)
            reports = [replace(r, has_session=r.last_session is not None and r.last_session >= session.session)
                       for r in reports]
            coverage = sum(r.has_session for r in reports) / max(len(reports), 1)
            report = FetchReport(session, source, synthetic, False, coverage, tuple(reports))
            problem = check_coverage(cfg, reports, session.session)
            if problem:
                raise CoverageError(problem, report)
            for symbol, merged in writes.items():
                if merged is not None:
                    write_bars(bars_path(home, symbol), merged, {"source": source, "synthetic": synthetic,
                               "adjusted": cfg.market.adjusted_prices, "updated": utc_now_iso()}, symbol)
        finally:
            for path in staged.values():
                Path(path).unlink(missing_ok=True)
    return replace(report, committed=True)


def fetch_new_bars(home: Path, cfg: Config, symbol: str, session: TradingSession) -> Path:
    """Fetch and validate the bars of `symbol` since its last stored session; return the staged file."""
    path = stage_new_bars(home, cfg.market, symbol, session)
    log.info("%s: staged %s", symbol, path.name)
    return path
