"""Teachers: the models that write synthesis data, behind one batch protocol.

Backends (``openai``, ``local``, ``vllm``) implement :class:`Teacher`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence


@dataclass
class TeacherRequest:
    """One chat completion to make. ``messages`` go through the teacher's chat template."""

    messages: list[dict[str, Any]]
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95


@dataclass
class TeacherReply:
    text: str
    """The completion, with an R1-style ``reasoning</think>`` prefix split off into ``reasoning``."""
    reasoning: str | None = None
    finish_reason: Literal["stop", "length", "error"] = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    """Why the request failed after all retries (finish_reason is then "error")."""
    meta: dict[str, Any] = field(default_factory=dict)


class Teacher(Protocol):
    name: str
    """What to record in ``meta.teacher`` (model name and backend)."""

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]:
        """Answer every request, in order. Failures come back as replies with ``error`` set."""
        ...
