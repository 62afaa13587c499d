"""The simulated backend: the teacher is asked through chat messages, its JSON is parsed
tolerantly and validated, and every result is labelled simulated."""

from __future__ import annotations

import json

import pytest

from thinksearch import format as fmt
from thinksearch.config import SearchConfig
from thinksearch.search import SearchError, SimulatedBackend, make_backend
from thinksearch.search.simulated import parse_results
from thinksearch.teacher import TeacherReply, TeacherRequest


class ScriptedTeacher:
    """A teacher at the edge: answers each request with the next scripted reply."""

    name = "scripted-teacher"

    def __init__(self, *replies: TeacherReply):
        self.replies = list(replies)
        self.requests: list[TeacherRequest] = []

    def generate(self, requests):
        self.requests.extend(requests)
        return [self.replies.pop(0) for _ in requests]


GOOD = json.dumps([
    {"title": "比特币价格今日行情", "snippet": "比特币今日报价约6.1万美元，24小时上涨2%。", "date": "2025-01-02",
     "source": "财经网", "url": "https://totally-real.example/btc"},
    {"title": "比特币", "snippet": "比特币是一种去中心化的加密货币。", "date": "昨天"},
    {"title": "", "snippet": "no title: dropped"},
    {"title": "三", "snippet": "第三条。", "source": "新闻"},
], ensure_ascii=False)


def test_results_are_parsed_validated_and_labelled():
    teacher = ScriptedTeacher(TeacherReply(text="好的，以下是结果：\n```json\n" + GOOD + "\n```"))
    backend = make_backend(SearchConfig(backend="simulated"), teacher)
    assert backend.name == "simulated"
    results = backend.search("比特币价格 今日", 2)
    assert [r.title for r in results] == ["比特币价格今日行情", "比特币"]
    assert [r.source for r in results] == ["simulated: 财经网", "simulated"]
    assert all(r.url == "" for r in results)  # an invented URL must never look real
    assert [r.date for r in results] == ["2025-01-02", ""]  # "昨天" is not a date
    (req,) = teacher.requests
    assert [m["role"] for m in req.messages] == ["system", "user"]
    assert "比特币价格 今日" in req.messages[1]["content"] and "2 条" in req.messages[1]["content"]
    assert not fmt.find_tags(req.messages[0]["content"] + req.messages[1]["content"])


def test_a_reply_cut_by_the_token_limit_keeps_its_complete_items():
    cut = GOOD[: GOOD.index('{"title": "三"') + 12]
    teacher = ScriptedTeacher(TeacherReply(text=cut, finish_reason="length"))
    assert [r.title for r in SimulatedBackend(teacher).search("比特币", 5)] == ["比特币价格今日行情", "比特币"]


def test_unusable_replies_are_retried_then_fail_in_one_line():
    teacher = ScriptedTeacher(TeacherReply(text="抱歉，我无法提供。"),
                              TeacherReply(text="", finish_reason="error", error="HTTP 503 from teacher"))
    with pytest.raises(SearchError) as e:
        SimulatedBackend(teacher, attempts=2).search("比特币", 3)
    assert str(e.value) == "simulated search for '比特币' failed after 2 tries: HTTP 503 from teacher"
    teacher = ScriptedTeacher(TeacherReply(text="[1, 2]"), TeacherReply(text=GOOD))
    assert len(SimulatedBackend(teacher, attempts=2).search("比特币", 3)) == 3


def test_needs_a_teacher():
    with pytest.raises(SearchError, match=r"^search backend 'simulated' needs a teacher model to write results"):
        make_backend(SearchConfig(backend="simulated"))


@pytest.mark.parametrize("text, n", [
    ('[{"title": "a", "snippet": "b"}]', 1),
    ('{"title": "a", "snippet": "b"}', 1),
    ("no json here", 0),
    ('[{"title": "a", "snippet": "b"}, oops]', 1),
    ('[]', 0),
])
def test_parse_results(text, n):
    assert len(parse_results(text)) == n
