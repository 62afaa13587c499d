"""The search protocol shared by every backend, synthesis and the agent loop."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from thinksearch.errors import ThinksearchError


@dataclass(frozen=True)
class Result:
    """One search hit. Untrusted text: render it with ``format.render_results``."""

    title: str
    snippet: str
    url: str = ""
    date: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SearchError(ThinksearchError):
    """A backend could not answer (down, timed out, bad index); the message names where."""


@runtime_checkable
class SearchBackend(Protocol):
    name: str
    """Backend label recorded in data ``meta`` (``local``, ``searxng``, ``simulated`` …)."""

    def search(self, query: str, k: int = 5) -> list[Result]:
        """Up to ``k`` results, best first. Raises SearchError when the backend fails."""
        ...
