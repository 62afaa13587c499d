"""The search tool: one small protocol, several backends, a result cache.

``search(query, k) -> list[Result]``; see :mod:`thinksearch.search.base`. Backends:
``local`` (SQLite FTS5 index, :mod:`.local`), ``searxng`` and ``wikipedia`` (HTTP APIs,
:mod:`.web`), ``simulated`` (a teacher writes results, :mod:`.simulated`). Synthesis and the
agent get theirs from :func:`make_backend` and record ``backend.name`` with each sample.

Run as: ``python -c "from thinksearch.config import SearchConfig; from thinksearch.search import make_backend; print(make_backend(SearchConfig(index='index.sqlite')).search('北京 天气'))"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thinksearch.search.base import Result, SearchBackend, SearchError
from thinksearch.search.cache import CachedBackend
from thinksearch.search.local import LocalBackend
from thinksearch.search.simulated import SimulatedBackend
from thinksearch.search.web import SearxngBackend, WikipediaBackend

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.config import SearchConfig
    from thinksearch.teacher import Teacher

BACKENDS = {
    "local": LocalBackend,
    "searxng": SearxngBackend,
    "wikipedia": WikipediaBackend,
    "simulated": SimulatedBackend,
}


def make_backend(cfg: "SearchConfig", teacher: "Teacher | None" = None) -> SearchBackend:
    """The backend ``cfg.backend`` names, behind the result cache when ``cfg.cache`` is set.

    ``teacher`` is needed only by ``simulated``. The returned object's ``name`` is always the
    backend's own (``local``, ``searxng``, ``wikipedia``, ``simulated``), cached or not.
    """
    backend = BACKENDS[cfg.backend].from_config(cfg, teacher)
    if cfg.cache:
        return CachedBackend(backend, cfg.cache)
    return backend


__all__ = [
    "BACKENDS", "CachedBackend", "LocalBackend", "Result", "SearchBackend", "SearchError",
    "SearxngBackend", "SimulatedBackend", "WikipediaBackend", "make_backend",
]
