"""The in-process transformers engine: base + LoRA adapter or a merged directory, CPU or GPU."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from thinksearch import format as fmt
from thinksearch.config import AgentConfig
from thinksearch.engines.base import STOP, Message
from thinksearch.generation import Completion, Sampling

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def _cut_at_stop(text: str) -> tuple[str, bool]:
    cut = text.find(fmt.TOOL_CLOSE)
    return (text[: cut + len(fmt.TOOL_CLOSE)], True) if cut >= 0 else (text, False)


class _CountingModel:
    """The model as ``generation.stream`` sees it, recording the token ids it generates
    (re-tokenizing the streamed text would not give the same count)."""

    def __init__(self, model: Any):
        self._model, self.ids = model, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, *args: Any, streamer: Any = None, **kwargs: Any) -> Any:
        put, seen_prompt = streamer.put, [False]

        def counting_put(value: Any) -> None:
            if seen_prompt[0]:  # the streamer's first call carries the prompt
                self.ids.extend(value.reshape(-1).tolist())
            seen_prompt[0] = True
            put(value)

        streamer.put = counting_put
        return self._model.generate(*args, streamer=streamer, **kwargs)


class TransformersEngine:
    """In-process transformers model (CPU or GPU); base + LoRA adapter or a merged directory."""

    def __init__(self, model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", name: str = "transformers",
                 batch_size: int = 8, context_length: int | None = None):
        self.model, self.tokenizer, self.name, self.batch_size = model, tokenizer, name, batch_size
        limit = getattr(model.config, "max_position_embeddings", None) or 4096
        self.context_length = min(limit, context_length or limit)
        # One generate at a time: a model's forward pass is not safe to share between threads.
        self._lock = threading.RLock()

    @classmethod
    def from_config(cls, cfg: AgentConfig) -> "TransformersEngine":
        from thinksearch import models

        model, tokenizer = models.load(cfg.model, cfg.adapter, dtype=cfg.dtype, device=cfg.device)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        return cls(model, tokenizer, name=f"transformers ({dtype}, {next(model.parameters()).device})",
                   context_length=cfg.context_tokens)

    def render(self, messages: Sequence[Message]) -> str:
        return fmt.render(self.tokenizer, messages, add_generation_prompt=True)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def generate(self, conversations: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        from thinksearch import generation

        prompts = [self.render(m) for m in conversations]
        with self._lock:
            return generation.generate(self.model, self.tokenizer, prompts, sampling, stop=STOP, batch_size=self.batch_size)

    def next_logprobs(self, conversations: Sequence[Sequence[Message]], tokens: Sequence[int]) -> list[dict[int, float]]:
        from thinksearch import generation

        ids = [self.tokenizer(self.render(m), add_special_tokens=False)["input_ids"] for m in conversations]
        with self._lock:
            rows = generation.next_logprobs(self.model, self.tokenizer.pad_token_id, ids, self.batch_size)
        return [{t: float(row[t]) for t in tokens} for row in rows]

    def stream(self, messages: Sequence[Message], sampling: Sampling,
               cancel: threading.Event | None = None) -> Iterator[str | Completion]:
        from thinksearch import generation

        prompt = self.render(messages)
        n_prompt = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        # generation.stream sets its event when it finishes; the caller's stays theirs.
        inner = threading.Event()
        counted = _CountingModel(self.model)
        text, stopped = "", False
        t0 = time.perf_counter()
        with self._lock:
            pieces = generation.stream(counted, self.tokenizer, prompt, sampling, stop=STOP, cancel=inner)  # type: ignore[arg-type]
            try:
                for piece in pieces:
                    before = len(text)
                    text, stopped = _cut_at_stop(text + piece)
                    if len(text) > before:
                        yield text[before:]
                    if stopped or (cancel is not None and cancel.is_set()):
                        break
            finally:
                inner.set()
                pieces.close()
        n = len(counted.ids)
        eos = set(generation.eos_ids(self.tokenizer))
        ended = stopped or bool(counted.ids and counted.ids[-1] in eos) or n < sampling.max_new_tokens
        yield Completion(text, "stop" if ended else "length", n_prompt, n, time.perf_counter() - t0)

    def close(self) -> None:
        pass
