"""Config overrides (issue 14): every leaf of the Config is settable from the command line with
`--set section.field=value`, the named flags set the same fields as `--set` and as the flow's
parameters of the same name, and a bad key or value is one clear line before anything is written.
Parse only: the flow is replaced by one that records its parameters."""
from __future__ import annotations

import os
import typing
from datetime import date
from unittest import mock

import pytest
from pydantic import ValidationError

from flows import daily_retrain
from flows.cli import common, main
from flows.daily_retrain import RetrainParameters
from flows import processes
from tasks import overrides
from tasks.config import load_config
from tasks.reporting import RunSummary

SESSION = date(2025, 3, 28)
# Texts tried, in order, for a field's new value: the first the config accepts and that changes it.
TEXTS = ["true", "false", "7", "64", "200", "1", "0.5", "0", "null", "/tmp/replay", "[q_proj]", "[2026-11-14]", "[TCS.NS]",
         "[{symbol: TCS.NS, name: TCS, kind: stock}]", "some-text"]
# A field the config accepts changed only together with another (fused LoRA layers have no dropout).
COMPANIONS = {"training.fused_lora": ["training.lora_dropout=0"]}


def literals(annotation) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return [text for arg in typing.get_args(annotation) for text in literals(arg)]


def dotted(cfg, path: str):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def new_value_text(path: str) -> tuple[str, object]:
    """A `--set` text that changes `path` in the cpu profile, and the value it gives."""
    default = dotted(load_config("cpu"), path)
    for text in literals(overrides.leaf_fields()[path].annotation) + TEXTS:
        try:
            sets = [*COMPANIONS.get(path, []), f"{path}={text}"]
            value = dotted(load_config("cpu", dict(overrides.parse_set(s) for s in sets)), path)
        except (ValidationError, ValueError):
            continue
        if value != default:
            return text, value
    raise AssertionError(f"no value found that changes {path}")


@pytest.fixture
def flow_params(monkeypatch):
    """`niftytune run` up to the flow, whose parameters are recorded instead of run."""
    received = []

    def flow(params):
        received.append(params)
        return RunSummary(SESSION, SESSION, "dry-run", "test")

    monkeypatch.setattr(common, "prefect_api", lambda: None)
    monkeypatch.setattr(processes, "start_ephemeral_prefect", lambda: None)
    monkeypatch.setattr(daily_retrain, "daily_retrain", flow)
    with mock.patch.dict(os.environ):  # the CLI exports PREFECT_HOME and friends for its home
        yield received


def run(tmp_path, *flags: str) -> int:
    return main(["run", "--home", str(tmp_path / "home"), "--profile", "cpu", "--as-of", str(SESSION), "--dry-run",
                 *flags])


@pytest.mark.parametrize("path", sorted(overrides.leaf_fields()))
def test_every_config_field_is_settable_from_the_command_line_and_reaches_the_flow(path, tmp_path, flow_params):
    text, value = new_value_text(path)
    sets = [*COMPANIONS.get(path, []), f"{path}={text}"]
    assert run(tmp_path, *[flag for s in sets for flag in ("--set", s)]) == 0
    [params] = flow_params
    assert params.overrides == dict(overrides.parse_set(s) for s in sets)
    assert dotted(params.config(), path) == value


@pytest.mark.parametrize("named", overrides.NAMED, ids=lambda n: n.flag)
def test_a_named_flag_sets_the_same_field_as_set_and_as_the_flow_parameter_of_its_name(named, tmp_path,
                                                                                        flow_params):
    text, value = new_value_text(named.path)
    assert run(tmp_path, named.flag, text) == 0
    assert run(tmp_path, "--set", f"{named.path}={text}") == 0
    by_flag, by_set = flow_params
    assert getattr(by_flag, named.param) is not None and by_flag.overrides is None
    assert dotted(by_flag.config(), named.path) == dotted(by_set.config(), named.path) == value
    assert dotted(RetrainParameters(**{named.param: getattr(by_flag, named.param)}).config(), named.path) == value


def test_the_flow_parameters_are_the_named_overrides_and_the_run_settings():
    run_settings = {"as_of", "tickers", "profile", "overrides", "force", "dry_run", "home"}
    assert set(RetrainParameters.model_fields) == run_settings | {o.param for o in overrides.NAMED}
    assert all(o.path in overrides.leaf_fields() for o in overrides.NAMED)


def test_a_bad_key_is_a_usage_error_naming_it_and_writes_nothing(tmp_path, flow_params, capsys):
    with pytest.raises(SystemExit) as exited:
        run(tmp_path, "--set", "training.max_stepz=3")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "no config field 'training.max_stepz'" in err and "training.max_steps" in err
    assert not (tmp_path / "home").exists() and flow_params == []


@pytest.mark.parametrize("flags, words", [
    (["--set", "training.lora_r=zero"], ["training.lora_r", "valid integer"]),
    (["--set", "market.source=bloomberg"], ["market.source", "'yahoo'"]),
    (["--max-steps", "3", "--set", "training.max_steps=5"], ["training.max_steps given twice", "--max-steps 3"]),
], ids=["not an integer", "not a choice", "given twice"])
def test_a_bad_value_is_one_line_naming_the_key_and_writes_nothing(flags, words, tmp_path, flow_params, capsys):
    assert run(tmp_path, *flags) == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if "niftytune run: error:" in line]
    assert all(word in line for word in words), line
    assert not (tmp_path / "home").exists() and flow_params == []


def test_a_flow_run_with_an_unknown_override_is_refused_naming_it():
    with pytest.raises(ValidationError, match="no config field 'training.nope'"):
        RetrainParameters(overrides={"training.nope": 1})
