"""`niftytune ask` and `api`: answers from the champion (or a named version), grounded on the
market store as the samples are."""
from __future__ import annotations

import json
import os
import sys
from datetime import date
from typing import Annotated, Optional

import typer

from flows.cli.common import Debug, Home, date_option, prepare_home, progress, register

app = typer.Typer()


def _where(answer) -> str:
    from tasks.samples.format import session_words

    if answer.grounding is None:
        known = "base model knows" if answer.version == "base" else "adapter learned"
        return f"closed-book: from what the {known}, no data sheet"
    return "no data for this question" if answer.refused else \
        f"figures from the session of {session_words(answer.session)}"


def _answer_json(answer) -> str:
    grounding = answer.grounding
    return json.dumps({"text": answer.text, "version": answer.version, "session": answer.session,
                       "refused": answer.refused, "closed_book": grounding is None,
                       "symbols": list(grounding.symbols) if grounding else [],
                       "sheet": grounding.sheet if grounding else None}, indent=2, default=str)


@register(app, "ask", "ask the promoted adapter a question",
          "Answer with the promoted (or named) adapter, grounded: the question's ticker(s) (names, symbols with or "
          "without .NS, aliases such as SBI, Nifty, RIL) and session (\"on 19 June\", \"yesterday\", \"last "
          "Friday\"; none: the latest) are read from the market store and their data sheet put into the prompt. A "
          "ticker or session the store does not hold gets that statement and no figure. Prints which version "
          "answered and which session the figures come from (--json: all of it, machine-readable).")
def ask(question: Annotated[str, typer.Argument(help="the question, e.g. \"What did NIFTY 50 close at?\"")],
        version: Annotated[Optional[str], typer.Option(
            "--version", help="answer with this registered version instead of the champion")] = None,
        closed_book: Annotated[bool, typer.Option(
            "--closed-book", help="answer without a data sheet, from what the adapter learned in training")] = False,
        today: Annotated[Optional[date], date_option(
            "--today", "the day the question is asked on, for \"yesterday\" and \"last Friday\" (default: today "
                       "in Asia/Kolkata)")] = None,
        show_sheet: Annotated[bool, typer.Option("--show-sheet", help="print the data sheet the answer was given")]
        = False,
        max_new_tokens: Annotated[int, typer.Option(
            "--max-new-tokens", help="answer length limit in tokens (default 320: answers end at the end of their "
                                     "turn, and the longest the samples teach, market summaries, run to ~220)")] = 320,
        json_: Annotated[bool, typer.Option("--json", help="print the answer, version, session, refusal and data "
                                                           "sheet as JSON (machine-readable)")] = False,
        home: Home = None, debug: Debug = False) -> int:
    path = prepare_home(home)
    from tasks.answering import ask as answer_question

    with progress("answering"):
        answer = answer_question(path, question, version=version, closed_book=closed_book, today=today,
                                 max_new_tokens=max_new_tokens)
    if json_:
        print(_answer_json(answer))
        return 0
    who = "base model (no champion)" if answer.version == "base" else answer.version
    print(f"[{who} · {_where(answer)}] {answer.text}")
    if show_sheet and answer.grounding is not None and answer.grounding.sheet:
        print("\n" + answer.grounding.sheet)
    return 0


@register(app, "api", "serve the champion behind an OpenAI-compatible answer API",
          "Serve the champion (model `niftytune-champion`) and every registered version that verifies (by id) at "
          "/v1/models and /v1/chat/completions, streaming or not: the last user message is answered grounded, as "
          "`ask` answers it, and the body and the X-Niftytune-Version / X-Niftytune-Session headers say which "
          "version answered and which session its figures come from. A promotion or rollback is followed without "
          "a restart; a version that fails verification is never served (GET /health says why). With "
          "NIFTYTUNE_API_TOKEN set, /v1 requests need `Authorization: Bearer <token>`.")
def api(host: Annotated[str, typer.Option("--host", help="bind address (127.0.0.1: this machine only; another "
                                                         "address needs NIFTYTUNE_API_TOKEN or --allow-no-token)")]
        = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="port")] = 8000,
        allow_no_token: Annotated[bool, typer.Option(
            "--allow-no-token", help="serve a non-loopback --host without NIFTYTUNE_API_TOKEN (anyone who reaches "
                                     "it may ask)")] = False,
        poll_seconds: Annotated[float, typer.Option(
            "--poll-seconds", help="how often champion.json is read to follow promotions and rollbacks")] = 2.0,
        max_batch: Annotated[int, typer.Option(
            "--max-batch", help="most questions answered in one batch when they wait together (1: one at a "
                                "time)")] = 8,
        home: Home = None, debug: Debug = False) -> int:
    path = prepare_home(home)
    from tasks.answering.api import TOKEN_ENV, is_loopback, run_api
    from flows.preflight import UserError

    token = os.environ.get(TOKEN_ENV) or None
    if not token and not is_loopback(host):
        if not allow_no_token:
            raise UserError(f"--host {host} is reachable from other machines: set {TOKEN_ENV} (clients then "
                            f"send `Authorization: Bearer <token>`), or pass --allow-no-token to serve without one")
        print(f"WARNING: niftytune api answers anyone who can reach {host}:{port}: no {TOKEN_ENV} is set",
              file=sys.stderr)
    run_api(path, host=host, port=port, token=token, poll_seconds=poll_seconds, max_batch=max_batch)
    return 0
