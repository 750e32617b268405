"""Resolving a question: which tickers (names, symbols, aliases), which day (date words), and
the grounding `ask` and the samples share: a data sheet, or a refusal that states no figure."""
from __future__ import annotations

import re
from datetime import date

import numpy as np
import pandas as pd
import pytest

from tasks.answering.dates import DateError, find_day
from tasks.answering.ground import MarketView, ground
from tasks.answering.tickers import find_tickers
from tasks.config import DEFAULT_UNIVERSE, TickerSpec
from tasks.samples.families import PERIODS
from tasks.samples.format import session_words
from tasks.samples.phrasings import PHRASINGS
from tasks.samples.templates import DATED, LATEST_ONLY, Template, date_phrase, fill

UNIVERSE = [*DEFAULT_UNIVERSE,
            TickerSpec(symbol="SBIN.NS", name="State Bank of India", kind="stock"),
            TickerSpec(symbol="HDFC.NS", name="HDFC", kind="stock")]


def symbols(question: str, universe=UNIVERSE) -> tuple[str, ...]:
    return find_tickers(question, universe).symbols


# ---- tickers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("question,symbol", [
    ("What did Reliance Industries close at?", "RELIANCE.NS"),
    ("What did RELIANCE.NS close at?", "RELIANCE.NS"),
    ("What did RELIANCE close at?", "RELIANCE.NS"),
    ("How did ^NSEI do today?", "^NSEI"),
    ("How did NIFTY 50 do today?", "^NSEI"),
    ("Where did Parag Parikh Flexi Cap Fund close?", "0P0000XVH9.BO"),
])
def test_a_display_name_or_a_symbol_with_or_without_its_suffix_names_the_ticker(question, symbol):
    assert symbols(question) == (symbol,)


@pytest.mark.parametrize("question,symbol", [
    ("What did SBI close at?", "SBIN.NS"),
    ("How is the Nifty doing?", "^NSEI"),
    ("RIL close yesterday?", "RELIANCE.NS"),
    ("Infy % change?", "INFY.NS"),
])
def test_a_common_alias_names_the_ticker(question, symbol):
    assert symbols(question) == (symbol,)


@pytest.mark.parametrize("question,symbol", [
    ("relaince close", "RELIANCE.NS"),
    ("infosis 52 week high?", "INFY.NS"),
    ("Reliance Industreis close", "RELIANCE.NS"),
])
def test_a_name_with_a_small_typo_names_the_ticker_when_nothing_matches_exactly(question, symbol):
    assert symbols(question) == (symbol,)


def test_a_typo_never_turns_an_ordinary_word_into_a_ticker():
    for question in ("What is either one doing?", "the bank was closed today", "how did the market do"):
        assert find_tickers(question, UNIVERSE) == find_tickers("", UNIVERSE), question
    assert find_tickers("tata steal close", UNIVERSE).unknown == ("TATASTEEL.NS",)
    assert find_tickers("tata motrs 10 day sma", UNIVERSE).unknown == ("TATAMOTORS.NS",)


def test_an_alias_given_in_the_config_names_the_ticker():
    universe = [TickerSpec(symbol="TCS.NS", name="TCS", kind="stock", aliases=["Tata IT major"])]
    assert symbols("What did tata it major close at?", universe) == ("TCS.NS",)


def test_names_match_in_any_case():
    assert symbols("what did reliance industries close at") == ("RELIANCE.NS",)
    assert symbols("HDFC BANK CLOSE?") == ("HDFCBANK.NS",)
    assert symbols("infosys and tcs") == ("INFY.NS", "TCS.NS")


def test_the_longest_name_wins_over_a_name_inside_it():
    assert symbols("What did HDFC Bank close at?") == ("HDFCBANK.NS",)
    assert symbols("What did HDFC close at?") == ("HDFC.NS",)
    assert symbols("How did Bank Nifty move?") == ("^NSEBANK",)
    assert symbols("How did Nifty move?") == ("^NSEI",)


def test_two_tickers_come_in_the_order_the_question_names_them():
    assert symbols("Compare TCS with Infosys over 5 sessions") == ("TCS.NS", "INFY.NS")
    assert symbols("Compare Infosys with TCS over 5 sessions") == ("INFY.NS", "TCS.NS")


def test_a_catalogue_ticker_outside_the_universe_is_reported_as_unknown():
    match = find_tickers("What did Wipro close at?", UNIVERSE)
    assert match.symbols == () and match.unknown == ("WIPRO.NS",)
    assert find_tickers("What did SBI close at?", DEFAULT_UNIVERSE).unknown == ("SBIN.NS",)


def test_a_word_inside_another_word_is_not_a_name():
    match = find_tickers("Should I buy RILEY or TCSX?", UNIVERSE)  # RIL, TCS inside other words
    assert match.symbols == () and match.unknown == ()


# ---- dates ------------------------------------------------------------------------------------

TODAY = date(2020, 6, 24)  # a Wednesday


@pytest.mark.parametrize("words", ["on 2020-06-19", "on 19/06/2020", "on 19 June 2020", "on 19th June",
                                   "on June 19", "on June 19, 2020", "on 19 jun", "as of 19 June 2020"])
def test_a_written_date_names_that_day(words):
    assert find_day(f"What did TCS close at {words}?", TODAY).day == date(2020, 6, 19)


def test_a_date_without_a_year_is_the_latest_such_date_on_or_before_today():
    assert find_day("TCS close on 24 June?", TODAY).day == date(2020, 6, 24)
    assert find_day("TCS close on 25 June?", TODAY).day == date(2019, 6, 25)


def test_a_date_without_a_year_crosses_the_year_boundary():
    assert find_day("TCS close on 31 December?", date(2021, 1, 4)).day == date(2020, 12, 31)
    assert find_day("TCS close on Dec 30?", date(2021, 1, 4)).day == date(2020, 12, 30)


@pytest.mark.parametrize("words,day", [
    ("today", TODAY), ("yesterday", date(2020, 6, 23)), ("day before yesterday", date(2020, 6, 22)),
    ("the day before yesterday", date(2020, 6, 22))])
def test_relative_days_count_back_from_today(words, day):
    assert find_day(f"What did TCS close at {words}?", TODAY).day == day


def test_last_weekday_is_strictly_before_today():
    assert find_day("TCS close last Friday?", TODAY).day == date(2020, 6, 19)
    assert find_day("TCS close last Wednesday?", TODAY).day == date(2020, 6, 17)


def test_on_a_weekday_is_the_latest_such_day_on_or_before_today():
    assert find_day("TCS close on Friday?", TODAY).day == date(2020, 6, 19)
    assert find_day("TCS close on Wednesday?", TODAY).day == TODAY


@pytest.mark.parametrize("question", ["How is Infosys doing?", "What was TCS's previous close?",
                                      "How did TCS do over the last 5 sessions?",
                                      "TCS close in the latest session?"])
def test_a_question_without_a_date_names_no_day(question):
    assert find_day(question, TODAY) is None


def test_an_impossible_date_is_an_error():
    with pytest.raises(DateError):
        find_day("TCS close on 31 June?", TODAY)
    with pytest.raises(DateError):
        find_day("TCS close on 2020-02-30?", TODAY)


def test_a_date_after_today_is_an_error():
    with pytest.raises(DateError, match="after today"):
        find_day("TCS close on 2020-06-25?", TODAY)


# ---- grounding --------------------------------------------------------------------------------

SMALL = [TickerSpec(symbol="^NSEI", name="NIFTY 50", kind="index"),
         TickerSpec(symbol="TCS.NS", name="TCS", kind="stock"),
         TickerSpec(symbol="INFY.NS", name="Infosys", kind="stock")]
FIRST, LAST = date(2020, 1, 1), date(2020, 6, 19)  # a Wednesday, a Friday


def bars(start: date, end: date, seed: int) -> pd.DataFrame:
    days = pd.bdate_range(start, end, name="session")
    close = 1000 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, len(days))))
    return pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                         "volume": np.full(len(days), 5000.0)}, index=days)


@pytest.fixture(scope="module")
def view() -> MarketView:
    frames = {"^NSEI": bars(FIRST, LAST, 1), "TCS.NS": bars(FIRST, LAST, 2),
              "INFY.NS": bars(FIRST, date(2020, 6, 17), 3)}  # Infosys ends two sessions early
    return MarketView.from_bars(frames, SMALL)


PRICE_LIKE = re.compile(r"₹|\d\.\d")


def test_one_ticker_gets_its_full_sheet_of_the_asked_session(view):
    g = ground("What did TCS close at on 12 June?", view, LAST)
    assert (g.kind, g.symbols, g.session, g.refusal) == ("ticker", ("TCS.NS",), date(2020, 6, 12), None)
    assert g.sheet.startswith("Data sheet: TCS (TCS.NS") and session_words(date(2020, 6, 12)) in g.sheet
    assert "52-week high" in g.sheet


def test_a_question_without_a_date_gets_the_latest_session(view):
    assert ground("What did TCS close at?", view, date(2020, 6, 30)).session == LAST


def test_an_unknown_ticker_is_refused_without_a_price(view):
    g = ground("What did Wipro close at yesterday?", view, LAST)
    assert g.kind == "refusal" and g.sheet is None and g.session is None
    assert "Wipro" in g.refusal and not PRICE_LIKE.search(g.refusal)


def test_a_question_naming_no_ticker_and_not_the_market_is_refused(view):
    g = ground("What should I buy?", view, LAST)
    assert g.kind == "refusal" and not PRICE_LIKE.search(g.refusal)


@pytest.mark.parametrize("question,named", [
    ("What did TCS close at on 14 June 2020?", date(2020, 6, 12)),  # a Sunday: the Friday before
    ("What did TCS close at on 2020-06-22?", LAST),                 # after the data ends
])
def test_a_day_the_store_does_not_hold_is_refused_naming_the_nearest_session(view, question, named):
    g = ground(question, view, date(2020, 6, 30))
    assert g.kind == "refusal" and g.sheet is None
    assert session_words(named) in g.refusal and session_words(LAST) in g.refusal
    assert not PRICE_LIKE.search(g.refusal)


def test_a_day_before_the_data_starts_is_refused_naming_where_it_starts(view):
    g = ground("What did TCS close at on 2019-12-31?", view, LAST)
    assert g.kind == "refusal" and session_words(FIRST) in g.refusal and not PRICE_LIKE.search(g.refusal)


def test_a_date_after_today_is_refused(view):
    g = ground("What did TCS close at on 2020-06-19?", view, date(2020, 6, 18))
    assert g.kind == "refusal" and not PRICE_LIKE.search(g.refusal)


def test_a_market_question_gets_the_market_sheet(view):
    g = ground("Give me a market summary for yesterday", view, date(2020, 6, 19))
    assert g.kind == "market" and g.session == date(2020, 6, 18)
    assert g.sheet.startswith("Market data sheet") and "NIFTY 50" in g.sheet and "TCS" in g.sheet


def test_two_tickers_get_a_brief_sheet_each_over_a_session_both_hold(view):
    g = ground("Compare TCS and Infosys over 5 sessions", view, LAST)
    assert g.kind == "tickers" and g.symbols == ("TCS.NS", "INFY.NS")
    assert g.session == date(2020, 6, 17)  # the latest session Infosys also holds
    sheets = g.sheet.split("\n\n")
    assert [s.splitlines()[0].split(" (")[0] for s in sheets] == ["Data sheet: TCS", "Data sheet: Infosys"]
    assert all(session_words(date(2020, 6, 17)) in s and "52-week" not in s for s in sheets)


def test_two_tickers_on_a_day_one_does_not_hold_are_refused(view):
    g = ground("Compare TCS and Infosys on 19 June 2020", view, LAST)
    assert g.kind == "refusal" and "Infosys" in g.refusal and not PRICE_LIKE.search(g.refusal)


# ---- every phrasing resolves to what it asks --------------------------------------------------

FRIDAY = date(2020, 6, 19)
SLOTS = {"name": "TCS", "other": "Infosys", "sessions": "5 sessions", "n": "5", "period": "week"}
ASKED = [(family, k, text) for family, texts in PHRASINGS.items() if family != "session"
         for k, text in enumerate(texts, start=1)]


@pytest.mark.parametrize("family,k,text", ASKED, ids=[f"{f}.{k}" for f, k, _ in ASKED])
def test_every_phrasing_with_every_date_phrase_names_the_session_it_asks_about(family, k, text):
    template = Template(f"{family}.{k}", text)
    for slots in ({**SLOTS, "period": period} for period in PERIODS.values()):
        for kind in DATED:
            phrase, today = date_phrase(kind, FRIDAY)
            question = fill(template, slots, phrase)
            named = find_day(question, today)
            assert named is not None and named.day == FRIDAY, (kind, question, named)
        for kind in LATEST_ONLY:
            phrase, today = date_phrase(kind, FRIDAY)
            question = fill(template, slots, phrase)
            assert find_day(question, today) is None, (kind, question)


@pytest.mark.parametrize("family,k,text", ASKED, ids=[f"{f}.{k}" for f, k, _ in ASKED])
def test_every_phrasing_names_exactly_its_tickers(family, k, text):
    question = fill(Template(f"{family}.{k}", text), SLOTS, "on 19 June 2020")
    expected = set() if family == "market_summary" else {"TCS.NS", "INFY.NS"} if family == "compare" else {"TCS.NS"}
    assert set(symbols(question)) == expected, question
