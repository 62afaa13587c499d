"""What the agent loop needs from a model: the :class:`Engine` protocol and the message type.

An engine renders a conversation with the model's chat template, counts its tokens,
generates the next assistant turn (batched), streams one, and reads the log-probabilities of
the next token (the agent's search decision, :mod:`thinksearch.steer`). The three engines live next to
this module: :mod:`.transformers` (in-process), :mod:`.openai` (an OpenAI-compatible
endpoint) and :mod:`.llamacpp` (llama.cpp in this process).
"""

from __future__ import annotations

import threading
from typing import Any, Iterator, Protocol, Sequence

from thinksearch import format as fmt
from thinksearch.generation import Completion, Sampling

Message = dict[str, Any]
STOP = (fmt.TOOL_CLOSE,)


class Engine(Protocol):
    """What the agent needs from a model: render, count, generate (batched), stream, next-token log-probabilities."""

    name: str
    context_length: int
    """Tokens the model can attend to (prompt + completion)."""

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens of the prompt these messages render to (generation prompt included)."""
        ...

    def generate(self, conversations: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        """The next assistant turn of each conversation, stopping after ``</tool_call>``."""
        ...

    def next_logprobs(self, conversations: Sequence[Sequence[Message]], tokens: Sequence[int]) -> list[dict[int, float]]:
        """Per conversation, the log-probabilities of ``tokens`` as the token that comes next
        (a conversation ending in an assistant turn goes on with it); a token the engine
        does not report (outside an endpoint's top log-probabilities) is left out."""
        ...

    def stream(
        self, messages: Sequence[Message], sampling: Sampling, cancel: threading.Event | None = None
    ) -> Iterator[str | Completion]:
        """Text pieces as they are generated, then one :class:`Completion` for the whole turn.

        Setting ``cancel`` ends generation early; the final Completion still comes.
        """
        ...

    def close(self) -> None: ...
