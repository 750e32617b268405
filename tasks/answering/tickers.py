"""Which ticker(s) a question is about: display names, symbols with or without their suffix, and
the names people use ("SBI", "RIL", "Nifty", "Infy").

    find_tickers("How did RIL and infy do?", universe)   # -> TickerMatch(symbols=("RELIANCE.NS", "INFY.NS"), ...)

Matching is case-insensitive on whole words; longer names win over the names inside them ("HDFC
Bank" before "HDFC", "Bank Nifty" before "Nifty"); when nothing matches, a one-word name with a
small typo does ("relaince", "tata motrs"). A name from the catalogue whose ticker is not
in the universe is reported as `unknown`, so the answer can say which data it does not have.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from tasks.config import TickerSpec

CATALOGUE: dict[str, tuple[str, tuple[str, ...]]] = {
    # symbol: (display name, other names people use)
    "^NSEI": ("NIFTY 50", ("Nifty", "Nifty50", "Nifty fifty", "NSE Nifty", "NSEI")),
    "^BSESN": ("SENSEX", ("BSE Sensex", "S&P BSE Sensex", "BSESN")),
    "^NSEBANK": ("Bank Nifty", ("Nifty Bank", "BankNifty", "NSEBANK")),
    "NIFTY_MIDCAP_100.NS": ("NIFTY Midcap 100", ("Nifty Midcap", "midcap index", "midcap 100")),
    "^CNXSC": ("NIFTY Smallcap 100", ("Nifty Smallcap", "smallcap index", "smallcap 100", "CNXSC")),
    "GOLDBEES.NS": ("Nippon India Gold BeES", ("Gold BeES", "GoldBees", "gold ETF", "Nippon gold ETF")),
    "0P0000XVH9.BO": ("Parag Parikh Flexi Cap Fund", ("Parag Parikh", "PPFAS", "Parag Parikh flexi cap",
                                                      "PPFAS flexi cap")),
    "TCS.NS": ("TCS", ("Tata Consultancy Services", "Tata Consultancy")),
    "RELIANCE.NS": ("Reliance Industries", ("Reliance", "RIL", "Reliance Ind")),
    "HDFCBANK.NS": ("HDFC Bank", ("HDFCBank",)),
    "HDFC.NS": ("HDFC", ("Housing Development Finance Corporation", "HDFC Ltd", "HDFC Limited")),
    "INFY.NS": ("Infosys", ("Infy",)),
    "ICICIBANK.NS": ("ICICI Bank", ("ICICI",)),
    "AXISBANK.NS": ("Axis Bank", ("Axis",)),
    "BAJAJFINSV.NS": ("Bajaj Finserv", ("Bajaj Finserv Ltd",)),
    "BAJFINANCE.NS": ("Bajaj Finance", ("Bajaj Fin",)),
    "BPCL.NS": ("Bharat Petroleum", ("Bharat Petroleum Corporation", "BPCL")),
    "EICHERMOT.NS": ("Eicher Motors", ("Eicher", "Royal Enfield")),
    "GAIL.NS": ("GAIL", ("GAIL India", "GAIL (India)")),
    "HEROMOTOCO.NS": ("Hero MotoCorp", ("Hero Moto", "Hero Motocorp", "Hero")),
    "INDUSINDBK.NS": ("IndusInd Bank", ("IndusInd", "Indusind")),
    "IOC.NS": ("Indian Oil", ("Indian Oil Corporation", "IndianOil", "IOCL", "IOC")),
    "JSWSTEEL.NS": ("JSW Steel", ("JSW",)),
    "KOTAKBANK.NS": ("Kotak Mahindra Bank", ("Kotak Bank", "Kotak", "Kotak Mahindra")),
    "M&M.NS": ("Mahindra & Mahindra", ("M&M", "M & M", "Mahindra and Mahindra", "Mahindra", "M and M")),
    "ONGC.NS": ("ONGC", ("Oil and Natural Gas Corporation", "Oil & Natural Gas")),
    "POWERGRID.NS": ("Power Grid", ("Power Grid Corporation", "Powergrid", "PGCIL")),
    "TATAMOTORS.NS": ("Tata Motors", ("TataMotors", "Tata Mot")),
    "SBIN.NS": ("State Bank of India", ("SBI", "State Bank", "SBIN")),
    "WIPRO.NS": ("Wipro", ()),
    "ITC.NS": ("ITC", ()),
    "LT.NS": ("Larsen & Toubro", ("L&T", "Larsen and Toubro", "Larsen")),
    "BHARTIARTL.NS": ("Bharti Airtel", ("Airtel", "Bharti")),
    "HINDUNILVR.NS": ("Hindustan Unilever", ("HUL", "Hind Unilever")),
    "MARUTI.NS": ("Maruti Suzuki", ("Maruti",)),
    "ASIANPAINT.NS": ("Asian Paints", ()),
    "SUNPHARMA.NS": ("Sun Pharma", ("Sun Pharmaceutical",)),
    "TATASTEEL.NS": ("Tata Steel", ()),
    "ADANIENT.NS": ("Adani Enterprises", ("Adani",)),
    "ZOMATO.NS": ("Zomato", ()),
    "HCLTECH.NS": ("HCL Technologies", ("HCL Tech", "HCL")),
    "TECHM.NS": ("Tech Mahindra", ("TechM",)),
}
"""Names of tickers this product is often asked about; the universe's own names come first."""


def display_name(symbol: str) -> str | None:
    """The catalogue's display name of a symbol, if it has one."""
    entry = CATALOGUE.get(symbol)
    return entry[0] if entry else None


def bare_symbol(symbol: str) -> str:
    """`TCS.NS` -> `TCS`, `^NSEI` -> `NSEI`, `0P0000XVH9.BO` -> `0P0000XVH9`."""
    return re.sub(r"\.(NS|BO)$", "", symbol.lstrip("^"))


def names_of(spec: TickerSpec) -> list[str]:
    """Every name a question may use for `spec`: display name, symbol, bare symbol, aliases."""
    entry = CATALOGUE.get(spec.symbol, ("", ()))
    names = [spec.name, spec.symbol, bare_symbol(spec.symbol), entry[0], *entry[1], *spec.aliases]
    return list(dict.fromkeys(n for n in names if n))


@dataclass(frozen=True)
class TickerMatch:
    """The universe's tickers a question names, in order of appearance, and the catalogue
    names it uses whose tickers are not in the universe."""

    symbols: tuple[str, ...]
    unknown: tuple[str, ...]


@functools.lru_cache(maxsize=None)
def _first_word(name: str) -> str:
    """The first word of `name`, lower case: in every text `_pattern(name)` matches, lowered."""
    return name.split()[0].lower() if name.strip() else ""


@functools.lru_cache(maxsize=None)
def _pattern(name: str) -> re.Pattern[str]:
    # Whole words, case-insensitive; "&", "^" and "." inside names are literal; a possessive
    # "'s" after a name is fine.
    return re.compile(r"(?<![\w^])" + re.escape(name).replace(r"\ ", r"\s+") + r"(?![\w&])", re.IGNORECASE)


Universe = tuple[tuple[str, tuple[str, ...]], ...]
"""A universe as (symbol, its names) pairs: hashable, so the candidates are built once per universe."""


@functools.lru_cache(maxsize=64)
def _candidates(universe: Universe) -> list[tuple[str, str, bool]]:
    """(name, symbol, in_universe): the universe's names, then the catalogue's other tickers; longest first."""
    found = [(name, symbol, True) for symbol, names in universe for name in names]
    held = {symbol for symbol, _ in universe}
    for symbol, (name, aliases) in CATALOGUE.items():
        if symbol not in held:
            found += [(n, symbol, False) for n in (name, symbol, bare_symbol(symbol), *aliases)]
    return sorted(dict.fromkeys(found), key=lambda c: -len(c[0]))


TYPO_MIN_LENGTH = 5
TYPO_RATIO = 0.85
"""A word of at least 5 letters this similar (difflib ratio; 0.8 took "either" for "Eicher") to a
one-word name counts as that name ("relaince", "infosis"), and so do as many words as a name of two
or three words has ("tata motrs", "bajaj finanace"), but only when no name matched exactly."""


def _near_misses(question: str, key: Universe) -> list[tuple[int, str, bool]]:
    import difflib

    by_words: dict[int, dict[str, tuple[str, bool]]] = {}
    for name, symbol, held in _candidates(key):
        words = name.lower().split()
        if len(words) <= 3 and len(name) >= TYPO_MIN_LENGTH and all(w.isalpha() for w in words):
            by_words.setdefault(len(words), {})[" ".join(words)] = (symbol, held)
    tokens = [(m.start(), m.group().lower()) for m in re.finditer(r"[A-Za-z]+", question)]
    hits: list[tuple[int, str, bool]] = []
    used: set[int] = set()
    for k in sorted(by_words, reverse=True):  # "tata motrs" as two words before "motrs" as one
        for i in range(len(tokens) - k + 1):
            span = range(i, i + k)
            phrase = " ".join(t for _, t in tokens[i:i + k])
            if used & set(span) or len(phrase) < TYPO_MIN_LENGTH:
                continue
            close = difflib.get_close_matches(phrase, by_words[k], n=1, cutoff=TYPO_RATIO)
            if close:
                hits.append((tokens[i][0], *by_words[k][close[0]]))
                used |= set(span)
    return hits


def find_tickers(question: str, universe: Iterable[TickerSpec]) -> TickerMatch:
    """The tickers `question` names (see the module docstring)."""
    key = tuple((spec.symbol, tuple(names_of(spec))) for spec in universe)
    taken: list[tuple[int, int]] = []
    hits: list[tuple[int, str, bool]] = []
    folded = question.lower()
    for name, symbol, held in _candidates(key):
        if _first_word(name) not in folded:  # cannot match: skip the regex (samples ground ~4k questions)
            continue
        for m in _pattern(name).finditer(question):
            if any(m.start() < end and start < m.end() for start, end in taken):
                continue
            taken.append((m.start(), m.end()))
            hits.append((m.start(), symbol, held))
    if not hits:
        hits = _near_misses(question, key)
    hits.sort()
    held_symbols = tuple(dict.fromkeys(s for _, s, h in hits if h))
    unknown = tuple(dict.fromkeys(s for _, s, h in hits if not h))
    return TickerMatch(held_symbols, unknown)
