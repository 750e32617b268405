"""The registry's behaviour: decisions move the pointer, the ledger and champion_at agree with
them, rollback, verification, retention, and the format's guards."""
from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from adapters_registry import (ChampionChangedError, Registry, RegistryCorruptError, RegistryIntegrityError,
                               VersionNotFoundError)
from tasks.answering import load_promoted
from adapters_registry.format import FORMAT_FILE, LEDGER_FILE, MANIFEST_FILE, VERSION_ID
from tests.adapters_registry.fakes import FAKE_FILES, decision, lineage, make_fake_adapter


def now() -> datetime:
    return datetime.now(timezone.utc)


def flip_byte(path: Path, offset: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def three_runs(tmp_path):
    """Candidates registered better (promoted), worse (rejected), better (promoted), with the
    times between them."""
    registry, times = Registry(tmp_path / "home"), [now()]
    plan = [(0.9, True, "base"), (1.1, False, "champion"), (0.7, True, "champion")]
    versions = []
    for seed, (loss, promote, baseline) in enumerate(plan, start=1):
        adapter = make_fake_adapter(tmp_path / f"run{seed}" / "adapter", seed)
        versions.append(registry.register(adapter, lineage(loss), decision(promote, baseline), promote=promote).version)
        times.append(now())
    return registry, versions, times


def test_pointer_ledger_and_champion_at_follow_the_decisions(three_runs):
    registry, (v1, v2, v3), times = three_runs
    assert registry.champion().version == v3
    assert [(e.event, e.version) for e in registry.history()] == [
        ("register", v1), ("promote", v1), ("register", v2), ("register", v3), ("promote", v3)]
    assert [e.decision.promote for e in registry.history() if e.event == "register"] == [True, False, True]
    assert [registry.champion_at(t) for t in times] == [None, v1, v1, v3]
    assert registry.get(v2).manifest.parent == v1 and registry.get(v3).manifest.parent == v1
    assert registry.verify() == []


def test_version_ids_are_sortable_and_readable(three_runs):
    registry, versions, _ = three_runs
    assert all(VERSION_ID.match(v) and v.split("-")[1] == "20191129" for v in versions)
    assert [v.version for v in registry.list()] == sorted(versions) == versions


def test_manifest_records_hashes_and_lineage(three_runs):
    registry, (v1, _, _), _ = three_runs
    manifest = json.loads((registry.get(v1).path / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == set(FAKE_FILES)  # README.md of the run is not kept
    lineage_ = manifest["lineage"]
    assert lineage_["scores"]["val_hash"] and lineage_["tokenizer_hash"] and lineage_["chat_template_hash"]
    assert lineage_["library_versions"]["python"] and lineage_["config"]["gate"]["min_delta"] == 0.005
    assert manifest["decision"]["promote"] is True and manifest["parent"] is None


def test_rollback_moves_the_pointer_back_and_is_logged_with_its_reason(three_runs):
    registry, (v1, _, v3), times = three_runs
    registry.rollback(v1, reason="v3 quotes stale prices")
    assert registry.champion().version == v1
    last = registry.history()[-1]
    assert (last.event, last.version, last.previous, last.reason) == ("rollback", v1, v3, "v3 quotes stale prices")
    assert registry.champion_at(times[-1]) == v3 and registry.champion_at(now()) == v1


def test_rollback_refuses_a_rejected_version_and_a_missing_reason(three_runs):
    registry, (v1, v2, _), _ = three_runs
    with pytest.raises(ValueError, match="rejected"):
        registry.rollback(v2, reason="try it")
    with pytest.raises(ValueError, match="reason"):
        registry.rollback(v1, reason=" ")


@pytest.mark.parametrize("name", FAKE_FILES + (MANIFEST_FILE,))
def test_verify_catches_a_flipped_byte_and_load_promoted_refuses_it(three_runs, name):
    registry, (_, _, v3), _ = three_runs
    flip_byte(registry.get(v3).path / name, offset=2)
    problems = registry.verify()
    assert problems and any(name in p or MANIFEST_FILE in p for p in problems)
    with pytest.raises((RegistryIntegrityError, RegistryCorruptError)):
        load_promoted(registry.home)


def test_verify_reports_an_extra_or_missing_file(three_runs):
    registry, (v1, v2, _), _ = three_runs
    (registry.get(v1).path / "notes.txt").write_text("x")
    (registry.get(v2).path / "tokenizer.json").unlink()
    problems = registry.verify()
    assert any("notes.txt" in p and "not listed" in p for p in problems)
    assert any("tokenizer.json" in p and "missing" in p for p in problems)


def test_verify_reports_a_registered_version_that_vanished(three_runs):
    import shutil
    registry, (_, v2, _), _ = three_runs
    shutil.rmtree(registry.get(v2).path)
    assert any(v2 in p and "missing" in p for p in registry.verify())


def test_prune_keeps_champion_last_promoted_and_last_rejected(tmp_path):
    registry = Registry(tmp_path)
    outcomes = [True, False, True, False, True, False]
    versions = [registry.register(make_fake_adapter(tmp_path / f"a{i}", i), lineage(), decision(p), promote=p).version
                for i, p in enumerate(outcomes)]
    registry.rollback(versions[0], reason="back to the first")
    pruned = registry.prune(keep_promoted=1, keep_rejected=1)
    assert pruned == [versions[1], versions[2], versions[3]]
    assert [v.version for v in registry.list()] == [versions[0], versions[4], versions[5]]
    entry = registry.history()[-1]
    assert entry.event == "prune" and entry.versions == pruned and "retention" in entry.reason
    assert registry.verify() == []
    again = registry.register(make_fake_adapter(tmp_path / "a9", 9), lineage(), decision(False), promote=False)
    assert again.version.startswith("v0007-")  # sequence numbers of pruned versions are not reused


def test_a_torn_last_ledger_line_is_skipped_then_repaired(three_runs, tmp_path, caplog):
    registry, _, _ = three_runs
    with open(registry.root / LEDGER_FILE, "ab") as handle:
        handle.write(b'{"time": "2019-11-29T10:00:00Z", "event": "regi')
    with caplog.at_level(logging.WARNING):
        assert len(registry.history()) == 5
    assert "torn" in caplog.text and registry.verify() == []
    registry.register(make_fake_adapter(tmp_path / "a4", 4), lineage(), decision(False), promote=False)
    assert (registry.root / LEDGER_FILE).read_bytes().endswith(b"\n")
    assert [e.event for e in registry.history()][-2:] == ["recover", "register"]


def test_a_corrupt_ledger_line_in_the_middle_fails_loudly(three_runs):
    registry, _, _ = three_runs
    lines = (registry.root / LEDGER_FILE).read_bytes().split(b"\n")
    lines[1] = b"{not json"
    (registry.root / LEDGER_FILE).write_bytes(b"\n".join(lines))
    with pytest.raises(RegistryCorruptError, match=r"ledger.jsonl:2"):
        registry.history()
    assert any("ledger.jsonl:2" in p for p in registry.verify())


def test_another_format_version_is_refused(three_runs):
    registry, _, _ = three_runs
    (registry.root / FORMAT_FILE).write_text("niftytune-adapters-registry 2\n")
    with pytest.raises(RegistryCorruptError, match="format 1"):
        registry.champion()


def test_a_stale_decision_does_not_move_the_pointer(three_runs, tmp_path):
    registry, (v1, _, v3), _ = three_runs
    with pytest.raises(ChampionChangedError, match=v1):
        registry.register(make_fake_adapter(tmp_path / "a5", 5), lineage(), decision(True), promote=True,
                          expected_champion=v1)
    assert registry.champion().version == v3 and len(registry.list()) == 3


def test_pickle_weights_and_contradictory_decisions_are_refused(tmp_path):
    registry, adapter = Registry(tmp_path), make_fake_adapter(tmp_path / "a", 1)
    with pytest.raises(ValueError, match="contradicts"):
        registry.register(adapter, lineage(), decision(False), promote=True)
    (adapter / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(RegistryCorruptError, match="safetensors only"):
        registry.register(adapter, lineage(), decision(True), promote=True)
    assert registry.list() == []


def test_a_missing_pointer_after_promotions_fails_loudly(three_runs):
    registry, _, _ = three_runs
    os.unlink(registry.root / "champion.json")
    with pytest.raises(RegistryCorruptError, match="champion.json is missing"):
        registry.champion()
    with pytest.raises(VersionNotFoundError):
        registry.get("v0099-20191129-00000000")
