"""A SQLite cache of search results, so a synthesis run is reproducible and cheap to rerun.

The key is (backend name, what else decides its results, query, k). "What else" is the
backend's ``cache_key``: the index file and its generation for ``local`` (a rebuild changes
it), the base URL and language for the HTTP backends, the teacher and prompt version for
``simulated``. The first answer stored for a key wins: if two threads miss the same key at
once, both return the stored one. Failures are never cached; empty answers are.

Safe from threads (a connection per thread) and from several processes (WAL, busy timeout).

Run as: ``CachedBackend(LocalBackend("index.sqlite"), "cache.sqlite").search("北京 天气", 5)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from thinksearch.search.base import Result, SearchBackend, SearchError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results(
    key TEXT PRIMARY KEY, backend TEXT NOT NULL, identity TEXT NOT NULL, query TEXT NOT NULL,
    k INTEGER NOT NULL, results TEXT NOT NULL, created REAL NOT NULL);
"""


def cache_key(identity: str, query: str, k: int) -> str:
    return hashlib.sha256(json.dumps([identity, query, k], ensure_ascii=False).encode()).hexdigest()


class CachedBackend:
    """Wraps a backend; same ``name`` (so data records the real backend), answers from the cache."""

    def __init__(self, backend: SearchBackend, path: str | os.PathLike[str]):
        self.backend = backend
        self.name = backend.name
        self.path = Path(path)
        self.hits = 0
        self.misses = 0
        self._local = threading.local()
        self._count_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn()
        except (OSError, sqlite3.Error) as e:
            raise SearchError(f"cannot open search cache {self.path}: {e}") from None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._local.conn = conn
        return conn

    @property
    def identity(self) -> str:
        return getattr(self.backend, "cache_key", None) or self.backend.name

    def _lookup(self, key: str) -> list[Result] | None:
        row = self._conn().execute("SELECT results FROM results WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        return [Result(**r) for r in json.loads(row[0])]

    def search(self, query: str, k: int = 5) -> list[Result]:
        identity = self.identity
        key = cache_key(identity, query, k)
        try:
            cached = self._lookup(key)
        except (sqlite3.Error, ValueError, TypeError) as e:
            raise SearchError(f"search cache {self.path} is unreadable ({e}); delete it to start afresh") from None
        if cached is not None:
            with self._count_lock:
                self.hits += 1
            return cached
        results = self.backend.search(query, k)  # a failure raises and is not cached
        with self._count_lock:
            self.misses += 1
        payload = json.dumps([r.to_dict() for r in results], ensure_ascii=False)
        try:
            self._conn().execute(
                "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, self.name, identity, query, k, payload, time.time()))
            stored = self._lookup(key)
        except sqlite3.Error as e:
            raise SearchError(f"cannot write search cache {self.path}: {e}") from None
        return stored if stored is not None else results

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        inner_close = getattr(self.backend, "close", None)
        if inner_close:
            inner_close()
