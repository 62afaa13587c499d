"""The server's batcher: one worker thread owns the engine, requests wait in a bounded queue.

Non-streaming requests with the same sampling settings that wait together run as one
batched generate (dynamic batching); streaming requests run one at a time between batches.
:class:`QueuedEngine` puts the agent loop's own generates through the same queue.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from thinksearch.engines.base import Engine, Message
from thinksearch.generation import Completion, Sampling

log = logging.getLogger("thinksearch.serve")
END = object()
"""What a streaming job puts last."""


@dataclass
class _Job:
    messages: list[Message]
    sampling: Sampling
    future: Future | None = None
    put: Callable[[Any], None] | None = None
    """Streaming jobs: where pieces go (then a Completion, then END)."""
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def key(self) -> tuple:
        """Requests with equal keys can share a batch: greedy ones ignore seed and top_p."""
        s = self.sampling
        if s.temperature == 0:
            return (s.max_new_tokens, s.repetition_penalty)
        return dataclasses.astuple(s)


class Busy(Exception):
    """The queue is full."""


class Batcher:
    """One worker thread owns the engine; requests wait in a bounded queue.

    Non-streaming requests with the same sampling settings that are waiting together
    (or arrive within ``wait_s``) run as one batched generate, up to ``max_batch``;
    streaming requests run one at a time between batches.
    """

    def __init__(self, engine: Engine, max_batch: int = 8, wait_s: float = 0.005, max_queue: int = 256):
        self.engine, self.max_batch, self.wait_s, self.max_queue = engine, max_batch, wait_s, max_queue
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self._held: deque[_Job] = deque()
        self._waiting = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches: list[int] = []
        """Sizes of the batches run so far (the last 1000), for tests and metrics."""

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="thinksearch-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _enqueue(self, job: _Job) -> None:
        with self._lock:
            if self._waiting >= self.max_queue:
                raise Busy()
            self._waiting += 1
        self._q.put(job)

    def submit(self, messages: list[Message], sampling: Sampling) -> Future:
        """Queue a non-streaming generate; the future gets a Completion."""
        job = _Job(messages, sampling, future=Future())
        self._enqueue(job)
        return job.future  # type: ignore[return-value]

    def submit_stream(self, messages: list[Message], sampling: Sampling, put: Callable[[Any], None],
                      cancel: threading.Event) -> None:
        """Queue a streaming generate: ``put`` receives pieces, a Completion (or an exception), then the end marker."""
        self._enqueue(_Job(messages, sampling, put=put, cancel=cancel))

    def stream(self, messages: list[Message], sampling: Sampling,
               cancel: threading.Event | None = None) -> Iterator[str | Completion]:
        """Queue a streaming generate and iterate it from a plain thread."""
        q: queue.Queue[Any] = queue.Queue()
        inner = threading.Event()  # stops this job; the caller's event is only read
        self.submit_stream(messages, sampling, q.put, inner)
        try:
            while (item := q.get()) is not END:
                if isinstance(item, BaseException):
                    raise item
                if cancel is not None and cancel.is_set():
                    inner.set()
                yield item
        finally:
            inner.set()

    def _next(self, timeout: float | None) -> _Job | None:
        if self._held:
            return self._held.popleft()
        return self._q.get(timeout=timeout)

    def _work(self) -> None:
        while True:
            job = self._next(None)
            if job is None:
                return
            if job.put is not None:
                self._run_stream(job)
                continue
            batch = [job]
            deadline = time.monotonic() + self.wait_s
            put_back: list[_Job] = []
            while len(batch) < self.max_batch:
                try:
                    more = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    put_back.append(more)  # type: ignore[arg-type]
                    break
                (batch if more.put is None and more.key == job.key else put_back).append(more)
            self._held.extend(j for j in put_back if j is not None)
            if None in put_back:
                self._q.put(None)
            self._run_batch(batch)

    def _done(self, n: int) -> None:
        with self._lock:
            self._waiting -= n

    def _run_batch(self, batch: list[_Job]) -> None:
        live = [j for j in batch if not j.future.cancelled()]  # type: ignore[union-attr]
        self.batches = (self.batches + [len(live)])[-1000:]
        try:
            if live:
                outs = self.engine.generate([j.messages for j in live], live[0].sampling)
                for j, c in zip(live, outs):
                    j.future.set_result(c)  # type: ignore[union-attr]
        except BaseException as e:  # the requests fail, the worker lives on
            log.exception("generation failed")
            for j in live:
                if not j.future.done():  # type: ignore[union-attr]
                    j.future.set_exception(e)  # type: ignore[union-attr]
        finally:
            self._done(len(batch))

    def _run_stream(self, job: _Job) -> None:
        assert job.put is not None
        try:
            if not job.cancel.is_set():
                for item in self.engine.stream(job.messages, job.sampling, job.cancel):
                    job.put(item)
        except BaseException as e:
            log.exception("streaming generation failed")
            job.put(e)
        finally:
            self._done(1)
            job.put(END)


class QueuedEngine:
    """The engine as the agent loop sees it inside the server: every generate goes through the batcher,
    so the rounds of concurrent ``run_tools`` requests are batched together too."""

    def __init__(self, engine: Engine, batcher: Batcher):
        self.inner, self.batcher = engine, batcher
        self.name, self.context_length = engine.name, engine.context_length
        self.tokenizer = getattr(engine, "tokenizer", None)  # for the agent's decision shift

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return self.inner.count_tokens(messages)

    def generate(self, conversations: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        futures = [self.batcher.submit(list(m), sampling) for m in conversations]
        return [f.result() for f in futures]

    def next_logprobs(self, conversations: Sequence[Sequence[Message]], tokens: Sequence[int]) -> list[dict[int, float]]:
        # One forward pass, not a generation: it goes to the engine directly (each engine is
        # safe to call from several threads), not through the queue.
        return self.inner.next_logprobs(conversations, tokens)

    def stream(self, messages: Sequence[Message], sampling: Sampling,
               cancel: threading.Event | None = None) -> Iterator[str | Completion]:
        return self.batcher.stream(list(messages), sampling, cancel)

    def close(self) -> None:
        pass
