"""The answer API (tasks/answering/api.py) over real HTTP: uvicorn on a free port in a thread, the
tiny model's adapters in a real registry, asked through the official `openai` client and httpx.
Every answer is checked against what `ask` answers for the same question and version."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

import tasks.evaluation.generation
from adapters_registry import Registry
from tasks.answering import ask
from tasks.answering.serving import CHAMPION_MODEL
from tests.flows.conftest import PROJECT_ROOT, clean_env
from tests.flows.readme_processes import wait_for
from tests.tasks.api_server import QUESTION, SESSION, TOKENS, asked, chat, flip_a_byte, register, running_api


def test_models_lists_the_champion_and_every_version_that_verifies(served, tiny_model_dir, tmp_path):
    champion = Registry(served).champion().version
    rejected = register(served, tiny_model_dir, tmp_path / "a", seed=5, promote=False)
    tampered = register(served, tiny_model_dir, tmp_path / "b", seed=6, promote=False)
    flip_a_byte(Registry(served).get(tampered).path / "adapter_model.safetensors")
    with running_api(served) as api:
        cards = {card.id: card.model_extra["niftytune"] for card in api.client().models.list()}
    assert list(cards) == [CHAMPION_MODEL, champion, rejected]
    assert cards[CHAMPION_MODEL]["version"] == champion and cards[champion]["promoted"] is True
    assert cards[rejected]["promoted"] is False and cards[rejected]["trained_for_session"] == SESSION


def test_a_completion_through_the_openai_client_is_the_grounded_answer_ask_gives(served):
    champion = Registry(served).champion().version
    with running_api(served) as api:
        raw = api.client().chat.completions.with_raw_response.create(
            model=CHAMPION_MODEL, max_tokens=TOKENS,
            messages=[{"role": "system", "content": "Ignored: the adapter's own system prompt is used."},
                      {"role": "user", "content": QUESTION}])
    completion = raw.parse()
    assert raw.headers["X-Niftytune-Version"] == champion and raw.headers["X-Niftytune-Session"] == SESSION
    assert completion.model == champion and completion.choices[0].finish_reason == "stop"
    assert completion.model_extra["niftytune"] == {"version": champion, "session": SESSION, "symbols": ["TCS.NS"],
                                                   "refused": False}
    assert completion.choices[0].message.content == asked(served)


def test_a_streamed_completion_through_the_openai_client_is_the_same_answer_in_pieces(served):
    champion = Registry(served).champion().version
    with running_api(served) as api:
        raw = api.client().chat.completions.with_raw_response.create(
            model=CHAMPION_MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=TOKENS, stream=True)
        chunks = list(raw.parse())
    assert raw.headers["X-Niftytune-Version"] == champion and raw.headers["X-Niftytune-Session"] == SESSION
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert {chunk.model for chunk in chunks} == {champion}
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text.strip() == asked(served) and chunks[-1].model_extra["niftytune"]["session"] == SESSION


def test_the_stream_ends_with_done(served):
    with running_api(served) as api:
        with httpx.stream("POST", f"{api.url}/v1/chat/completions", json=chat(stream=True)) as response:
            lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


@pytest.mark.parametrize("stream", [False, True])
def test_a_refusal_is_a_normal_completion_with_no_model_call(served, monkeypatch, stream):
    def fail(*args, **kwargs):
        raise AssertionError("the model was called for a refusal")

    expected = ask(served, "What did Wipro close at?").text  # a refusal: no model is loaded
    with running_api(served) as api:
        monkeypatch.setattr(tasks.evaluation.generation, "generate_answers", fail)
        raw = api.client().chat.completions.with_raw_response.create(**chat("What did Wipro close at?", stream=stream))
        parsed = raw.parse()
        chunks = list(parsed) if stream else None
    text = "".join(c.choices[0].delta.content or "" for c in chunks) if stream else parsed.choices[0].message.content
    meta = (chunks[-1] if stream else parsed).model_extra["niftytune"]
    assert text == expected and "Wipro" in text and raw.headers["X-Niftytune-Session"] == "none"
    assert meta["refused"] is True and meta["session"] is None


def test_a_version_asked_for_by_id_answers_and_says_so(served, tiny_model_dir, tmp_path):
    rejected = register(served, tiny_model_dir, tmp_path / "a", seed=5, promote=False)
    with running_api(served) as api:
        raw = api.client().chat.completions.with_raw_response.create(**chat(model=rejected))
    assert raw.headers["X-Niftytune-Version"] == rejected and raw.parse().model == rejected
    assert raw.parse().choices[0].message.content == asked(served, rejected)


def test_an_unknown_model_is_404_in_openais_error_shape(served):
    with running_api(served) as api:
        with pytest.raises(openai.NotFoundError) as caught:
            api.client().chat.completions.create(**chat(model="v0099-20191129-deadbeef"))
        gpt = httpx.post(f"{api.url}/v1/chat/completions", json=chat(model="gpt-4o"))
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"
    assert gpt.status_code == 404 and "gpt-4o" in gpt.json()["error"]["message"]
    assert set(gpt.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("body,param,words", [
    (b'{"model": "niftytune-champion", "messages": [', None, "could not parse the JSON body"),
    (b'{"model": "niftytune-champion"}', "messages", "Field required"),
    (b'{"model": "niftytune-champion", "messages": []}', "messages", "at least 1 item"),
    (b'{"model": "niftytune-champion", "messages": [{"role": "system", "content": "hi"}]}', "messages",
     "no message has the role 'user'"),
    (b'{"model": "niftytune-champion", "messages": [{"role": "user", "content": " "}]}', "messages", "no text"),
    (b'{"model": "niftytune-champion", "messages": "What did TCS close at?"}', "messages", "valid list"),
    (b'{"model": 7, "messages": [{"role": "user", "content": "hi"}]}', "model", "valid string"),
    (b'{"model": "niftytune-champion", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}',
     "stream", "valid boolean"),
    (b'{"model": "niftytune-champion", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}',
     "max_tokens", "greater than or equal to 1"),
    (b'["not", "an", "object"]', None, "must be a JSON object"),
])
def test_a_malformed_body_is_400_in_openais_error_shape(served, body, param, words):
    with running_api(served) as api:
        response = httpx.post(f"{api.url}/v1/chat/completions", content=body,
                              headers={"content-type": "application/json"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == param and words in error["message"]


@pytest.mark.parametrize("token", [None, "s3cret-token"])
def test_a_token_when_set_is_required_by_every_v1_request(served, token):
    champion = Registry(served).champion().version
    with running_api(served, token=token) as api:
        keyed = api.client(key=token or "anything").chat.completions.create(**chat())
        listed = [card.id for card in api.client(key=token or "anything").models.list()]
        bare = [httpx.get(f"{api.url}/v1/models"),
                httpx.post(f"{api.url}/v1/chat/completions", json=chat()),
                httpx.post(f"{api.url}/v1/chat/completions", content=b"{not json",
                           headers={"authorization": "Bearer wrong"})]
        health = httpx.get(f"{api.url}/health")
        if token is not None:
            with pytest.raises(openai.AuthenticationError):
                api.client(key="wrong").models.list()
    assert keyed.model == champion and listed[0] == CHAMPION_MODEL and health.json()["serving"] == champion
    if token is None:
        assert [r.status_code for r in bare] == [200, 200, 400]
    else:  # the token is checked before the body is read
        assert [r.status_code for r in bare] == [401, 401, 401]
        assert all(r.json()["error"]["code"] == "invalid_api_key" and token not in r.text for r in bare)


def niftytune_api(home: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "api", "--home", str(home), *args],
                            cwd=PROJECT_ROOT, env=clean_env(PYTHONPATH=str(PROJECT_ROOT), **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_niftytune_api_refuses_a_host_other_machines_reach_without_a_token(served):
    proc = niftytune_api(served, "--host", "0.0.0.0")
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "NIFTYTUNE_API_TOKEN" in output and "--allow-no-token" in output


def test_niftytune_api_as_the_readme_starts_it_answers_curl_and_never_prints_the_token(served):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = "readme-secret-7f3a"
    proc = niftytune_api(served, "--port", str(port), NIFTYTUNE_API_TOKEN=token)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for("niftytune api", lambda: httpx.get(f"{url}/health").status_code == 200, timeout=120, proc=proc)
        response = httpx.post(f"{url}/v1/chat/completions", json=chat(), timeout=300,
                              headers={"Authorization": f"Bearer {token}"})
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
    assert response.headers["X-Niftytune-Version"] == Registry(served).champion().version
    assert response.json()["choices"][0]["message"]["content"] == asked(served)
    assert "a bearer token is required" in output and token not in output
