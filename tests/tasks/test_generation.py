"""Greedy decoding with finished rows leaving the batch (tasks.evaluation.generation.greedy_tokens)
gives the tokens transformers' `generate(do_sample=False)` gives, with and without a LoRA adapter."""
from __future__ import annotations

import pytest
import torch

import tasks.evaluation.generation as generation

NEW_TOKENS = 12


def batch(tokenizer, device="cpu"):
    prompts = ["a", "the market closed higher today and", "nifty", "what did tcs close at on friday, 19 june",
               "sensex", "gold bees fell"]
    tokenizer.padding_side = "left"
    return tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)


def sharpen(model):
    """Peaked attention (random weights attend almost uniformly): tokens then depend on positions
    and on which cached keys a row reads, so a wrong position or cache row changes them."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(40)
    return model


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # float64: a row's logits must not depend on how many rows share its batch
    base = sharpen(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)).eval()
    peft = get_peft_model(sharpen(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    return tokenizer, {"base": base, "lora": peft.eval()}


@pytest.mark.parametrize("which", ["base", "lora"])
@pytest.mark.parametrize("every", [1, 5], ids=["look-every-step", "look-every-5"])
def test_greedy_tokens_are_generates_tokens_as_rows_finish(models, which, every, monkeypatch):
    """Every step on the CPU; every few steps as on a GPU (rows that finished between two looks
    keep being decoded, to padding)."""
    monkeypatch.setattr(generation, "CHECK_EVERY", {"cpu": every})
    tokenizer, model = models[0], models[1][which]
    inputs = batch(tokenizer)
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        free = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=pad,
                              eos_token_id=[-1])[:, inputs["input_ids"].shape[1]:]
    # end-of-sequence tokens that stop rows at different steps: rows leave the batch in two rounds
    stops = sorted({int(free[0, 1]), int(free[2, 3]), int(free[4, 2])})
    assert len(stops) >= 2
    with torch.no_grad():
        want = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=pad,
                              eos_token_id=stops)[:, inputs["input_ids"].shape[1]:]
    pruned: list[int] = []
    from transformers.cache_utils import Cache
    select = Cache.batch_select_indices
    monkeypatch.setattr(Cache, "batch_select_indices", lambda self, idx: pruned.append(len(idx)) or select(self, idx))
    with torch.no_grad():
        got = generation.greedy_tokens(model, inputs["input_ids"], inputs["attention_mask"], NEW_TOKENS, stops, pad)
    finished = [bool(torch.isin(row, torch.tensor(stops)).any()) for row in want]
    assert 3 <= sum(finished) < len(finished)  # some rows stop early, some run to the limit
    assert pruned and all(n < len(want) for n in pruned)  # finished rows left the batch
    assert got.shape == (len(want), NEW_TOKENS)
    width = want.shape[1]  # generate stops when every row has finished; the rest is padding
    assert torch.equal(got[:, :width], want)
    assert (got[:, width:] == pad).all()


def test_generate_answers_without_options_decodes_greedy_tokens(models, monkeypatch):
    tokenizer, model = models[0], models[1]["base"]
    conversations = [[{"role": "user", "content": q}] for q in ("nifty close", "tcs close on friday, 19 june")]
    pruned_path = generation.generate_answers(model, tokenizer, conversations, NEW_TOKENS, batch_size=2)
    monkeypatch.setattr(generation, "greedy_tokens", lambda *a, **k: pytest.fail("options must go to generate"))
    through_generate = generation.generate_answers(model, tokenizer, conversations, NEW_TOKENS, batch_size=2,
                                                   use_cache=True)
    assert pruned_path == through_generate and all(pruned_path)
