"""Nothing forged: what a reader trusts is checked by `verify`, and `promoted`, `ask` and the
next writer refuse what `verify` refuses (issue 16, failures 2 and 7)."""
from __future__ import annotations

import json
import shutil

import pytest

from adapters_registry import Registry, RegistryCorruptError, RegistryIntegrityError
from adapters_registry.cli import main
from tasks.answering import load_promoted
from adapters_registry.format import CHAMPION_FILE, LEDGER_FILE, MANIFEST_FILE
from tasks.promotion import ChampionUnavailableError, resolve_champion
from tests.adapters_registry.fakes import decision, lineage, make_fake_adapter


@pytest.fixture
def promoted_then_rejected(tmp_path):
    """v0001 promoted over the base, v0002 rejected against it."""
    registry = Registry(tmp_path / "home")
    v1 = registry.register(make_fake_adapter(tmp_path / "a1", 1), lineage(0.9), decision(True, "base"), promote=True)
    v2 = registry.register(make_fake_adapter(tmp_path / "a2", 2), lineage(1.1), decision(False), promote=False)
    return registry, v1.version, v2.version


def edit_pointer(registry: Registry, old: str, new: str) -> None:
    path = registry.root / CHAMPION_FILE
    text = path.read_text()
    path.write_text(text.replace(f'"version": "{old}"', f'"version": "{new}"'))


def assert_refused_everywhere(registry: Registry, capsys, *, pointer: bool = True) -> None:
    """verify fails, `promoted` exits non-zero, load and the gate refuse, and (for a bad
    pointer) a writer refuses without adding a ledger line."""
    assert registry.verify()
    assert main(["--home", str(registry.home), "promoted"]) != 0
    capsys.readouterr()
    with pytest.raises((RegistryCorruptError, RegistryIntegrityError)):
        load_promoted(registry.home)
    with pytest.raises(ChampionUnavailableError):
        resolve_champion(registry.home)
    if not pointer:
        return
    ledger = (registry.root / LEDGER_FILE).read_bytes()
    with pytest.raises(RegistryCorruptError):
        registry.recover()
    assert (registry.root / LEDGER_FILE).read_bytes() == ledger


def test_a_pointer_edited_to_a_rejected_version_is_refused_not_laundered(promoted_then_rejected, capsys):
    registry, v1, v2 = promoted_then_rejected
    edit_pointer(registry, v1, v2)
    assert any(v2 in p and "ledger" in p for p in registry.verify())
    assert_refused_everywhere(registry, capsys)
    assert not any(e.event == "promote" and e.version == v2 for e in registry.history())


def test_a_pointer_edited_back_to_an_earlier_champion_is_refused(tmp_path, capsys):
    registry = Registry(tmp_path / "home")
    v1 = registry.register(make_fake_adapter(tmp_path / "a1", 1), lineage(), decision(True, "base"), promote=True)
    v2 = registry.register(make_fake_adapter(tmp_path / "a2", 2), lineage(), decision(True), promote=True)
    pointer = json.loads((registry.root / CHAMPION_FILE).read_text())
    first_move = next(e for e in registry.history() if e.event == "promote")
    pointer.update(version=v1.version, since=first_move.time.isoformat(), previous=None)
    (registry.root / CHAMPION_FILE).write_text(json.dumps(pointer))
    assert any(v2.version in p for p in registry.verify())
    assert_refused_everywhere(registry, capsys)


def test_a_flipped_digit_in_a_manifest_score_fails_verify(promoted_then_rejected, capsys):
    registry, v1, _ = promoted_then_rejected
    manifest = registry.get(v1).path / MANIFEST_FILE
    text = manifest.read_text()
    assert '"loss": 0.9' in text
    manifest.write_text(text.replace('"loss": 0.9', '"loss": 0.8', 1))  # still a valid manifest
    assert registry.get(v1).candidate_loss == 0.8
    assert any(MANIFEST_FILE in p and "registration recorded" in p for p in registry.verify())
    assert_refused_everywhere(registry, capsys, pointer=False)


def test_a_version_folder_that_is_a_symlink_out_of_the_registry_fails_verify(promoted_then_rejected, tmp_path,
                                                                             capsys):
    registry, v1, _ = promoted_then_rejected
    folder = registry.get(v1).path
    outside = tmp_path / "elsewhere"
    shutil.copytree(folder, outside)
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)
    assert any("symlink" in p for p in registry.verify())
    assert main(["--home", str(registry.home), "promoted"]) != 0
    with pytest.raises(RegistryIntegrityError):
        load_promoted(registry.home)


def test_a_file_symlinked_into_a_version_fails_verify(promoted_then_rejected, tmp_path):
    registry, v1, _ = promoted_then_rejected
    weights = registry.get(v1).path / "adapter_model.safetensors"
    copy = tmp_path / "weights.safetensors"
    shutil.copy(weights, copy)
    weights.unlink()
    weights.symlink_to(copy)
    assert any("symlink" in p for p in registry.verify())


def test_a_pointer_with_a_path_for_a_version_is_refused(promoted_then_rejected, capsys):
    registry, v1, _ = promoted_then_rejected
    edit_pointer(registry, v1, f"../versions/{v1}")
    assert any("not a version id" in p for p in registry.verify())
    assert_refused_everywhere(registry, capsys)


def test_promoted_exits_non_zero_when_the_champions_files_fail_verification(promoted_then_rejected, capsys):
    registry, v1, _ = promoted_then_rejected
    weights = registry.get(v1).path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"X")
    assert main(["--home", str(registry.home), "promoted"]) == 2
    assert "adapter_model.safetensors" in capsys.readouterr().err


def test_a_whole_last_ledger_line_with_a_damaged_newline_is_not_cut_as_torn(promoted_then_rejected, tmp_path):
    registry, _, v2 = promoted_then_rejected
    path = registry.root / LEDGER_FILE
    data = path.read_bytes()
    path.write_bytes(data[:-1] + b"\x0b")  # the last entry is intact; only its newline is not
    assert any("newline" in p for p in registry.verify())
    with pytest.raises(RegistryCorruptError, match="newline"):
        registry.register(make_fake_adapter(tmp_path / "a3", 3), lineage(), decision(False), promote=False)
    assert path.read_bytes() == data[:-1] + b"\x0b"  # the registration of v2 is still there


def test_rollback_to_base_leaves_no_champion_when_the_only_promoted_version_is_corrupt(promoted_then_rejected):
    registry, v1, _ = promoted_then_rejected
    weights = registry.get(v1).path / "adapter_model.safetensors"
    weights.write_bytes(b"corrupt")
    with pytest.raises(ChampionUnavailableError):
        resolve_champion(registry.home)  # a corrupt champion stops the gate

    assert main(["--home", str(registry.home), "rollback", "--to-base", "--reason", "v0001 is corrupt"]) == 0

    assert registry.champion() is None and resolve_champion(registry.home) is None  # the base is the baseline
    last = registry.history()[-1]
    assert (last.event, last.version, last.previous, last.reason) == ("rollback", None, v1, "v0001 is corrupt")
    assert registry.champion_at(last.time) is None
    assert all("adapter_model.safetensors" in p for p in registry.verify())  # only the corrupt file remains


def test_after_rollback_to_base_the_next_promotion_is_judged_against_the_base(promoted_then_rejected, tmp_path):
    registry, v1, _ = promoted_then_rejected
    registry.rollback_to_base("start over")
    v3 = registry.register(make_fake_adapter(tmp_path / "a3", 3), lineage(), decision(True, "base"), promote=True)
    assert registry.champion().version == v3.version and v3.manifest.parent is None
    assert registry.verify() == []


def test_rollback_to_base_with_no_champion_says_the_base_already_answers(promoted_then_rejected):
    registry, _, _ = promoted_then_rejected
    registry.rollback_to_base("start over")
    with pytest.raises(ValueError, match="already answers"):
        registry.rollback_to_base("again")


def test_a_registration_without_a_manifest_hash_fails_verify_until_a_writer_records_it(promoted_then_rejected):
    registry, v1, _ = promoted_then_rejected
    path = registry.root / LEDGER_FILE
    legacy = []
    for line in path.read_text().splitlines():  # as a ledger written before manifest hashes were kept
        entry = json.loads(line)
        entry.pop("manifest_sha256", None)
        legacy.append(json.dumps(entry, sort_keys=True))
    path.write_text("\n".join(legacy) + "\n")
    assert any("records no manifest hash" in p and v1 in p for p in registry.verify())

    added = registry.recover()

    assert [e.event for e in added] == ["recover", "recover"] and registry.verify() == []
    assert registry.recover() == []
