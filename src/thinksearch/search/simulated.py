"""The ``simulated`` backend: a language model writes plausible search results for a query.

For offline synthesis when no corpus covers the questions (as ZeroSearch does): the teacher
is asked, through chat messages, for a JSON list of results; the list is parsed tolerantly
(a reply cut off by the token limit still yields its complete items) and validated. Every
result is labelled: ``source`` starts with ``simulated``, the URL is dropped (a made-up URL
must never look real), and the backend's name is ``simulated``, which synthesis records in
each row's meta. A reply with no usable result raises :class:`SearchError`.

Run as: ``SimulatedBackend(teacher).search("比特币价格 今日", 5)`` from Python.
"""

from __future__ import annotations

import json
import re
from typing import Any

from thinksearch.search.base import Result, SearchError
from thinksearch.teacher import Teacher, TeacherRequest

LABEL = "simulated"
PROMPT_VERSION = "1"  # part of the cache key: changing the prompt must not reuse old results

_SYSTEM = (
    "你是一个搜索引擎模拟器。给定一个搜索查询，写出真实搜索引擎可能返回的结果。"
    "每条结果包含 title（标题）、snippet（50到150字的摘要，写出具体、可信的事实和数字）、"
    "date（YYYY-MM-DD，不确定则留空）和 source（网站或媒体名称）。"
    "结果之间内容应互相一致，并与查询相关。"
    "只输出一个 JSON 数组，不要输出其他任何文字。"
)
_SHAPE = json.dumps([{"title": "…", "snippet": "…", "date": "2025-01-01", "source": "…"}], ensure_ascii=False)
_DATE = re.compile(r"^\d{4}(-\d{1,2}(-\d{1,2})?)?$")


def parse_results(text: str) -> list[dict[str, Any]]:
    """The JSON objects of the first JSON array in ``text``, even if the array is cut off.

    >>> parse_results('```json\\n[{"title": "a", "snippet": "b"}, {"title": "c", "sni')
    [{'title': 'a', 'snippet': 'b'}]
    """
    start = text.find("[")
    if start < 0:
        start = text.find("{")  # a lone object, or objects without the brackets
        if start < 0:
            return []
        pos = start
    else:
        pos = start + 1
    decoder = json.JSONDecoder()
    items: list[dict[str, Any]] = []
    while pos < len(text):
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except ValueError:
            break
        if isinstance(obj, dict):
            items.append(obj)
    return items


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if isinstance(value, (str, int, float)) else ""


def to_results(items: list[dict[str, Any]], k: int) -> list[Result]:
    """Valid items (a title and a snippet) as labelled results, at most ``k``."""
    out: list[Result] = []
    for item in items:
        title, snippet = _text(item.get("title")), _text(item.get("snippet") or item.get("content"))
        if not title or not snippet:
            continue
        date = _text(item.get("date"))
        claimed = _text(item.get("source"))
        source = f"{LABEL}: {claimed}" if claimed else LABEL
        out.append(Result(title, snippet, "", date if _DATE.match(date) else "", source))
        if len(out) >= k:
            break
    return out


class SimulatedBackend:
    """Results written by a teacher model, always labelled ``simulated``."""

    name = LABEL

    def __init__(self, teacher: Teacher, attempts: int = 2, temperature: float = 0.7,
                 max_tokens_per_result: int = 220):
        self.teacher = teacher
        self.attempts = attempts
        self.temperature = temperature
        self.max_tokens_per_result = max_tokens_per_result

    @classmethod
    def from_config(cls, cfg: Any, teacher: Teacher | None = None) -> "SimulatedBackend":
        if teacher is None:
            raise SearchError("search backend 'simulated' needs a teacher model to write results; "
                              "use it from synthesis, or pick --backend local/searxng/wikipedia")
        return cls(teacher)

    @property
    def cache_key(self) -> str:
        return f"simulated:{getattr(self.teacher, 'name', type(self.teacher).__name__)}:v{PROMPT_VERSION}"

    def request(self, query: str, k: int) -> TeacherRequest:
        return TeacherRequest(
            messages=[{"role": "system", "content": _SYSTEM},
                      {"role": "user", "content": f"查询：{query}\n请输出 {k} 条结果，格式：{_SHAPE}"}],
            max_tokens=self.max_tokens_per_result * k + 100,
            temperature=self.temperature,
        )

    def search(self, query: str, k: int = 5) -> list[Result]:
        if not query.strip() or k <= 0:
            return []
        problem = ""
        for _ in range(self.attempts):
            reply = self.teacher.generate([self.request(query, k)])[0]
            if reply.error:
                problem = reply.error
                continue
            results = to_results(parse_results(reply.text), k)
            if results:
                return results
            problem = "no JSON list of results with title and snippet in the reply"
        raise SearchError(f"simulated search for {query!r} failed after {self.attempts} tries: {problem}")
