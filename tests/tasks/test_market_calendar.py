"""The NSE session calendar: non-sessions are reported with a reason, the horizon warns."""
from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from tasks.market.calendar import (IST, CalendarHorizonWarning, calendar_bounds, is_session, previous_sessions,
                            resolve_session, sessions_between)
from tasks.config import MarketConfig

MARKET = MarketConfig()
AFTER_CLOSE = datetime(2019, 12, 31, 18, 0, tzinfo=IST)


def test_weekday_nse_holiday_is_not_a_session():
    s = resolve_session(date(2019, 10, 28), MARKET, now=AFTER_CLOSE)  # Monday, Diwali Balipratipada
    assert (s.is_session, s.session, s.reason) == (False, date(2019, 10, 25), "NSE holiday")
    assert not s.beyond_calendar


def test_weekend_is_not_a_session_and_names_the_day():
    s = resolve_session(date(2019, 11, 23), MARKET, now=AFTER_CLOSE)
    assert (s.is_session, s.session, s.reason) == (False, date(2019, 11, 22), "Saturday")


def test_closed_session_is_its_own_latest_session():
    s = resolve_session(date(2019, 11, 29), MARKET, now=AFTER_CLOSE)
    assert (s.is_session, s.session) == (True, date(2019, 11, 29))


def test_before_the_close_the_expected_session_is_the_previous_one():
    day = date(2019, 11, 26)
    before = resolve_session(day, MARKET, now=datetime(2019, 11, 26, 14, 0, tzinfo=IST))
    in_margin = resolve_session(day, MARKET, now=datetime(2019, 11, 26, 15, 45, tzinfo=IST))
    after = resolve_session(day, MARKET, now=datetime(2019, 11, 26, 16, 1, tzinfo=IST))
    assert (before.is_session, before.session) == (True, date(2019, 11, 25))
    assert before.reason.startswith("before the close")
    assert in_margin.session == date(2019, 11, 25)
    assert after.session == day


def test_naive_now_is_read_as_india_time():
    s = resolve_session(date(2019, 11, 26), MARKET, now=datetime(2019, 11, 26, 14, 0))
    assert s.session == date(2019, 11, 25)


def test_date_beyond_the_calendar_warns_and_assumes_weekdays():
    # Whatever horizon the installed exchange_calendars records: the second Monday after it, so
    # the Friday before is beyond it too.
    horizon = calendar_bounds()[1]
    monday = horizon + timedelta(days=7 - horizon.weekday() + 7)
    friday, sunday, now = monday - timedelta(days=3), monday - timedelta(days=1), datetime.combine(
        monday + timedelta(days=1), datetime.min.time(), tzinfo=IST)
    with pytest.warns(CalendarHorizonWarning, match="assuming Monday-Friday"):
        on_monday = resolve_session(monday, MARKET, now=now)
    with pytest.warns(CalendarHorizonWarning):
        on_sunday = resolve_session(sunday, MARKET, now=now)
    assert (on_monday.is_session, on_monday.session, on_monday.beyond_calendar) == (True, monday, True)
    assert (on_sunday.is_session, on_sunday.session, on_sunday.reason) == (False, friday, "Sunday")


def test_date_before_the_calendar_warns_and_assumes_weekdays():
    with pytest.warns(CalendarHorizonWarning, match="before the XBOM"):
        s = resolve_session(date(1996, 12, 27), MARKET)  # a Friday
    assert (s.is_session, s.beyond_calendar) == (True, True)


def test_config_closures_and_special_sessions_override_xbom():
    market = MarketConfig(extra_closures=[date(2019, 11, 29)], special_sessions=[date(2019, 10, 27)])
    assert not is_session(date(2019, 11, 29), market)
    assert is_session(date(2019, 10, 27), market)  # the Sunday Diwali Muhurat session
    assert resolve_session(date(2019, 11, 29), market, now=AFTER_CLOSE).session == date(2019, 11, 28)


def test_previous_sessions_and_sessions_between_skip_non_sessions():
    assert previous_sessions(date(2019, 10, 29), 3, MARKET) == [date(2019, 10, 24), date(2019, 10, 25),
                                                               date(2019, 10, 29)]
    assert sessions_between(date(2019, 10, 25), date(2019, 10, 29), MARKET) == [date(2019, 10, 25),
                                                                               date(2019, 10, 29)]


def test_as_of_after_today_is_refused():
    with pytest.raises(ValueError, match="after today"):
        resolve_session(date(2019, 12, 2), MARKET, now=datetime(2019, 11, 30, 12, 0, tzinfo=IST))
