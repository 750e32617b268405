"""`python -m adapters_registry`: tables by default, JSON with --json, exit status for verify."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from adapters_registry import Registry
from adapters_registry.cli import READ_COMMANDS, build_app, main
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


def mounted(write_guard=None) -> typer.Typer:
    """Another CLI with the registry's app mounted as `registry`, as `niftytune` mounts it."""
    top = typer.Typer()
    top.callback()(lambda: None)
    top.add_typer(build_app(write_guard), name="registry")
    return top


def invoke(app: typer.Typer, *argv: str):
    command = typer.main.get_command(app)
    with command.make_context("niftytune", list(argv)) as ctx:
        return command.invoke(ctx)


@pytest.mark.parametrize("argv", [["registry", "--home", "{home}", "promoted"], ["registry", "promoted", "--home", "{home}"]],
                         ids=["home before", "home after"])
def test_the_app_mounts_under_another_cli_with_home_before_or_after_the_command(home, argv, capsys):
    assert invoke(mounted(), *[a.format(home=home) for a in argv]) == 0
    assert capsys.readouterr().out.startswith("v0003-")


def test_a_mounting_cli_holds_its_guard_around_a_rollback(home, capsys):
    held = []

    @contextlib.contextmanager
    def guard(path):
        held.append(path)
        yield

    first = Registry(home).list()[0].version
    assert invoke(mounted(guard), "registry", "rollback", first, "--reason", "test", "--home", str(home)) == 0
    assert held == [home.resolve()] and Registry(home).champion().version == first


@pytest.mark.parametrize("command", READ_COMMANDS)
def test_every_read_command_documents_json(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0 and "--json" in capsys.readouterr().out


def test_promoted_json_is_the_champions_manifest(home, capsys):
    code, out = run(capsys, "--home", str(home), "promoted", "--json")
    assert code == 0 and json.loads(out)["version"] == Registry(home).champion().version
