"""The answer API follows the champion pointer without a restart: a promotion is switched to with no
failed request and requests in flight finish on the old version; a version that fails verification
is never served (the old one keeps serving and /health says why); a rollback to the base is followed."""
from __future__ import annotations

import threading

import httpx
import openai

import adapters_registry.store
import tasks.evaluation.generation
from adapters_registry import Registry
from tasks.answering.serving import CHAMPION_MODEL
from tests.flows.readme_processes import wait_for
from tests.tasks.api_server import Api, asked, chat, flip_a_byte, register, running_api


def test_a_promotion_during_a_stream_of_requests_fails_none_and_later_answers_come_from_the_new_version(
        served, tiny_model_dir, tmp_path):
    old = Registry(served).champion().version
    answers: list[tuple[str, str]] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def keep_asking(api: Api) -> None:
        client = api.client()
        try:
            while not stop.is_set():  # streamed and not, in turn
                raw = client.chat.completions.with_raw_response.create(**chat(stream=len(answers) % 2 == 1))
                parsed = raw.parse()
                text = (parsed.choices[0].message.content if isinstance(parsed, openai.types.chat.ChatCompletion)
                        else "".join(c.choices[0].delta.content or "" for c in parsed).strip())
                answers.append((raw.headers["X-Niftytune-Version"], text))
        except BaseException as exc:
            failed.append(exc)

    def seen(count: int, version: str | None = None) -> bool:
        if failed:
            raise AssertionError(f"a request failed: {failed[0]!r}")
        recent = [v for v, _ in answers[-count:]]
        return len(recent) == count and (version is None or set(recent) == {version})

    with running_api(served) as api:
        asker = threading.Thread(target=keep_asking, args=(api,))
        asker.start()
        try:
            wait_for("answers from the old champion", lambda: seen(2), timeout=120)
            new = register(served, tiny_model_dir, tmp_path / "new", seed=4, promote=True)
            wait_for("answers from the new champion", lambda: seen(2, new), timeout=120)
        finally:
            stop.set()
            asker.join()
    assert failed == []
    versions = [version for version, _ in answers]
    switched = versions.index(new)
    assert set(versions[:switched]) == {old} and set(versions[switched:]) == {new}
    assert {text for version, text in answers if version == old} == {asked(served, old)}
    assert {text for version, text in answers if version == new} == {asked(served, new)}


def test_a_request_in_flight_during_the_swap_finishes_on_the_old_version(served, tiny_model_dir, tmp_path,
                                                                         monkeypatch):
    old = Registry(served).champion().version
    started, release = threading.Event(), threading.Event()
    generate = tasks.evaluation.generation.generate_answers

    def held(model, *args, **kwargs):
        started.set()
        release.wait(120)
        return generate(model, *args, **kwargs)

    with running_api(served) as api:
        monkeypatch.setattr(tasks.evaluation.generation, "generate_answers", held)
        result: dict = {}
        in_flight = threading.Thread(target=lambda: result.update(
            response=httpx.post(f"{api.url}/v1/chat/completions", json=chat(), timeout=300)))
        in_flight.start()
        assert started.wait(120)
        new = register(served, tiny_model_dir, tmp_path / "new", seed=4, promote=True)
        wait_for("the switch", lambda: api.health()["serving"] == new, timeout=120)
        release.set()
        in_flight.join()
        monkeypatch.setattr(tasks.evaluation.generation, "generate_answers", generate)
        after = httpx.post(f"{api.url}/v1/chat/completions", json=chat(), timeout=300)
    answered = result["response"]
    assert answered.headers["X-Niftytune-Version"] == old
    assert answered.json()["choices"][0]["message"]["content"] == asked(served, old)
    assert after.headers["X-Niftytune-Version"] == new
    assert after.json()["choices"][0]["message"]["content"] == asked(served, new)


def test_a_tampered_new_champion_is_never_served_the_old_one_keeps_serving_and_health_says_why(
        served, tiny_model_dir, tmp_path, monkeypatch):
    """The new version's weights change after it is registered and before the pointer moves to it
    (the registry's own promotion, with the byte flipped at its `after-register-entry` step)."""
    old = Registry(served).champion().version
    checkpoint = adapters_registry.store._checkpoint

    def tamper(step: str) -> None:
        if step == "after-register-entry":
            newest = Registry(served).list()[-1]
            flip_a_byte(newest.path / "adapter_model.safetensors")
        checkpoint(step)

    with running_api(served) as api:
        monkeypatch.setattr(adapters_registry.store, "_checkpoint", tamper)
        new = register(served, tiny_model_dir, tmp_path / "new", seed=4, promote=True)
        assert Registry(served).pointer().version == new
        wait_for("the health to report the new champion", lambda: api.health()["problem"], timeout=120)
        health = api.health()
        answered = api.client().chat.completions.with_raw_response.create(**chat())
        listed = [card.id for card in api.client().models.list()]
        by_id = httpx.post(f"{api.url}/v1/chat/completions", json=chat(model=new))
    assert health["status"] == "degraded" and health["serving"] == old
    assert health["problem"]["version"] == new and "adapter_model.safetensors" in health["problem"]["message"]
    assert answered.headers["X-Niftytune-Version"] == old and answered.parse().choices[0].message.content == asked(
        served, old)
    assert new not in listed and by_id.status_code == 409 and by_id.json()["error"]["code"] == "model_unavailable"


def test_with_no_champion_the_base_model_answers_and_a_rollback_to_base_is_followed(served):
    champion = Registry(served).champion().version
    with running_api(served) as api:
        Registry(served).rollback_to_base("test: the champion is withdrawn")
        wait_for("the switch to the base model", lambda: api.health()["serving"] == "base", timeout=120)
        raw = api.client().chat.completions.with_raw_response.create(**chat())
        card = api.client().models.list().data[0]
    assert raw.headers["X-Niftytune-Version"] == "base" and raw.parse().model == "base"
    assert raw.parse().choices[0].message.content == asked(served)  # ask, too, answers with the base model
    assert card.id == CHAMPION_MODEL and card.model_extra["niftytune"]["version"] == "base" and champion != "base"
