"""flows.processes.importing_meanwhile: a run's imports overlap Prefect's server start."""
from __future__ import annotations

import sys
import threading

from flows import processes


def test_modules_are_imported_in_another_thread_during_the_block_and_ready_after_it(tmp_path, monkeypatch):
    (tmp_path / "slow_module_for_warmup.py").write_text(
        "import threading\nTHREAD = threading.current_thread().name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_module_for_warmup", raising=False)
    with processes.importing_meanwhile(["slow_module_for_warmup"]):
        body = threading.current_thread().name
    module = sys.modules["slow_module_for_warmup"]
    assert module.THREAD == "niftytune-imports" != body


def test_a_module_that_fails_to_import_is_left_for_the_real_import_to_report(tmp_path, monkeypatch):
    (tmp_path / "broken_module_for_warmup.py").write_text("raise RuntimeError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with processes.importing_meanwhile(["broken_module_for_warmup", "json"]):
        pass
    assert "broken_module_for_warmup" not in sys.modules
