"""daily-retrain: one trading day of niftytune, top to bottom.

    niftytune run --home var                       # today (Asia/Kolkata), live Yahoo data
    niftytune run --home var/demo --source synthetic --as-of 2026-11-20
    niftytune serve --home var                     # the same flow, 18:00 IST Mon-Fri

session -> fetch -> samples -> train -> score -> gate -> register -> report. A day that is not
an NSE session finishes Completed as a reported skip; a session that already has a decision is
a no-op unless `force`; a failure at any stage leaves the market store and the registry as
they were. Stages pass paths and small records, never models or DataFrames.
"""
from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from common.timing import Stopwatch
from flows.fetch_market import fetch_and_commit
from flows.progress import send_module_logs_to_run
from flows.steps import (build_sample_files, publish_noop, publish_run, publish_skip, register_candidate,
                         resolve_trading_session, score_candidate, train_candidate)
from tasks import reporting
from tasks.config import Config, load_config, resolve_home, select_tickers
from tasks.housekeeping import tidy_home
from tasks.market import data as market_data
from tasks.promotion import decide_promotion, existing_decision
from tasks.runlock import run_lock
from tasks.training.train import check_training_extras


def _operator_form(schema: dict[str, Any]) -> None:
    """Render every optional field as a plain input: Prefect's form shows `X | None` as a choice
    of types that opens on "None" with no input, so the null branch is dropped (an empty field
    is left out of the run's parameters and takes the default the description states)."""
    for prop in schema.get("properties", {}).values():
        branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
        if len(branches) == 1 and len(prop["anyOf"]) == 2:
            del prop["anyOf"]
            prop.update(branches[0])
            if prop.get("default", "") is None:  # a null default would be sent as null
                del prop["default"]


class RetrainParameters(BaseModel):
    """What this run does. Leave a field empty to use its default."""

    model_config = ConfigDict(json_schema_extra=_operator_form)

    as_of: date | None = Field(None, description="Trading day to run for. Default: today in Asia/Kolkata.")
    source: Literal["yahoo", "csv", "synthetic"] | None = Field(
        None, description="Where market data comes from: yahoo (live), csv (a folder of files) or "
                          "synthetic (offline). Default: the profile's (yahoo).")
    csv_dir: str | None = Field(None, description="Folder of TICKER.csv files, for source csv only. "
                                                  "Default: none.")
    tickers: list[str] | None = Field(None, description="Symbols to use instead of the profile's list, "
                                                        "e.g. ^NSEI and TCS.NS. Default: the profile's list.")
    profile: str | None = Field(None, description="Settings profile: cpu, gpu, laptop-4gb or a YAML file's "
                                                  "path. Default: gpu on a CUDA machine, else cpu.")
    base_model: str | None = Field(None, description="Model to fine-tune: a Hugging Face id or a folder. "
                                                     "Default: the profile's (embedded SmolLM2-135M).")
    base_revision: str | None = Field(None, description="Commit to pin a Hugging Face base model to. "
                                                        "Default: none (the profile's).")
    min_delta: float | None = Field(None, ge=0, allow_inf_nan=False,
                                    description="Validation-loss improvement a new adapter needs to be "
                                                "promoted. Default: the profile's (0.005).")
    max_steps: int | None = Field(None, description="Most training steps (-1: no cap). Default: the "
                                                    "profile's (cpu 8, gpu no cap).")
    max_train_samples: int | None = Field(None, ge=1, description="Most grounded training conversations. "
                                                                  "Default: the profile's (cpu 32, gpu 2500).")
    force: bool = Field(False, description="Retrain a day that already has a decision. Default: off.")
    dry_run: bool = Field(False, description="Train, score and decide, but register nothing. Default: off.")
    home: str | None = Field(None, description="Folder of the market data, adapters and registry. Default: "
                                               "the deployment's (`niftytune serve --home`).")

    def config(self) -> Config:
        """The profile with these parameters applied."""
        overrides = {"market.source": self.source, "market.csv_dir": self.csv_dir,
                     "training.base_model": self.base_model, "training.base_revision": self.base_revision,
                     "gate.min_delta": self.min_delta, "training.max_steps": self.max_steps,
                     "samples.max_train_samples": self.max_train_samples}
        return select_tickers(load_config(self.profile, overrides), self.tickers)


# log_prints stays off: libraries print to stdout on purpose (dill captures dis output) and
# Prefect would turn that into log noise.
@flow(name="daily-retrain")
def daily_retrain(params: Annotated[RetrainParameters, Field(json_schema_extra={"title": "Run settings"})]
                  ) -> reporting.RunSummary:
    """Fetch, sample, train, score, gate and register one trading session.

    Args:
        params: What this run does; an empty field takes the default its description states.
    """
    log = get_run_logger()
    send_module_logs_to_run()  # the stages' own loggers (progress, dropped rows, skips) show in the UI
    home, cfg = resolve_home(params.home), params.config()
    timer = Stopwatch(log, digits=2)
    t = cfg.training
    log.info("profile %s: base %s, %s, %d tickers from %s, max_steps %s, min_delta %s (full config at DEBUG "
             "and in each registered version's manifest)", cfg.profile, t.base_model,
             "4-bit NF4 QLoRA" if t.load_in_4bit else "LoRA", len(cfg.market.tickers), cfg.market.source,
             t.max_steps, cfg.gate.min_delta)
    log.debug("config: %s", cfg.model_dump_json())
    check_training_extras(t)  # a missing optional package fails now, not after the fetch

    # 1. Which session? A weekend or an NSE holiday is a clean, reported skip.
    with timer("session"):
        session = resolve_trading_session(params.as_of or market_data.today_in_kolkata(), cfg.market)
    if not session.is_session:
        return publish_skip(home, session, f"skipped: not a trading day ({session.reason})")

    # One writer at a time, also for runs started outside the deployment; first clean up what
    # killed runs left (and finish a promotion one decided), before anything can fill the disk.
    with run_lock(home):
        for line in tidy_home(home, registry=not params.dry_run):
            log.warning("cleaned up: %s", line)
        # 2. Idempotent per session: a decided session is a no-op unless forced.
        previous = existing_decision(home, session.session)
        if previous and not params.force:
            return publish_noop(home, session, previous)

        with market_data.store_snapshot(home):  # restores the store if anything below fails
            # 3. Fetch the new bars (retried on transient faults) and merge them atomically.
            with timer("fetch"):
                coverage = fetch_and_commit(home, cfg, session)
            # 4. Regenerate the chat samples from the stored window.
            with timer("samples"):
                sample_set = build_sample_files(home, cfg, session.session)
            # 5. Train a fresh adapter from the base model (scratch dir cleaned on failure).
            with timer("train"):
                candidate = train_candidate(home, cfg, sample_set)
            try:
                # 6. Score base, champion and candidate on the same val.jsonl, in one process.
                with timer("score"):
                    scores = score_candidate(home, cfg, candidate, sample_set)
                # 7. Gate: promote only on an improvement of at least min_delta.
                decision = decide_promotion(scores, cfg.gate.min_delta, cfg.gate.max_accuracy_drop)
                reporting.log_decision(scores, decision)
                # 8. Register the candidate as evaluated; move the pointer only on promote.
                with timer("register"):
                    version = None if params.dry_run else register_candidate(
                        home, cfg, candidate, sample_set, scores, decision, coverage)
            finally:
                reporting.remove_run_dir(candidate)

    # 9. Report: decision, coverage, accuracy and the registered version as artifacts.
    return publish_run(home, session, coverage, sample_set, scores, decision, version, timer,
                                 params.dry_run)
