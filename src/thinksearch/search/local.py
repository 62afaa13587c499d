"""The ``local`` backend: search a SQLite FTS5 index (bm25 ranking) over your own files.

The corpus formats are in :mod:`.passages`, the index and how it is built in :mod:`.indexing`
(:func:`build_index` is importable from here too).

A query's words are OR-ed and ranked by bm25 (title weighted over body), like a web search
box: a document matching more and rarer words ranks higher. Words found in more than
``COMMON_DF`` of all passages (的, 是, …) are dropped from a query that has rarer words, which
keeps latency low and barely changes the ranking.

Run as: ``thinksearch index build CORPUS... --out index.sqlite`` then
``thinksearch index search index.sqlite "北京 天气"``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Sequence

from thinksearch.search import segment
from thinksearch.search.base import Result, SearchError
from thinksearch.search.indexing import BuildReport, build_index, connect, open_index_meta

TITLE_WEIGHT = 2.0


def _snippet(text: str, terms: Sequence[segment.Term], limit: int) -> str:
    """The passage, or for a long one the window of ``limit`` characters around the first hit."""
    if len(text) <= limit:
        return text
    low = text.lower()
    hits = [i for t in terms if (i := low.find(t.text)) >= 0]
    start = max(0, min(hits) - limit // 4) if hits else 0
    piece = text[start : start + limit]
    return ("…" if start else "") + piece + ("…" if start + limit < len(text) else "")


class LocalBackend:
    """Search a local FTS5 index built by :func:`build_index`. Thread-safe (a connection per thread)."""

    name = "local"

    def __init__(self, index: str | os.PathLike[str], snippet_chars: int = 400):
        self.path = Path(index)
        self.snippet_chars = snippet_chars
        if not self.path.is_file():
            raise SearchError(f"index not found: {self.path}; build it with `thinksearch index build CORPUS --out {self.path}`")
        self._local = threading.local()
        meta = open_index_meta(self._conn(), self.path)
        self.tokenizer: segment.Splitter = meta["tokenizer"]  # type: ignore[assignment]
        if self.tokenizer == "jieba":
            segment._jieba_cut()  # fail now, with the install hint, rather than at the first query

    @classmethod
    def from_config(cls, cfg: Any, teacher: Any = None) -> "LocalBackend":
        return cls(cfg.index, snippet_chars=cfg.max_result_chars)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = connect(self.path, readonly=True)
            except sqlite3.Error as e:
                raise SearchError(f"cannot open index {self.path}: {e}") from None
            self._local.conn = conn
        return conn

    @property
    def cache_key(self) -> str:
        """Changes whenever the index content does, so cached results never go stale."""
        row = self._conn().execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return f"local:{self.path.resolve()}:{row[0] if row else ''}"

    def _terms(self, query: str) -> list[segment.Term]:
        terms = segment.query_terms(query, self.tokenizer)
        words = [t.text for t in terms if not t.prefix]
        if len(terms) < 2 or not words:
            return terms
        common = {row[0] for row in self._conn().execute(
            f"SELECT term FROM common WHERE term IN ({','.join('?' * len(words))})", words)}
        return [t for t in terms if t.text not in common or t.prefix] or terms

    def search(self, query: str, k: int = 5) -> list[Result]:
        terms = self._terms(query)
        if not terms or k <= 0:
            return []
        match = " OR ".join(t.fts() for t in terms)
        try:
            rows = self._conn().execute(
                "SELECT p.title, p.text, p.url, p.date, p.source FROM "
                f"(SELECT rowid, bm25(fts, {TITLE_WEIGHT}, 1.0) AS score FROM fts WHERE fts MATCH ? "
                "ORDER BY score LIMIT ?) AS hit JOIN passages p ON p.id = hit.rowid ORDER BY hit.score",
                (match, k)).fetchall()
        except sqlite3.Error as e:
            raise SearchError(f"index {self.path}: search failed: {e}") from None
        return [Result(title, _snippet(text, terms, self.snippet_chars), url, date, source)
                for title, text, url, date, source in rows]


__all__ = ["BuildReport", "LocalBackend", "TITLE_WEIGHT", "build_index"]
