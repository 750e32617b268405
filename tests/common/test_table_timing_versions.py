"""common.table, common.timing, common.versions, common.home."""
from __future__ import annotations

import logging

from common.home import resolve_home
from common.table import format_table
from common.timing import Stopwatch
from common.versions import library_versions


def test_a_table_pads_each_column_to_its_widest_cell_without_trailing_spaces():
    text = format_table([["v0001", "promote", 0.5], ["v0002-long", "reject", "-"]], ["VERSION", "DECISION", "LOSS"])
    assert text.splitlines() == ["VERSION     DECISION  LOSS",
                                 "v0001       promote   0.5",
                                 "v0002-long  reject    -"]


def test_a_table_aligns_columns_right_and_keeps_minimum_widths():
    text = format_table([["close", 12, 3]], ["family", "train", "val"], align="<>>", min_widths=(8, 6, 5),
                        sep="", indent="  ")
    assert text.splitlines() == ["  family   train  val", "  close       12    3"]


def test_an_empty_table_is_its_header_or_nothing():
    assert format_table([], ["a", "bb"]) == "a  bb"
    assert format_table([]) == ""


def test_a_stopwatch_adds_up_the_wall_time_of_each_stage(caplog):
    stopwatch = Stopwatch(logging.getLogger("t"), digits=2)
    with caplog.at_level(logging.INFO):
        with stopwatch("load"):
            pass
        with stopwatch("load"):
            pass
    assert set(stopwatch.seconds) == {"load"} and stopwatch.seconds["load"] >= 0
    assert "stage load: started" in caplog.text and "stage load:" in caplog.text


def test_library_versions_name_python_and_leave_out_what_is_not_installed():
    found = library_versions(("pydantic", "no-such-package-niftytune"))
    assert set(found) == {"python", "pydantic"}


def test_resolve_home_prefers_the_argument_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NIFTYTUNE_HOME", str(tmp_path / "env"))
    assert resolve_home(tmp_path / "arg") == (tmp_path / "arg").resolve() and (tmp_path / "arg").is_dir()
    assert resolve_home() == (tmp_path / "env").resolve()


def test_prefect_yaml_declares_the_one_schedule():
    """deployments/prefect.yaml is YAML and cannot import common.schedule: it must say the same."""
    from pathlib import Path

    import yaml

    from common.schedule import CRON, TIMEZONE

    declared = yaml.safe_load((Path(__file__).resolve().parents[2] / "deployments" / "prefect.yaml").read_text())
    schedules = [s for d in declared["deployments"] for s in d.get("schedules", [])]
    assert schedules and all((s["cron"], s["timezone"]) == (CRON, TIMEZONE) for s in schedules)
