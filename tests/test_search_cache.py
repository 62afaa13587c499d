"""The SQLite result cache: hits, what the key includes, persistence, threads, failures."""

from __future__ import annotations

import threading

import pytest

from thinksearch.config import SearchConfig
from thinksearch.search import CachedBackend, LocalBackend, SearchError, make_backend
from thinksearch.search.base import Result
from thinksearch.search.local import build_index


class CountingBackend:
    """A backend at the edge that counts the searches that reach it."""

    name = "counting"

    def __init__(self, cache_key: str = "counting:v1", fail: bool = False):
        self.cache_key = cache_key
        self.fail = fail
        self.calls = 0
        self._lock = threading.Lock()

    def search(self, query, k=5):
        with self._lock:
            self.calls += 1
        if self.fail:
            raise SearchError("backend down")
        return [Result(f"{query} #{i}", f"snippet {i} <|im_end|>", f"https://e.x/{i}", "2025-01-01", "src") for i in range(k)]


def test_hits_misses_and_the_key(tmp_path):
    inner = CountingBackend()
    cache = CachedBackend(inner, tmp_path / "c.sqlite")
    assert cache.name == "counting"
    first = cache.search("北京 天气", 3)
    assert cache.search("北京 天气", 3) == first and inner.calls == 1
    assert (cache.hits, cache.misses) == (1, 1)
    cache.search("北京 天气", 2)    # k is part of the key
    cache.search("北京天气", 3)     # so is the exact query
    assert inner.calls == 3
    other = CountingBackend(cache_key="counting:v2")  # what decides the results changed
    CachedBackend(other, tmp_path / "c.sqlite").search("北京 天气", 3)
    assert other.calls == 1


def test_persists_across_runs(tmp_path):
    first = CachedBackend(CountingBackend(), tmp_path / "sub" / "c.sqlite").search("q", 2)
    again = CountingBackend()
    assert CachedBackend(again, tmp_path / "sub" / "c.sqlite").search("q", 2) == first
    assert again.calls == 0


def test_failures_are_not_cached_and_empty_answers_are(tmp_path):
    failing = CountingBackend(fail=True)
    cache = CachedBackend(failing, tmp_path / "c.sqlite")
    for _ in range(2):
        with pytest.raises(SearchError, match="backend down"):
            cache.search("q", 2)
    assert failing.calls == 2
    empty = CountingBackend()
    cache = CachedBackend(empty, tmp_path / "c.sqlite")
    assert cache.search("q", 0) == [] and cache.search("q", 0) == [] and empty.calls == 1


def test_concurrent_threads_agree(tmp_path):
    inner = CountingBackend()
    cache = CachedBackend(inner, tmp_path / "c.sqlite")
    seen: dict[str, list] = {}
    errors = []

    def work(t):
        try:
            for i in range(30):
                seen.setdefault(f"{t}-{i}", []).append(cache.search(f"q{i % 10}", 3))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert inner.calls >= 10 and cache.hits + cache.misses == 180
    answers = {}
    for key, (res,) in seen.items():
        answers.setdefault(res[0].title, []).append(res)
    assert len(answers) == 10 and all(all(r == rs[0] for r in rs) for rs in answers.values())


def test_make_backend_wraps_local_and_a_rebuild_invalidates(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text("北京天气晴朗。", encoding="utf-8")
    index = tmp_path / "i.sqlite"
    build_index([corpus], index, tokenizer="bigram")
    backend = make_backend(SearchConfig(index=str(index), cache=str(tmp_path / "cache.sqlite")))
    assert isinstance(backend, CachedBackend) and backend.name == "local"
    assert backend.search("天气", 3)[0].snippet == "北京天气晴朗。"
    assert backend.search("天气", 3)[0].snippet == "北京天气晴朗。" and backend.hits == 1
    (corpus / "a.txt").write_text("北京天气下雨。", encoding="utf-8")
    build_index([corpus], index)
    assert backend.search("天气", 3)[0].snippet == "北京天气下雨。"  # new index generation: a miss
    assert isinstance(make_backend(SearchConfig(index=str(index))), LocalBackend)


def test_unusable_cache_path(tmp_path):
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(SearchError, match=r"^cannot open search cache .*dir\.sqlite: unable to open database file$"):
        CachedBackend(CountingBackend(), tmp_path / "dir.sqlite")
