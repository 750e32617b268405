"""The NSE/BSE session calendar: which dates trade, and which session's bar is final now.

    s = resolve_session(date(2019, 10, 28), cfg.market)   # Diwali Balipratipada
    s.is_session, s.session, s.reason                      # False, 2019-10-25, 'NSE holiday'

Sessions come from exchange_calendars' `XBOM` (BSE; NSE keeps the same holidays), corrected
by the config: `market.extra_closures` are closed, `market.special_sessions` trade (e.g. a
Diwali Muhurat session, which XBOM lists as a holiday). XBOM is recorded from 1997 to its
horizon (2026-12-31 in exchange_calendars 4.13); outside that range Monday to Friday are
assumed to trade, with a `CalendarHorizonWarning`, never a crash.
"""
from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from common.schedule import TIMEZONE
from tasks.config import MarketConfig

CALENDAR_NAME = "XBOM"
IST = ZoneInfo(TIMEZONE)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

log = logging.getLogger(__name__)


class CalendarHorizonWarning(UserWarning):
    """A date outside the recorded XBOM calendar: weekdays are assumed to be sessions."""


@dataclass(frozen=True)
class TradingSession:
    """What `as_of` means for the market: the latest session whose bar is final by then."""

    as_of: date
    is_session: bool
    """Whether `as_of` itself is a trading session."""
    session: date
    """The latest session whose daily bar is final: `as_of` itself once its close (plus the
    margin) has passed, else the session before."""
    reason: str
    """Why `session` is what it is: 'session closed', 'Saturday', 'NSE holiday',
    'before the close', ..."""
    beyond_calendar: bool
    """True where a date involved lies outside XBOM's recorded range (weekdays assumed)."""


@functools.lru_cache(maxsize=1)
def _xbom() -> tuple[date, date, frozenset[date]]:
    """First session, last session and all sessions of XBOM, over its whole recorded range."""
    import exchange_calendars as xcals

    cls = type(xcals.get_calendar(CALENDAR_NAME))
    cal = xcals.get_calendar(CALENDAR_NAME, start=cls.bound_min(), end=cls.bound_max())
    sessions = frozenset(cal.sessions.date)
    return cal.first_session.date(), cal.last_session.date(), sessions


def calendar_bounds() -> tuple[date, date]:
    """First and last date the XBOM calendar records."""
    first, last, _ = _xbom()
    return first, last


def within_calendar(day: date) -> bool:
    """Whether XBOM records `day` (outside it, weekdays are assumed)."""
    first, last, _ = _xbom()
    return first <= day <= last


def warn_beyond_calendar(day: date) -> None:
    """Warn that `day` lies outside XBOM and that Monday to Friday are assumed to trade."""
    first, last = calendar_bounds()
    side = f"after the XBOM calendar's last date ({last})" if day > last else (
        f"before the XBOM calendar's first date ({first})")
    message = (f"{day} is {side}: assuming Monday-Friday sessions with no holidays; "
               "list closures in market.extra_closures")
    log.warning(message)
    warnings.warn(message, CalendarHorizonWarning, stacklevel=3)


def non_session_reason(day: date, market: MarketConfig) -> str | None:
    """Why `day` is not a trading session ('Saturday', 'NSE holiday', ...); None if it is one."""
    if day in market.extra_closures:
        return "closed (market.extra_closures)"
    if day in market.special_sessions:
        return None
    if day.weekday() >= 5:
        return _WEEKDAYS[day.weekday()]
    if within_calendar(day) and day not in _xbom()[2]:
        return "NSE holiday"
    return None


def is_session(day: date, market: MarketConfig) -> bool:
    """Whether the exchange trades on `day` (XBOM, corrected by the config)."""
    return non_session_reason(day, market) is None


def previous_sessions(day: date, n: int, market: MarketConfig) -> list[date]:
    """The `n` latest sessions on or before `day` (`day` included if it trades), oldest first."""
    if n <= 0:
        return []
    found: list[date] = []
    cursor, warned = day, False
    while len(found) < n:
        if not warned and not within_calendar(cursor):
            warn_beyond_calendar(cursor)
            warned = True
        if is_session(cursor, market):
            found.append(cursor)
        cursor -= timedelta(days=1)
    return found[::-1]


def sessions_between(start: date, end: date, market: MarketConfig) -> list[date]:
    """Every session from `start` to `end`, both included, oldest first."""
    if end < start:
        return []
    first, last = calendar_bounds()
    if start < first:
        warn_beyond_calendar(start)
    if end > last:
        warn_beyond_calendar(end)
    days = (start + timedelta(days=i) for i in range((end - start).days + 1))
    return [d for d in days if is_session(d, market)]


def close_deadline(day: date, market: MarketConfig) -> datetime:
    """When `day`'s bar counts as final: the NSE close plus the margin, in Asia/Kolkata."""
    hour, minute = (int(part) for part in market.close_time.split(":"))
    close = datetime.combine(day, time(hour, minute), tzinfo=IST)
    return close + timedelta(minutes=market.close_margin_minutes)


def today_in_kolkata(now: datetime | None = None) -> date:
    """Today's date in Asia/Kolkata (a naive `now` is read as Asia/Kolkata)."""
    return _as_ist(now).date()


def _as_ist(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(IST)
    return now.replace(tzinfo=IST) if now.tzinfo is None else now.astimezone(IST)


def resolve_session(as_of: date, market: MarketConfig, now: datetime | None = None) -> TradingSession:
    """The latest session whose bar is final as of `as_of` (and, when `as_of` is today, `now`)."""
    now_ist = _as_ist(now)
    if as_of > now_ist.date():
        raise ValueError(f"as_of {as_of} is after today ({now_ist.date()} in Asia/Kolkata): "
                         "no bar can be final yet")
    beyond = not within_calendar(as_of)
    if beyond:
        warn_beyond_calendar(as_of)
    reason = non_session_reason(as_of, market)
    if reason is None and as_of == now_ist.date() and now_ist < close_deadline(as_of, market):
        deadline = close_deadline(as_of, market).strftime("%H:%M")
        reason = f"before the close (bar final after {deadline} IST)"
        latest = previous_sessions(as_of - timedelta(days=1), 1, market)[0]
        return TradingSession(as_of, True, latest, reason, beyond or not within_calendar(latest))
    if reason is None:
        return TradingSession(as_of, True, as_of, "session closed", beyond)
    latest = previous_sessions(as_of, 1, market)[0]
    return TradingSession(as_of, False, latest, reason, beyond or not within_calendar(latest))
