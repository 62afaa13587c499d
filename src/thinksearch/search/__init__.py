"""The search tool: one small protocol, several backends, a result cache.

``search(query, k) -> list[Result]``; see :mod:`thinksearch.search.base`.
"""

from thinksearch.search.base import Result, SearchBackend, SearchError

__all__ = ["Result", "SearchBackend", "SearchError"]
