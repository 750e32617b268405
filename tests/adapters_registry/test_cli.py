"""`python -m adapters_registry`: tables by default, JSON with --json, exit status for verify."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters_registry import Registry
from adapters_registry.cli import add_commands, build_parser, main, run_command
from tests.adapters_registry.fakes import decision, lineage, make_fake_adapter

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path):
    registry = Registry(tmp_path / "home")
    for seed, promote in enumerate([True, False, True], start=1):
        registry.register(make_fake_adapter(tmp_path / f"a{seed}", seed), lineage(), decision(promote), promote=promote)
    return registry.home


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_list_marks_the_champion(home, capsys):
    code, out = run(capsys, "--home", str(home), "list")
    assert code == 0 and "VERSION" in out and "* v0003-" in out and "reject" in out
    code, out = run(capsys, "--home", str(home), "list", "--json")
    assert [v["champion"] for v in json.loads(out)] == [False, False, True]


def test_promoted_show_history_and_champion_at(home, capsys):
    registry = Registry(home)
    champion = registry.champion()
    assert run(capsys, "--home", str(home), "promoted") == (0, champion.version + "\n")
    assert run(capsys, "--home", str(home), "promoted", "--path") == (0, f"{champion.path}\n")
    shown = json.loads(run(capsys, "--home", str(home), "show", champion.version, "--json")[1])
    assert shown["version"] == champion.version and shown["lineage"]["scores"]["val_hash"]
    code, out = run(capsys, "--home", str(home), "show", champion.version)
    assert code == 0 and "val set" in out and "adapter_model.safetensors" in out
    assert [e["event"] for e in json.loads(run(capsys, "--home", str(home), "history", "--json")[1])][:2] == \
        ["register", "promote"]
    first_move = registry.history()[1].time.isoformat()
    assert json.loads(run(capsys, "--home", str(home), "champion-at", first_move, "--json")[1])["version"] == \
        registry.list()[0].version
    assert run(capsys, "--home", str(home), "champion-at", "2000-01-01T00:00:00+00:00")[0] == 1


def test_rollback_needs_a_reason_and_logs_it(home, capsys):
    first = Registry(home).list()[0].version
    with pytest.raises(SystemExit):
        main(["--home", str(home), "rollback", first])
    code, out = run(capsys, "--home", str(home), "rollback", first, "--reason", "bad answers")
    assert code == 0 and Registry(home).champion().version == first
    assert Registry(home).history()[-1].reason == "bad answers"


def test_verify_exit_status_is_non_zero_on_a_mismatch(home, capsys):
    assert run(capsys, "--home", str(home), "verify")[0] == 0
    weights = Registry(home).list()[1].path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"X")
    code, out = run(capsys, "--home", str(home), "verify", "--json")
    assert code == 1 and not json.loads(out)["ok"] and "adapter_model.safetensors" in out


def test_errors_are_one_line_with_status_2(home, capsys):
    assert main(["--home", str(home), "show", "v0042-20191129-deadbeef"]) == 2
    assert "error: no version" in capsys.readouterr().err


def test_module_entry_point_and_home_from_the_environment(home):
    env = {**os.environ, "NIFTYTUNE_HOME": str(home), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "adapters_registry", "promoted"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("v0003-")


def test_the_parser_mounts_under_another_cli(home, capsys):
    top = argparse.ArgumentParser(prog="niftytune")
    top.add_argument("--home")
    build_parser(top.add_subparsers(dest="command"))
    args = top.parse_args(["--home", str(home), "registry", "promoted"])
    assert args.func(args) == 0 and capsys.readouterr().out.startswith("v0003-")


def test_the_commands_mount_on_a_parser_that_already_has_home(home, capsys):
    top = argparse.ArgumentParser(prog="niftytune")
    registry = top.add_subparsers(dest="command").add_parser("registry")
    registry.add_argument("--home")
    add_commands(registry)
    args = top.parse_args(["registry", "--home", str(home), "list", "--json"])
    assert run_command(args) == 0 and len(json.loads(capsys.readouterr().out)) == 3
