"""The `niftytune` command line (issue 6): every subcommand documents --home; bad input fails
with one clear line and a usage exit status, before anything is written."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from flows.cli import build_parser, main
from tests.flows.conftest import file_digests


def subcommands() -> list[list[str]]:
    """Every subcommand path of the parser: `fetch`, ..., `registry`, `registry list`, ..."""
    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += [prefix + [name]] + walk(sub, prefix + [name])
        return found

    return walk(build_parser(), [])


@pytest.fixture(autouse=True)
def restored_environ():
    """The CLI exports settings for the home it resolves (PREFECT_HOME, ...): keep them out of the
    rest of the test session."""
    with mock.patch.dict(os.environ):
        yield


@pytest.mark.parametrize("command", subcommands(), ids=" ".join)
def test_every_subcommand_help_exits_0_and_documents_home(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main(command + ["--help"])
    assert exited.value.code == 0
    assert "--home" in capsys.readouterr().out


def test_registry_on_an_empty_home_lists_nothing_says_there_is_no_champion_and_writes_nothing(tmp_path, capsys):
    # As the README and `make demo` write it: `niftytune registry list --home DIR`.
    home = str(tmp_path)
    assert main(["registry", "list", "--home", home]) == 0
    assert capsys.readouterr().out.split() == ["VERSION", "CREATED", "DECISION", "LOSS", "BASELINE", "DELTA", "PARENT"]
    assert main(["registry", "list", "--json", "--home", home]) == 0 and capsys.readouterr().out.strip() == "[]"
    assert main(["registry", "promoted", "--home", home]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and f"no champion in {tmp_path / 'registry'}" in captured.err
    assert list(tmp_path.iterdir()) == []  # a query creates no registry


@pytest.mark.parametrize("command", [["run", "--as-of", "2019-13-45"], ["backfill", "--from", "2019-13-45",
                                                                          "--to", "2019-11-29"]],
                         ids=["run --as-of", "backfill --from"])
def test_bad_date_is_a_usage_error_naming_the_value(command, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(command + ["--home", str(tmp_path)])
    assert exited.value.code == 2
    assert "not a date (YYYY-MM-DD): '2019-13-45'" in capsys.readouterr().err


def test_bad_date_exits_2_from_the_command_line(tmp_path):
    script = Path(sys.executable).with_name("niftytune")  # the installed console script
    command = [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]
    result = subprocess.run(command + ["run", "--home", str(tmp_path), "--as-of", "tomorrow"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not a date (YYYY-MM-DD): 'tomorrow'" in result.stderr


def test_csv_source_without_csv_dir_fails_clearly_and_changes_nothing(tmp_path, capsys):
    home = tmp_path / "home"
    (home / "market").mkdir(parents=True)
    (home / "market" / "TCS.NS.csv").write_text("stored bars\n")
    before = file_digests(home), sorted(p.name for p in home.rglob("*"))
    code = main(["fetch", "--home", str(home), "--source", "csv"])
    err = capsys.readouterr().err
    assert code == 2 and "niftytune fetch: error" in err and "--csv-dir" in err  # a user error
    assert (file_digests(home), sorted(p.name for p in home.rglob("*"))) == before
