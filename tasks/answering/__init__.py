"""Answering: resolve what a question is about, read its data sheet from the market store, and
answer with the promoted adapter (tasks/answering/ask.py).

    from tasks.answering import ask
    answer = ask("var", "What did TCS close at yesterday?")          # grounded (default)
    answer = ask("var", "What did TCS close at?", closed_book=True)   # from what the adapter learned

Importing this package imports neither torch nor Prefect; `ask` loads the model when called.
"""
from tasks.answering.ask import Answer, ask
from tasks.answering.ground import Grounding, MarketView, ground, grounded_prompt

__all__ = ["Answer", "Grounding", "MarketView", "ask", "ground", "grounded_prompt"]
