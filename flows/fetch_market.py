"""`niftytune fetch`: bring the market store up to the latest final session, and nothing else.

    report = run_fetch(home, cfg, as_of=date(2019, 11, 29))
    print(format_fetch_report(report))

The flow `market-fetch` reads as the process: which session is due, fetch every ticker
(`market.fetch_workers` at a time, retried on transient faults), then commit all of them or
none (coverage policy). The daily flow runs the same two tasks through `fetch_and_commit`.
"""
from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from common.table import format_table
from flows.steps import commit_bars, fetch_task
from tasks.config import Config
from tasks.market.calendar import TradingSession, resolve_session, today_in_kolkata
from tasks.market.data import FetchReport, MarketDataError, TickerReport, TransientFetchError
from tasks.market.sources import FetchError


def fetch_and_commit(home: Path, cfg: Config, session: TradingSession) -> FetchReport:
    """Inside a flow: fetch each ticker, at most `market.fetch_workers` at once (Prefect
    retries), then commit or raise CoverageError."""
    fetch = fetch_task(cfg)
    # The fetches get a runner of their own: the calling flow's is not sized for Yahoo's rate
    # limit (the daily flow's runs every stage, and a flow's runner is fixed before its config is read).
    runner: ThreadPoolTaskRunner[Path] = ThreadPoolTaskRunner(max_workers=cfg.market.fetch_workers)
    with runner:
        futures = {t.symbol: runner.submit(fetch, {"home": home, "cfg": cfg, "symbol": t.symbol, "session": session})
                   for t in cfg.market.tickers}
        outcomes = {symbol: future.result(raise_on_failure=False) for symbol, future in futures.items()}
    staged: dict[str, Path] = {}
    failures: dict[str, str] = {}
    for symbol, outcome in outcomes.items():
        if isinstance(outcome, BaseException) and not isinstance(outcome, MarketDataError):
            raise outcome  # a bug, not a market-data fault: never disguise it as poor coverage
        if isinstance(outcome, MarketDataError):
            tries = f" (gave up after {cfg.market.fetch_retries + 1} attempts)" if isinstance(
                outcome, TransientFetchError) else ""
            reason = outcome.reason if isinstance(outcome, FetchError) else str(outcome)  # without the symbol
            failures[symbol] = f"{type(outcome).__name__}: {reason}{tries}"
        else:
            staged[symbol] = outcome
    return commit_bars(home, cfg, session, staged, failures)


@flow(name="market-fetch")
def market_fetch(home: Path, cfg: Config, as_of: date | None = None) -> FetchReport:
    """Fetch the bars up to the latest final session as of `as_of` (default: today, IST)."""
    # 1. which session's bars are due (a weekend or holiday still catches up to the last one)
    session = resolve_session(as_of or today_in_kolkata(), cfg.market)
    # 2. fetch every ticker, then commit all or nothing
    return fetch_and_commit(home, cfg, session)


def run_fetch(home: Path, cfg: Config, as_of: date | None = None) -> FetchReport:
    """Run the `market-fetch` flow; raises CoverageError (with `.report`) when nothing was stored."""
    return market_fetch(home=Path(home), cfg=cfg, as_of=as_of)


def _ticker_row(t: TickerReport) -> list[str]:
    status = "FAILED" if t.error else ("ok" if t.has_session else "stale")
    close = f"{t.last_close:,.2f}" if t.last_close is not None else "-"
    return [t.symbol, t.source, str(t.last_session or "-"), close, str(t.rows_added), str(t.rows_revised), str(len(t.dropped)),
            str(len(t.anomalies)), status]


def format_fetch_report(report: FetchReport) -> str:
    """A readable per-ticker table, then the dropped rows, anomalies and failures in full."""
    s = report.session
    lines = []
    if report.synthetic:
        lines.append("SYNTHETIC market data: seeded random walks, not real prices.")
    day = "a session" if s.is_session else "not a session"
    lines.append(f"Market data as of {s.as_of} ({day}: {s.reason}); latest final session {s.session}; "
                 f"source {report.source}; coverage {report.coverage:.0%}; "
                 + ("committed" if report.committed else "NOT committed (store unchanged)"))
    if s.beyond_calendar:
        lines.append("Warning: date beyond the XBOM calendar: Monday-Friday sessions assumed.")
    header = ["ticker", "source", "last session", "close", "added", "revised", "dropped", "anomalies", "status"]
    lines.append(format_table([_ticker_row(t) for t in report.tickers], header, align="<<<>>>>>>"))
    notes = [(t.symbol, f"dropped {d.session or '(no date)'}: {d.reason}") for t in report.tickers for d in t.dropped]
    notes += [(t.symbol, f"anomaly {a}") for t in report.tickers for a in t.anomalies]
    notes += [(t.symbol, f"failed: {t.error}") for t in report.tickers if t.error]
    if notes:
        lines.append("")
        lines += [f"{symbol}: {text}" for symbol, text in notes]
    return "\n".join(lines)
