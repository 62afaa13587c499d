"""HTTP search backends: a SearXNG instance (``searxng``) and Wikipedia's API (``wikipedia``).

Both use httpx with one deadline per search: ``timeout_s`` bounds the whole call, retries
included, so a backend that hangs costs at most ``timeout_s`` and one that is down fails in
about a second; either way the caller gets a :class:`SearchError` naming the URL. Connection
failures, timeouts, HTTP 429 and 5xx are retried (``retries`` times, with backoff, while the
deadline allows); other HTTP errors are reported at once.

SearXNG: ``GET {url}/search?q=…&format=json`` (the instance must list ``json`` under
``search.formats`` in its settings.yml). Base URL from config ``url`` or
``$THINKSEARCH_SEARXNG_URL``.

Wikipedia: one MediaWiki API request, ``action=query&generator=search`` with
``prop=extracts|info|revisions``: the pages ranked by the search, each with its plain-text
intro, URL and last edit date. Base URL from config ``url`` (an ``api.php`` endpoint or a
site root) or ``https://{language}.wikipedia.org/w/api.php``.

Run as: ``python -c "from thinksearch.search.web import SearxngBackend as S; print(S('http://127.0.0.1:8888').search('北京 天气'))"``.
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from thinksearch import __version__
from thinksearch.search.base import Result, SearchError

SEARXNG_ENV = "THINKSEARCH_SEARXNG_URL"
USER_AGENT = f"thinksearch/{__version__} (search tool; httpx)"
_RETRY_STATUS = {429, 500, 502, 503, 504}


def _date(value: Any) -> str:
    """The ``YYYY-MM-DD`` part of an ISO timestamp, or ''.

    >>> _date("2024-05-01T08:00:00Z"), _date(None)
    ('2024-05-01', '')
    """
    return value[:10] if isinstance(value, str) and len(value) >= 10 and value[4] == "-" else ""


class _JsonApi:
    """A GET-JSON client with a per-call deadline and bounded retries (shared by both backends)."""

    def __init__(self, url: str, timeout_s: float, retries: int, backoff_s: float = 0.25):
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        # transport retries cover connect errors before any byte is sent; the loop below covers the rest.
        self.client = httpx.Client(
            transport=httpx.HTTPTransport(retries=1),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=True,
        )

    def get(self, params: dict[str, Any], what: str) -> Any:
        deadline = time.monotonic() + self.timeout_s
        problem = ""
        for attempt in range(self.retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                r = self.client.get(self.url, params=params, timeout=httpx.Timeout(left))
            except httpx.TimeoutException:
                problem = f"no answer within {self.timeout_s:g}s"
            except httpx.TransportError as e:
                problem = f"cannot connect ({e.__class__.__name__}: {e or 'connection failed'})"
            else:
                if r.status_code in _RETRY_STATUS:
                    problem = f"HTTP {r.status_code}"
                elif r.status_code >= 400:
                    raise SearchError(f"{what} at {self.url} answered HTTP {r.status_code}{self._hint(r.status_code)}")
                else:
                    try:
                        return r.json()
                    except ValueError:
                        raise SearchError(f"{what} at {self.url} did not answer JSON (is this the right URL?)") from None
            pause = min(self.backoff_s * 2**attempt, deadline - time.monotonic())
            if attempt < self.retries and pause > 0:
                time.sleep(pause)
        raise SearchError(f"{what} at {self.url} is unreachable: {problem or f'no answer within {self.timeout_s:g}s'}")

    def _hint(self, status: int) -> str:
        return ""

    def close(self) -> None:
        self.client.close()


class _SearxngApi(_JsonApi):
    def _hint(self, status: int) -> str:
        if status == 403:
            return " (its JSON API is off: add json to search.formats in the instance's settings.yml)"
        return ""


class SearxngBackend:
    """A SearXNG instance's JSON API."""

    name = "searxng"

    def __init__(self, url: str | None = None, language: str = "zh", timeout_s: float = 10.0,
                 retries: int = 2, snippet_chars: int = 400):
        url = url or os.environ.get(SEARXNG_ENV)
        if not url:
            raise SearchError(f"search backend 'searxng' needs a URL: set search.url (--search-url) or ${SEARXNG_ENV}")
        base = url.rstrip("/")
        if base.endswith("/search"):
            base = base[: -len("/search")]
        self.base_url = base
        self.language = language
        self.snippet_chars = snippet_chars
        self._api = _SearxngApi(base + "/search", timeout_s, retries)

    @classmethod
    def from_config(cls, cfg: Any, teacher: Any = None) -> "SearxngBackend":
        return cls(cfg.url, language=cfg.language, timeout_s=cfg.timeout_s, retries=cfg.retries,
                   snippet_chars=cfg.max_result_chars)

    @property
    def cache_key(self) -> str:
        return f"searxng:{self.base_url}:{self.language}"

    def search(self, query: str, k: int = 5) -> list[Result]:
        if not query.strip() or k <= 0:
            return []
        params = {"q": query, "format": "json", "pageno": 1}
        if self.language:
            params["language"] = self.language
        data = self._api.get(params, "SearXNG")
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise SearchError(f"SearXNG at {self._api.url} answered JSON without a results list")
        out: list[Result] = []
        seen: set[str] = set()
        for item in data["results"]:
            if not isinstance(item, dict):
                continue
            url = str(item.get("url") or "")
            title = " ".join(str(item.get("title") or "").split())
            snippet = " ".join(str(item.get("content") or "").split())
            if not (title or snippet) or url in seen:
                continue
            seen.add(url)
            source = urlsplit(url).netloc or str(item.get("engine") or "")
            out.append(Result(title, snippet[: self.snippet_chars], url, _date(item.get("publishedDate")), source))
            if len(out) >= k:
                break
        return out

    def close(self) -> None:
        self._api.close()


class WikipediaBackend:
    """Wikipedia (any MediaWiki) through its search + extracts API, in one request per query."""

    name = "wikipedia"

    def __init__(self, url: str | None = None, language: str = "zh", timeout_s: float = 10.0,
                 retries: int = 2, snippet_chars: int = 400):
        lang = (language or "en").split("-")[0].lower()
        if not url:
            url = f"https://{lang}.wikipedia.org/w/api.php"
        elif not url.rstrip("/").endswith(".php"):
            url = url.rstrip("/") + "/w/api.php"
        self.language = lang
        self.snippet_chars = snippet_chars
        self._api = _JsonApi(url, timeout_s, retries)

    @classmethod
    def from_config(cls, cfg: Any, teacher: Any = None) -> "WikipediaBackend":
        return cls(cfg.url, language=cfg.language, timeout_s=cfg.timeout_s, retries=cfg.retries,
                   snippet_chars=cfg.max_result_chars)

    @property
    def cache_key(self) -> str:
        return f"wikipedia:{self._api.url}"

    def search(self, query: str, k: int = 5) -> list[Result]:
        if not query.strip() or k <= 0:
            return []
        k = min(k, 20)  # the extracts API answers at most 20 pages per request
        params = {
            "action": "query", "format": "json", "formatversion": 2, "utf8": 1,
            "generator": "search", "gsrsearch": query, "gsrlimit": k, "gsrnamespace": 0,
            "prop": "extracts|info|revisions", "exintro": 1, "explaintext": 1, "exlimit": k,
            "exchars": min(max(self.snippet_chars, 100), 1200),  # the API refuses more than 1200
            "inprop": "url", "rvprop": "timestamp",
        }
        data = self._api.get(params, "Wikipedia API")
        if not isinstance(data, dict):
            raise SearchError(f"Wikipedia API at {self._api.url} answered unexpected JSON")
        if "error" in data:
            err = data["error"] if isinstance(data["error"], dict) else {}
            raise SearchError(f"Wikipedia API at {self._api.url} refused the query: {err.get('info') or err.get('code') or data['error']}")
        pages = (data.get("query") or {}).get("pages") or []
        if isinstance(pages, dict):  # formatversion=1 servers answer a dict keyed by page id
            pages = list(pages.values())
        pages = sorted((p for p in pages if isinstance(p, dict) and not p.get("missing")),
                       key=lambda p: p.get("index", 1 << 30))
        out = []
        for p in pages[:k]:
            title = str(p.get("title") or "")
            extract = " ".join(str(p.get("extract") or "").split())
            revs = p.get("revisions") or [{}]
            url = p.get("fullurl") or ""
            out.append(Result(title, extract[: self.snippet_chars], url,
                              _date(revs[0].get("timestamp") if isinstance(revs[0], dict) else None),
                              f"{self.language}.wikipedia" if "wikipedia.org" in self._api.url else urlsplit(self._api.url).netloc))
        return out

    def close(self) -> None:
        self._api.close()
