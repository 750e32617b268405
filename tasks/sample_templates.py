"""Paraphrase templates of the user's question, per family; the last two of each are val-only.

Slots a template may use: `{name}` (display name), `{other}` (second ticker of a comparison),
`{on}` ("in the latest session" | "on Friday, 29 November 2019"), `{upto}` ("the latest
session" | "Friday, 29 November 2019"), `{for}` ("for the latest session" | "for Friday, ..."),
`{sessions}` ("5 sessions"), `{n}`, and `{listing}` (closes given in the prompt).

The answer of a family has one wording whatever the template: the question varies, the answer
format does not, so validation loss measures the facts rather than an unseen answer wording
that no prompt could predict.
"""
from __future__ import annotations

from dataclasses import dataclass

VAL_TEMPLATES_PER_FAMILY = 2


@dataclass(frozen=True)
class Template:
    """One paraphrase of a family's question."""

    id: str
    text: str


_QUESTIONS: dict[str, list[str]] = {
    "close": [
        "What did {name} close at {on}?",
        "Give me the close of {name} {on}, with the day's high, low and volume.",
        "How did {name} trade {on}? I need the close, the high and the low.",
        "{name}: close, day high and day low {on}?",
        "Can you tell me where {name} finished {on}, and its intraday range?",
    ],
    "session": [
        "What is the latest trading session you have data for on {name}?",
        "When did {name} last trade, according to your data?",
        "Which date is your most recent {name} data from?",
        "{name}: date of the latest session?",
        "Up to which session does your knowledge of {name} go?",
    ],
    "volume": [
        "What was the trading volume of {name} {on}?",
        "How much of {name} was traded {on}?",
        "Was the volume of {name} {on} above or below its 20-session average?",
        "Tell me the volume of {name} {on} and how it compares with the 20-session average.",
        "{name} volume {on}?",
    ],
    "performance": [
        "How did {name} perform over the {sessions} up to {upto}?",
        "What is the return of {name} over the last {sessions} as of {upto}?",
        "By how much did {name} move in the {sessions} ending {upto}?",
        "{name}: percentage change over {sessions} to {upto}?",
        "Has {name} gained or lost over the {sessions} through {upto}, and by how much?",
    ],
    "volatility": [
        "How volatile has {name} been over the 20 sessions up to {upto}?",
        "What is the volatility of {name} as of {upto}?",
        "How risky is {name} as of {upto}, judging by its recent volatility?",
        "{name}: daily and annualised volatility as of {upto}?",
        "Give me the standard deviation of the daily returns of {name} over the 20 sessions to "
        "{upto}, annualised too.",
    ],
    "trend": [
        "Is {name} in an uptrend or a downtrend as of {upto}?",
        "How does the close of {name} compare with its 10- and 20-session moving averages as of {upto}?",
        "What is the trend of {name} as of {upto}?",
        "{name}: trend versus the 10- and 20-session SMAs as of {upto}?",
        "Is {name} trading above its short-term moving averages as of {upto}?",
    ],
    "range_52w": [
        "What are the 52-week high and low of {name} as of {upto}?",
        "How far is {name} from its 52-week high as of {upto}?",
        "Give me the 52-week range of {name} as of {upto}.",
        "{name}: 52-week high, low and distance from them as of {upto}?",
        "Where does {name} stand within its one-year range as of {upto}?",
    ],
    "compare": [
        "Which did better over the {sessions} up to {upto}: {name} or {other}?",
        "Compare the returns of {name} and {other} over the last {sessions} as of {upto}.",
        "Did {name} outperform {other} over the {sessions} ending {upto}?",
        "{name} vs {other}: return over {sessions} to {upto}?",
        "How did {name} fare against {other} in the {sessions} through {upto}?",
    ],
    "market_summary": [
        "Give me a market summary {for}.",
        "How did the Indian market do {on}?",
        "Summarise the market {for}: indices and the biggest movers.",
        "Market wrap {for}, please.",
        "What happened in the markets {on}? Indices and top movers, please.",
    ],
    "prompt_change": [
        "The last {n} closes of {name} were:\n{listing}\nWhat is the percentage change from the first to the last?",
        "{listing}\nThese are the closes of {name} over {sessions}. By what percentage did it move?",
        "Given these closes of {name}:\n{listing}\nCompute the return from the first close to the last.",
        "{name} closes:\n{listing}\nPercentage change, first to last?",
        "Using only the closes below, how much did {name} gain or lose in percent?\n{listing}",
    ],
    "prompt_sma": [
        "The last {n} closes of {name} were:\n{listing}\nWhat is their simple moving average?",
        "{listing}\nWhat is the average of these {n} closes of {name}?",
        "Given these closes of {name}:\n{listing}\nCompute their {n}-session simple moving average.",
        "{name} closes:\n{listing}\nSMA of these?",
        "Using only the closes below, what is the mean close of {name}?\n{listing}",
    ],
}


def _templates(family: str) -> list[Template]:
    return [Template(f"{family}.{k}", text) for k, text in enumerate(_QUESTIONS[family], start=1)]


FAMILIES: tuple[str, ...] = tuple(_QUESTIONS)
"""Every question family, in the order samples are generated."""
PROMPT_FAMILIES: frozenset[str] = frozenset({"prompt_change", "prompt_sma"})
"""Families answerable from the data in the prompt alone (the time-ordered validation slice)."""
TRAIN_TEMPLATES: dict[str, list[Template]] = {f: _templates(f)[:-VAL_TEMPLATES_PER_FAMILY] for f in FAMILIES}
"""Paraphrases that training samples use."""
VAL_TEMPLATES: dict[str, list[Template]] = {f: _templates(f)[-VAL_TEMPLATES_PER_FAMILY:] for f in FAMILIES}
"""Held-out paraphrases: only validation samples use them."""
