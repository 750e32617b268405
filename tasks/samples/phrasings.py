"""Question phrasings (paraphrase templates) per family; the last 5 of each list are held out.

`PHRASINGS[family]` is a list of `str.format` templates for the user's question. The first
`len(list) - 5` are used for training, the last 5 only for validation, so that validation
measures whether the model understands phrasings it never saw. The held-out ones are written in
different sentence structures from the training ones on purpose.

Slots (str.format fields; no other fields and no literal braces appear):

- `{name}`: how the user names the ticker: display name ("Reliance Industries", "NIFTY 50"),
  symbol ("RELIANCE.NS", "^NSEI"), symbol without suffix ("RELIANCE"), a common alias ("RIL",
  "Nifty", "SBI") or lower case ("reliance industries"). Required in every family except
  `market_summary`, which never names a ticker.
- `{other}`: a second ticker; only in `compare`, where it is required.
- `{on}`: a date phrase, possibly empty: "", "today", "yesterday", "last Friday", "on 19 June",
  "on Friday, 19 June 2020", "on 2020-06-19", "as of 19 June 2020", "in the latest session".
  Empty means the latest session. Required in every family except `session` (which asks for the
  latest date and must not carry one). It is never at the start of a sentence; after formatting,
  double spaces are collapsed and a space before punctuation is removed.
- `{sessions}`: the window, e.g. "5 sessions", "1 session"; only in `performance` and `compare`.
- `{n}`: the same window as digits ("5"), as in "last {n} trading days"; only in `performance` and
  `compare`.
- `{period}`: what people call the window: "week" (5 sessions), "fortnight" (10), "month" (20);
  only in `performance` and `compare`, and a template with it asks only about those three windows
  (tasks.samples.questions.usable). Every template of those two families has `{sessions}`, `{n}` or
  `{period}`.

Styles are mixed on purpose: terse, polite, imperative, all lower case, trader's jargon, and a
few small typos ("whats", "closeing", "volatilty"), as real users write.
"""
from __future__ import annotations

from tasks.samples import phrasings_day, phrasings_market, phrasings_ranges, phrasings_windows

HELD_OUT_PER_FAMILY = 5

FAMILY_ORDER = ("close", "change", "open", "prev_close", "day_range", "volume", "performance",
                "volatility", "trend", "range_52w", "high_52w", "low_52w", "compare", "market_summary", "session")
_ALL = {**phrasings_day.PHRASINGS, **phrasings_ranges.PHRASINGS, **phrasings_windows.PHRASINGS,
        **phrasings_market.PHRASINGS}
PHRASINGS: dict[str, list[str]] = {family: _ALL[family] for family in FAMILY_ORDER}
"""Every family's phrasings (the four files above hold them), in the families' order."""
