"""The answer API's generation queue: questions waiting together for the same model and length limit
are answered in one batch, each with the answer it gets alone; a streamed one is answered alone."""
from __future__ import annotations

import tasks.evaluation.generation
from tasks.answering import ask
from tasks.answering.batching import GenerationQueue
from tasks.answering.serving import ServedModels

QUESTIONS = ["What did TCS close at?", "How did TCS do over the last week?", "What was the high of TCS?"]


def test_questions_waiting_together_are_answered_in_one_batch_each_with_its_own_answer(answering_home, monkeypatch):
    from transformers import TextIteratorStreamer

    home = answering_home
    models = ServedModels(home, poll_seconds=0)  # not started: only its champion and prompts are used
    loaded = models.champion
    messages = {q: models.prompt(loaded, q)[0] for q in QUESTIONS}
    batches, generate = [], tasks.evaluation.generation.generate_answers

    def counted(model, tokenizer, conversations, *args, **kwargs):
        batches.append((len(conversations), "streamer" in kwargs))
        return generate(model, tokenizer, conversations, *args, **kwargs)

    monkeypatch.setattr(tasks.evaluation.generation, "generate_answers", counted)
    queue = GenerationQueue(max_batch=8)
    first = queue.submit(loaded, messages[QUESTIONS[0]], 8)
    longer = queue.submit(loaded, messages[QUESTIONS[0]], 16)  # another length limit: another batch
    streamed = queue.submit(loaded, messages[QUESTIONS[0]], 8, TextIteratorStreamer(loaded.tokenizer))
    rest = [queue.submit(loaded, messages[q], 8) for q in QUESTIONS[1:]]
    queue.start()  # everything above waits together
    queue.stop()
    assert batches == [(3, False), (1, False), (1, True)]
    answers = [future.result() for future in [first, *rest]]
    assert answers == [ask(home, q, max_new_tokens=8).text for q in QUESTIONS]
    assert streamed.result() == answers[0] and isinstance(longer.result(), str)
