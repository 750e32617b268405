"""Answering: resolve what a question is about, read its data sheet from the market store, and
answer with the promoted adapter (tasks/answering/ask.py).

    from tasks.answering import ask
    answer = ask("var", "What did TCS close at yesterday?")          # grounded (default)
    answer = ask("var", "What did TCS close at?", closed_book=True)   # from what the adapter learned
    model, tokenizer, info = load_promoted("var")   # the champion on its base model, verified (loading.py)

Importing this package imports neither torch nor Prefect; `ask` and `load_promoted` load the
model when called.
"""
from tasks.answering.ask import Answer, ask
from tasks.answering.ground import Grounding, MarketView, ground, grounded_prompt
from tasks.answering.loading import BaseModelMismatchError, load_promoted

__all__ = ["Answer", "BaseModelMismatchError", "Grounding", "MarketView", "ask", "ground", "grounded_prompt",
           "load_promoted"]
