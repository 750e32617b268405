"""`ask` through a promoted tiny adapter: grounded in the market store by default, closed-book on
request, and a refusal (a ticker or day the store does not hold) without touching the model."""
from __future__ import annotations

import re
from datetime import date

import pytest
import torch

import adapters_registry
import tasks.answering.loading
import tasks.evaluation.generation
from adapters_registry import Registry
from tasks.answering import ask
from tasks.answering.ground import grounded_prompt
from tasks.config import Config

SESSION = date(2019, 11, 29)  # a Friday
PRICE_LIKE = re.compile(r"₹|\d\.\d")


@pytest.fixture(scope="module")
def home(answering_home):
    """A home with a promoted tiny adapter and TCS's recorded bars to SESSION (tests/tasks/conftest.py)."""
    return answering_home


@pytest.fixture
def captured(monkeypatch):
    """The conversations `ask` generates from; the model is loaded but not run."""
    seen: list[list[dict]] = []

    def fake_generate(model, tokenizer, conversations, max_new_tokens, *args, **kwargs):
        seen.extend(conversations)
        return ["an answer"] * len(conversations)

    monkeypatch.setattr(tasks.evaluation.generation, "generate_answers", fake_generate)
    return seen


def champion_version(home) -> str:
    return Registry(home).champion().version


@pytest.mark.parametrize("question,today", [
    ("What did Wipro close at yesterday?", SESSION),     # a ticker the store does not hold
    ("What did TCS close at on 1 December 2019?", date(2019, 12, 2)),  # a Sunday
    ("What did TCS close at on 2015-01-05?", SESSION),   # before the store's data
])
def test_a_refusal_neither_loads_nor_runs_the_model_and_states_no_price(home, monkeypatch, question, today):
    def fail(*args, **kwargs):
        raise AssertionError("the model was used for a refusal")

    monkeypatch.setattr(tasks.answering.loading, "load_promoted", fail)
    monkeypatch.setattr(tasks.evaluation.generation, "generate_answers", fail)
    answer = ask(home, question, today=today)
    assert answer.refused and answer.version == champion_version(home) and answer.session is None
    assert answer.text == answer.grounding.refusal and not PRICE_LIKE.search(answer.text)


def test_a_champion_that_fails_verification_is_refused_even_for_a_question_the_store_cannot_answer(home, tmp_path):
    """A refusal loads no model, but it names the version that answered: it must not answer for
    a champion `registry verify` refuses (issue 16: `ask` refuses what `verify` refuses)."""
    import shutil

    corrupt = tmp_path / "home"
    shutil.copytree(home, corrupt)
    (Registry(corrupt).champion().path / "adapter_model.safetensors").write_bytes(b"corrupt")
    with pytest.raises(adapters_registry.RegistryIntegrityError, match="adapter_model.safetensors"):
        ask(corrupt, "What did Wipro close at?", today=SESSION)


def test_a_grounded_answer_carries_the_groundings_session_and_version(home, captured):
    answer = ask(home, "What did TCS close at yesterday?", today=date(2019, 11, 30))
    assert not answer.refused and answer.text == "an answer"
    assert answer.session == SESSION and answer.version == champion_version(home)
    assert answer.grounding.symbols == ("TCS.NS",) and "Friday, 29 November 2019" in answer.grounding.sheet


def test_a_grounded_answer_is_the_champions_adapters_and_not_the_base_models(home, tmp_path):
    """Without a fake model: the champion's answer is what its adapter generates for the grounded
    prompt, and the base model (the same home rolled back to it) answers that prompt otherwise."""
    import shutil

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    question, champion = "What did TCS close at?", Registry(home).champion()
    answer = ask(home, question, today=SESSION, max_new_tokens=8)
    based = shutil.copytree(home, tmp_path / "home")
    Registry(based).rollback_to_base("test: the base model answers")
    from_base = ask(based, question, today=SESSION, max_new_tokens=8)
    assert (answer.version, from_base.version) == (champion.version, "base")
    assert answer.grounding.sheet == from_base.grounding.sheet and answer.text != from_base.text

    base_dir = champion.manifest.lineage.base_model.identity
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), champion.path).eval()
    prompt = [{"role": "system", "content": Config().samples.system_prompt},
              {"role": "user", "content": grounded_prompt(question, answer.grounding)}]
    assert answer.text == tasks.evaluation.generation.generate_answers(adapter, AutoTokenizer.from_pretrained(base_dir),
                                                            [prompt], 8)[0]


def test_a_grounded_question_is_asked_with_the_system_prompt_and_its_data_sheet(home, captured):
    answer = ask(home, "What did TCS close at?", today=date(2019, 12, 3))
    samples = Config().samples
    assert answer.session == SESSION  # the latest session the store holds
    assert captured == [[{"role": "system", "content": samples.system_prompt},
                         {"role": "user", "content": grounded_prompt("What did TCS close at?", answer.grounding)}]]


def test_closed_book_uses_the_closed_book_system_prompt_and_no_sheet(home, captured):
    answer = ask(home, "What did TCS close at?", closed_book=True, today=date(2019, 12, 3))
    samples = Config().samples
    assert answer.grounding is None and answer.session is None and answer.text == "an answer"
    assert captured == [[{"role": "system", "content": samples.closed_book_system_prompt},
                         {"role": "user", "content": "What did TCS close at?"}]]
    assert samples.closed_book_system_prompt != samples.system_prompt


def test_closed_book_answers_even_a_ticker_the_store_does_not_hold(home, captured):
    answer = ask(home, "What did Wipro close at?", closed_book=True)
    assert not answer.refused and len(captured) == 1


def test_with_no_champion_the_base_model_answers_and_says_so(home, tmp_path, captured):
    """After `registry rollback --to-base` (issue 16): no champion, so the base model answers,
    grounded like an adapter, and the answer names `base` as the version."""
    import shutil

    based = tmp_path / "home"
    shutil.copytree(home, based)
    Registry(based).rollback_to_base("the only champion is corrupt")
    assert Registry(based).champion() is None
    answer = ask(based, "What did TCS close at?", today=SESSION)
    assert answer.version == "base" and answer.session == SESSION and answer.text == "an answer"
    assert "Data sheet: TCS" in captured[-1][1]["content"]


def test_niftytune_ask_after_rollback_to_base_answers_with_the_base_model(home, tmp_path):
    """Issue 16, failure 7, as a user meets it: the only champion is corrupt, so `ask` refuses it;
    `registry rollback --to-base` leaves no champion; `ask` then answers with the base model and
    says so."""
    import shutil
    import subprocess
    import sys

    from tests.flows.conftest import PROJECT_ROOT, clean_env

    based = tmp_path / "home"
    shutil.copytree(home, based)
    champion = Registry(based).champion()
    (champion.path / "adapter_model.safetensors").write_bytes(b"corrupt")

    def niftytune(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flows.cli", *args, "--home", str(based)], cwd=PROJECT_ROOT,
                              env=clean_env(PYTHONPATH=str(PROJECT_ROOT)), capture_output=True, text=True, timeout=300)

    question = ["ask", "What did TCS close at?", "--today", "2019-11-29", "--max-new-tokens", "4"]
    refused = niftytune(*question)
    assert refused.returncode == 1 and champion.version in refused.stderr and "Traceback" not in refused.stderr
    rolled = niftytune("registry", "rollback", "--to-base", "--reason", "the only champion is corrupt")
    assert rolled.returncode == 0, rolled.stderr[-2000:]
    answered = niftytune(*question)
    assert answered.returncode == 0, answered.stderr[-2000:]
    assert answered.stdout.startswith("[base model (no champion) · figures from the session of Friday, "
                                      "29 November 2019] ")


def test_ask_json_is_machine_readable_and_names_the_version_and_refusal(answering_home, capsys):
    import json
    from unittest import mock

    from flows.cli import main

    with mock.patch.dict("os.environ"):  # the CLI exports PREFECT_HOME and friends for its home
        assert main(["ask", "What did Wipro close at yesterday?", "--today", "2019-11-29", "--json",
                     "--home", str(answering_home)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["version"] == Registry(answering_home).champion().version
    assert answer["refused"] is True and answer["closed_book"] is False and answer["text"]


def test_a_one_off_answer_runs_on_the_merged_adapter_and_leaves_the_weights_as_they_were(home, monkeypatch):
    from peft.tuners.lora import LoraLayer

    seen: dict = {}

    def fake_generate(model, tokenizer, conversations, max_new_tokens, *args, **kwargs):
        layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        seen["merged"] = bool(layers) and all(m.merged for m in layers)
        seen["model"] = model
        seen["before"] = [m.get_base_layer().weight.detach().clone() for m in layers]
        return ["an answer"]

    monkeypatch.setattr(tasks.evaluation.generation, "generate_answers", fake_generate)
    ask(home, "What did TCS close at?", today=SESSION, max_new_tokens=8)
    layers = [m for m in seen["model"].modules() if isinstance(m, LoraLayer)]
    assert seen["merged"] and not any(m.merged for m in layers)
    # the merged weights differed from the base's, and the base's are back
    assert any(not torch.equal(w, m.get_base_layer().weight) for w, m in zip(seen["before"], layers))
