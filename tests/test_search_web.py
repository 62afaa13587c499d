"""SearXNG and Wikipedia backends against a real HTTP server on 127.0.0.1 answering in the
real APIs' JSON formats: parsing, parameters sent, retries, timeouts, a backend that is down."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from thinksearch.config import SearchConfig
from thinksearch.search import SearchError, SearxngBackend, WikipediaBackend, make_backend

# A SearXNG /search?format=json answer, trimmed from a real instance's (fields as it sends them).
SEARXNG_ANSWER = {
    "query": "比特币价格",
    "number_of_results": 0,
    "results": [
        {"url": "https://news.example.com/btc", "title": "比特币价格 今日行情", "content": "比特币今日报价约6万美元。",
         "engine": "bing", "parsed_url": ["https", "news.example.com", "/btc", "", "", ""], "template": "default.html",
         "engines": ["bing", "google"], "positions": [1, 2], "publishedDate": "2025-01-02T08:00:00", "score": 4.0,
         "category": "general"},
        {"url": "https://wiki.example.org/比特币", "title": "比特币 - 百科", "content": "比特币是一种加密货币。\n  <tool_call>",
         "engine": "google", "engines": ["google"], "positions": [2], "publishedDate": None, "score": 1.0, "category": "general"},
        {"url": "https://news.example.com/btc", "title": "duplicate", "content": "same url again", "engine": "duckduckgo"},
        {"url": "https://third.example.net/x", "title": "第三条", "content": "第三条结果。", "engine": "bing"},
    ],
    "answers": [], "corrections": [], "infoboxes": [], "suggestions": ["比特币价格 美元"], "unresponsive_engines": [],
}

# A MediaWiki action=query&generator=search&prop=extracts|info|revisions&formatversion=2 answer.
# Pages come unordered; "index" is the search rank.
WIKI_ANSWER = {
    "batchcomplete": True,
    "continue": {"gsroffset": 2, "continue": "gsroffset||"},
    "query": {"pages": [
        {"pageid": 2, "ns": 0, "title": "北京时间", "index": 2, "contentmodel": "wikitext", "pagelanguage": "zh",
         "touched": "2025-02-01T00:00:00Z", "lastrevid": 9, "length": 900,
         "fullurl": "https://zh.wikipedia.org/wiki/%E5%8C%97%E4%BA%AC%E6%97%B6%E9%97%B4",
         "revisions": [{"timestamp": "2024-12-30T10:00:00Z"}], "extract": "北京时间是中国的标准时间。"},
        {"pageid": 1, "ns": 0, "title": "北京市", "index": 1, "contentmodel": "wikitext", "pagelanguage": "zh",
         "touched": "2025-02-01T00:00:00Z", "lastrevid": 7, "length": 5000,
         "fullurl": "https://zh.wikipedia.org/wiki/%E5%8C%97%E4%BA%AC%E5%B8%82",
         "revisions": [{"timestamp": "2025-01-15T09:30:00Z"}], "extract": "北京市，简称京，是中华人民共和国的首都。\n"},
    ]},
}


class Handler(BaseHTTPRequestHandler):
    calls: dict[str, int] = {}
    last_params: dict[str, dict] = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def _json(self, status: int, body) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        Handler.calls[url.path] = Handler.calls.get(url.path, 0) + 1
        Handler.last_params[url.path] = params
        n = Handler.calls[url.path]
        if url.path == "/search":
            assert params["format"] == "json"
            self._json(200, SEARXNG_ANSWER)
        elif url.path == "/flaky/search":
            self._json(503, {"error": "busy"}) if n == 1 else self._json(200, SEARXNG_ANSWER)
        elif url.path == "/nojson/search":
            self._json(403, {"error": "forbidden"})
        elif url.path == "/html/search":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>SearXNG</html>")
        elif url.path == "/slow/search":
            time.sleep(5)
            self._json(200, SEARXNG_ANSWER)
        elif url.path == "/w/api.php":
            if params.get("gsrsearch") == "无结果":
                self._json(200, {"batchcomplete": True})
            elif params.get("gsrsearch") == "insource:/(/":
                self._json(200, {"error": {"code": "cirrussearch-regex-syntax-error", "info": "Regular expression syntax error"}})
            else:
                self._json(200, WIKI_ANSWER)
        else:
            self._json(404, {"error": "not found"})


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def free_port_url():
    """A URL on 127.0.0.1 where nothing listens: a backend that is down."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def test_searxng_results(server):
    backend = SearxngBackend(server, language="zh-CN")
    results = backend.search("比特币价格", 5)
    assert [r.title for r in results] == ["比特币价格 今日行情", "比特币 - 百科", "第三条"]  # duplicate URL dropped
    first = results[0]
    assert (first.url, first.date, first.source, first.snippet) == (
        "https://news.example.com/btc", "2025-01-02", "news.example.com", "比特币今日报价约6万美元。")
    assert results[1].date == "" and results[1].snippet == "比特币是一种加密货币。 <tool_call>"  # raw: rendering neutralises
    assert Handler.last_params["/search"] == {"q": "比特币价格", "format": "json", "pageno": "1", "language": "zh-CN"}
    assert len(backend.search("比特币价格", 2)) == 2
    assert backend.search("  ", 5) == []


def test_searxng_url_from_environment(server, monkeypatch):
    monkeypatch.setenv("THINKSEARCH_SEARXNG_URL", server + "/search")  # a /search suffix is accepted
    backend = make_backend(SearchConfig(backend="searxng"))
    assert backend.name == "searxng" and backend.search("比特币价格", 1)[0].title == "比特币价格 今日行情"
    monkeypatch.delenv("THINKSEARCH_SEARXNG_URL")
    with pytest.raises(SearchError, match=r"^search backend 'searxng' needs a URL: set search.url \(--search-url\) or \$THINKSEARCH_SEARXNG_URL$"):
        make_backend(SearchConfig(backend="searxng"))


def test_retries_a_503(server):
    Handler.calls.pop("/flaky/search", None)
    backend = SearxngBackend(server + "/flaky", retries=2, timeout_s=5)
    assert len(backend.search("比特币价格", 5)) == 3
    assert Handler.calls["/flaky/search"] == 2


def test_json_api_switched_off(server):
    backend = SearxngBackend(server + "/nojson", retries=2)
    with pytest.raises(SearchError) as e:
        backend.search("x", 3)
    assert str(e.value) == (f"SearXNG at {server}/nojson/search answered HTTP 403 (its JSON API is off: "
                            "add json to search.formats in the instance's settings.yml)")
    with pytest.raises(SearchError, match=r"^SearXNG at .*/html/search did not answer JSON \(is this the right URL\?\)$"):
        SearxngBackend(server + "/html").search("x", 3)


def test_backend_down_fails_fast_naming_the_url(free_port_url):
    backend = SearxngBackend(free_port_url, timeout_s=5, retries=2)
    start = time.monotonic()
    with pytest.raises(SearchError) as e:
        backend.search("比特币", 3)
    assert time.monotonic() - start < 5  # never waits past the timeout, even with retries
    msg = str(e.value)
    assert msg.startswith(f"SearXNG at {free_port_url}/search is unreachable: cannot connect (ConnectError: ")
    assert "\n" not in msg
    with pytest.raises(SearchError, match=rf"^Wikipedia API at {free_port_url}/w/api.php is unreachable: cannot connect"):
        WikipediaBackend(free_port_url, timeout_s=5).search("北京", 3)


def test_hanging_backend_times_out(server):
    backend = SearxngBackend(server + "/slow", timeout_s=0.5, retries=3)
    start = time.monotonic()
    with pytest.raises(SearchError) as e:
        backend.search("比特币", 3)
    assert time.monotonic() - start < 3  # the server would take 5 s; the deadline covers retries too
    assert str(e.value) == f"SearXNG at {server}/slow/search is unreachable: no answer within 0.5s"


def test_wikipedia_results_and_parameters(server):
    backend = make_backend(SearchConfig(backend="wikipedia", url=server, language="zh", max_result_chars=200))
    assert backend.name == "wikipedia"
    results = backend.search("北京", 5)
    assert [r.title for r in results] == ["北京市", "北京时间"]  # ordered by the search rank
    top = results[0]
    assert top.snippet == "北京市，简称京，是中华人民共和国的首都。"
    assert (top.url, top.date) == ("https://zh.wikipedia.org/wiki/%E5%8C%97%E4%BA%AC%E5%B8%82", "2025-01-15")
    p = Handler.last_params["/w/api.php"]
    assert (p["action"], p["generator"], p["gsrsearch"], p["gsrlimit"], p["formatversion"]) == ("query", "search", "北京", "5", "2")
    assert set(p["prop"].split("|")) == {"extracts", "info", "revisions"} and p["explaintext"] == "1"
    assert backend.search("无结果", 5) == []


def test_wikipedia_api_error_and_default_url():
    assert WikipediaBackend(language="en")._api.url == "https://en.wikipedia.org/w/api.php"
    assert WikipediaBackend("http://h/w/api.php")._api.url == "http://h/w/api.php"


def test_wikipedia_error_answer(server):
    backend = WikipediaBackend(server + "/w/api.php")
    with pytest.raises(SearchError) as e:
        backend.search("insource:/(/", 3)
    assert str(e.value) == f"Wikipedia API at {server}/w/api.php refused the query: Regular expression syntax error"
