"""One generation at a time, in batches: the questions waiting together for the same model and
length limit are answered by one `tasks.evaluation.generation.generate_answers` call.

    queue = GenerationQueue(max_batch=8); queue.start()
    text = queue.submit(loaded, messages, 320).result()          # blocks until answered
    queue.submit(loaded, messages, 320, streamer=streamer)        # alone, token by token
    queue.stop()                                                  # answers what is queued, then ends

Nothing waits for a batch to fill: a question that finds the model idle is answered at once, and
those that arrive while it generates are taken together next. On an H200, 8 concurrent clients
got 1.47 answers/s batched against 0.50 one at a time (docs/PERFORMANCE.md, "Answer API"); on
the loaded 2-core CPU the measurements did not decide. A streamed answer is generated alone (a
streamer follows one sequence).
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class _Job:
    loaded: Any
    """A `tasks.answering.serving.Loaded`: the model and tokenizer to answer with."""
    messages: list[dict]
    max_new_tokens: int
    streamer: Any = None
    result: Future = field(default_factory=Future)

    def can_join(self, other: "_Job") -> bool:
        return (self.streamer is None and other.streamer is None and self.loaded is other.loaded
                and self.max_new_tokens == other.max_new_tokens)


class GenerationQueue:
    """A thread that generates the submitted questions' answers, batching what waits together."""

    def __init__(self, max_batch: int = 8):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self._jobs: deque[_Job] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="niftytune-generate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Answer what is queued, then end the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join()

    def submit(self, loaded: Any, messages: list[dict], max_new_tokens: int, streamer: Any = None) -> Future:
        """A future of the answer's text (with a streamer: of the same text, after the last piece)."""
        job = _Job(loaded, messages, max_new_tokens, streamer)
        with self._changed:
            if self._closed:
                raise RuntimeError("the answer API is shutting down")
            self._jobs.append(job)
            self._changed.notify()
        return job.result

    def _take(self) -> list[_Job]:
        """The oldest job and the waiting ones that can share its batch; [] once closed and empty."""
        with self._changed:
            while not self._jobs and not self._closed:
                self._changed.wait()
            if not self._jobs:
                return []
            first = self._jobs.popleft()
            batch = [first] + [job for job in self._jobs if first.can_join(job)][:self.max_batch - 1]
            for job in batch[1:]:
                self._jobs.remove(job)
            return batch

    def _run(self) -> None:
        while batch := self._take():
            _generate(batch)


def _generate(batch: list[_Job]) -> None:
    """Answer a batch; an error is every job's answer (and ends a streamer, so its reader stops)."""
    from tasks.evaluation.generation import generate_answers

    first = batch[0]
    options = {"streamer": first.streamer} if first.streamer is not None else {}
    try:
        texts = generate_answers(first.loaded.model, first.loaded.tokenizer, [job.messages for job in batch],
                                 first.max_new_tokens, batch_size=len(batch), **options)
    except Exception as exc:
        if first.streamer is not None:
            first.streamer.end()
        for job in batch:
            job.result.set_exception(exc)
        return
    for job, text in zip(batch, texts):
        job.result.set_result(text)
