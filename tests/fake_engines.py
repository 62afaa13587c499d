"""Fakes at the edges of the agent: a scripted engine (the model's turns are given) and
search backends that return fixed results or fail.

The scripted engine renders every prompt with the real chat template of the tiny tokenizer,
so tests can look at exactly what a model would have been fed.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator, Sequence

from thinksearch import format as fmt
from thinksearch.generation import Completion, Sampling
from thinksearch.search.base import Result, SearchError


class ScriptedEngine:
    """Answers each generate/stream call with the next scripted text (or ``reply(messages)``)."""

    name = "scripted"

    def __init__(self, tokenizer: Any, script: Sequence[str] = (), reply: Callable[[list], str] | None = None,
                 context_length: int = 4096, delay_s: float = 0.0):
        self.tokenizer, self.script, self.reply = tokenizer, list(script), reply
        self.logprobs: Callable[[list], dict[int, float]] | None = None
        """What :meth:`next_logprobs` reports for a conversation."""
        self.context_length, self.delay_s = context_length, delay_s
        self.prompts: list[str] = []
        self.seen: list[list[dict]] = []
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    def render(self, messages: Sequence[dict]) -> str:
        return fmt.render(self.tokenizer, messages, add_generation_prompt=True)

    def count_tokens(self, messages: Sequence[dict]) -> int:
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def _next(self, messages: Sequence[dict], sampling: Sampling) -> Completion:
        with self._lock:
            self.prompts.append(self.render(messages))
            self.seen.append([dict(m) for m in messages])
            text = self.reply(list(messages)) if self.reply else (self.script.pop(0) if self.script else "好的。")
        # Like the real engines: stop after </tool_call>, cap at max_new_tokens (in characters here).
        cut = text.find(fmt.TOOL_CLOSE)
        if cut >= 0:
            text = text[: cut + len(fmt.TOOL_CLOSE)]
        reason = "stop"
        if len(text) > sampling.max_new_tokens:
            text, reason = text[: sampling.max_new_tokens], "length"
        return Completion(text, reason, self.count_tokens(messages), len(text), 0.0)  # type: ignore[arg-type]

    def generate(self, conversations: Sequence[Sequence[dict]], sampling: Sampling) -> list[Completion]:
        self.batch_sizes.append(len(conversations))
        if self.delay_s:
            time.sleep(self.delay_s)
        return [self._next(m, sampling) for m in conversations]

    def next_logprobs(self, conversations: Sequence[Sequence[dict]], tokens: Sequence[int]) -> list[dict[int, float]]:
        """``logprobs(messages)`` of each conversation (none set: no token reported)."""
        with self._lock:
            self.seen.extend([dict(m) for m in c] for c in conversations)
        return [{t: v for t, v in (self.logprobs(list(c)) if self.logprobs else {}).items() if t in tokens}
                for c in conversations]

    def stream(self, messages: Sequence[dict], sampling: Sampling,
               cancel: threading.Event | None = None) -> Iterator[str | Completion]:
        c = self._next(messages, sampling)
        sent = ""
        for i in range(0, len(c.text), 3):  # pieces that cut tags apart, like real tokens do
            if cancel is not None and cancel.is_set():
                break
            if self.delay_s:
                time.sleep(self.delay_s)
            sent += c.text[i:i + 3]
            yield c.text[i:i + 3]
        yield Completion(sent, c.finish_reason, c.prompt_tokens, len(sent), 0.0)

    def close(self) -> None:
        pass


class FixedSearch:
    """Returns the given results for every query and remembers the queries."""

    name = "fixed"

    def __init__(self, results: Sequence[Result] = ()):
        self.results = list(results) or [Result("比特币价格", "比特币今日约6万美元", "https://e.x/1", "2025-01-02", "新闻")]
        self.queries: list[str] = []

    def search(self, query: str, k: int = 5) -> list[Result]:
        self.queries.append(query)
        return self.results[:k]


class FailingSearch:
    name = "failing"

    def __init__(self, message: str = "searxng at http://127.0.0.1:9 did not answer (connection refused)"):
        self.message = message
        self.queries: list[str] = []

    def search(self, query: str, k: int = 5) -> list[Result]:
        self.queries.append(query)
        raise SearchError(self.message)


def call(query: str, thinking: str = "需要最新数据。") -> str:
    """A model turn that thinks and calls the search tool (as the template renders it)."""
    return fmt.render_assistant(fmt.thinking_block(thinking), [fmt.search_call(query)])


def answer(text: str, thinking: str = "根据结果回答。") -> str:
    return f"{fmt.thinking_block(thinking)}\n\n{text}"


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, app):
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
