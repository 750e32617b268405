"""`tasks.answering.load_promoted`: a verified, ready PeftModel on the base model the manifest names."""
from __future__ import annotations

import pytest

from adapters_registry import NoChampionError, Registry
from tasks.answering import BaseModelMismatchError, load_promoted
from tasks.training.base_model import hash_weight_files
from tests.adapters_registry.fakes import decision, lineage, make_lora_adapter


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory):
    return make_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("lora") / "adapter", seed=1)


def test_load_promoted_returns_a_ready_peft_model_on_its_base(tmp_path, tiny_model_dir, lora_dir):
    import torch
    from peft import PeftModel

    fields = lineage(base_identity=str(tiny_model_dir), file_hash=hash_weight_files(tiny_model_dir))
    promoted = Registry(tmp_path).register(lora_dir, fields, decision(True, "base"), promote=True)

    model, tokenizer, info = load_promoted(tmp_path)

    assert isinstance(model, PeftModel) and not model.training and info.version == promoted.version
    assert tokenizer.chat_template and model.peft_config["default"].r == 4
    ids = torch.tensor([tokenizer("NIFTY 50 closed at 12,056.05 points")["input_ids"]])
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert not torch.allclose(adapted, base)  # the adapter's weights are the registered ones


def test_load_promoted_refuses_a_base_model_with_other_weights(tmp_path, tiny_model_dir, lora_dir):
    fields = lineage(base_identity=str(tiny_model_dir), file_hash="0" * 64)
    Registry(tmp_path).register(lora_dir, fields, decision(True, "base"), promote=True)
    with pytest.raises(BaseModelMismatchError, match="weights"):
        load_promoted(tmp_path)


def test_load_promoted_with_nothing_promoted_says_so(tmp_path):
    with pytest.raises(NoChampionError, match="no promoted adapter"):
        load_promoted(tmp_path)
