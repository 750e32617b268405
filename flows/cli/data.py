"""`niftytune fetch`, `samples`, `train`: one stage of the daily flow each, without Prefect's
run (fetch uses its tasks), writing the home under its lock."""
from __future__ import annotations

from datetime import date

import typer

from flows.cli.common import AsOf, ConfigChoice, Debug, Home, as_of_or_today, flow_logs, prepare_home, progress, \
    register
from tasks.config import Config

app = typer.Typer()


def _checked(config: ConfigChoice, as_of: date | None) -> Config:
    """The resolved config; a bad flag, profile or date fails before anything is created."""
    from flows.preflight import check_not_future

    check_not_future(as_of, "--as-of")
    return config.resolve()


@register(app, "fetch", "fetch new trading days into the market store",
          "Fetch the bars after the store's last session (with a small overlap), validate them, and merge them "
          "into NIFTYTUNE_HOME/market/ atomically. A first run backfills market.backfill_sessions sessions. "
          "Prints a per-ticker summary.", config=True)
def fetch(config: ConfigChoice, as_of: AsOf = None, home: Home = None, debug: Debug = False) -> int:
    cfg = _checked(config, as_of)
    path = prepare_home(home)
    flow_logs(debug)
    from flows.fetch_market import format_fetch_report, run_fetch
    from tasks.market.data import CoverageError
    from flows.preflight import writing

    try:
        with writing(path), progress(f"fetching {len(cfg.market.tickers)} tickers from {cfg.market.source}"):
            report = run_fetch(path, cfg, as_of)
    except CoverageError as exc:  # nothing was stored; show what each ticker got and why
        print(format_fetch_report(exc.report))
        raise
    print(format_fetch_report(report))
    return 0


@register(app, "store", "show what the market store holds (read-only)",
          "Print each stored ticker's first and last session, number of sessions, latest close and day change, "
          "from NIFTYTUNE_HOME/market/. Reads only: no fetch, no lock, no Prefect.")
def store(home: Home = None, debug: Debug = False) -> int:
    from common.home import stored_home
    from tasks.config import load_config
    from tasks.market.summary import format_store

    names = {t.symbol: t.name for t in load_config().market.tickers}
    print(format_store(stored_home(home), names))
    return 0


@register(app, "samples", "build train/validation chat samples from the store",
          "Build chat samples (system, user, assistant) as of a session from the stored bars, write "
          "samples/<session>/train.jsonl and val.jsonl, and print counts per family, hashes and two "
          "conversations rendered through the base model's chat template.", config=True)
def samples(config: ConfigChoice, as_of: AsOf = None, home: Home = None, debug: Debug = False) -> int:
    cfg = _checked(config, as_of)
    path = prepare_home(home)
    from flows.preflight import writing
    from tasks.samples.build import build_samples, format_sample_report
    from tasks.training.base_model import load_tokenizer, resolve_base_model

    with writing(path, prefect=False), progress("building samples"):
        sample_set = build_samples(path, cfg, as_of_or_today(as_of))
    tokenizer = load_tokenizer(resolve_base_model(cfg.training, path))
    print(format_sample_report(sample_set, tokenizer))
    return 0


@register(app, "train", "train one LoRA/QLoRA adapter on a session's samples",
          "Build (or reuse) the session's samples and train a fresh adapter from the base model; where the "
          "profile evaluates during training (training.eval_steps), with early stopping and the best "
          "checkpoint restored. Writes runs/<run-id>/adapter/. Does not touch the registry (see `niftytune run`).",
          config=True)
def train(config: ConfigChoice, as_of: AsOf = None, home: Home = None, debug: Debug = False) -> int:
    cfg = _checked(config, as_of)
    path = prepare_home(home)
    from flows.preflight import writing
    from tasks.samples.build import build_samples
    from tasks.training.train import format_candidate, train_adapter

    with writing(path, prefect=False):
        with progress("building samples"):
            sample_set = build_samples(path, cfg, as_of_or_today(as_of))
        with progress(f"training an adapter on {cfg.training.base_model}"):
            candidate = train_adapter(path, cfg, sample_set)
    print(format_candidate(candidate))
    return 0
