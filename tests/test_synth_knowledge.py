"""Knowledge-boundary labels end to end, with a scripted teacher that is also the student: a
stable-knowledge question the student gets wrong when probed becomes a search row (with a
knowledge reason, and uncapped when it abstains); one it gets right stays a thinking row; a
reasoning question is never probed. With the probe off, all three are thinking rows."""

from __future__ import annotations

import json

import pytest

from thinksearch import scoring, synth
from thinksearch.config import SynthConfig
from thinksearch.errors import ConfigError
from thinksearch.search.base import Result
from thinksearch.teacher import TeacherReply

POOL = [
    {"question": "中国面积最大的淡水湖是哪个？", "category": "knowledge", "answers": ["鄱阳湖"], "match": "any"},
    {"question": "水在标准大气压下的沸点是多少摄氏度？", "category": "science", "answers": ["100"], "match": "any"},
    {"question": "12乘以12等于多少？", "category": "arithmetic", "answers": ["144"], "match": "any"},
]
# What the student says when asked a question plainly, per probe sample: wrong, then right, ...
PROBE_ANSWERS = {
    "中国面积最大的淡水湖是哪个？": ["是洞庭湖。", "洞庭湖。"],
    "水在标准大气压下的沸点是多少摄氏度？": ["100摄氏度。", "是100℃。"],
}


class Teacher:
    name = "scripted"

    def __init__(self, answers=PROBE_ANSWERS):
        self.answers = answers
        self.probed: list[str] = []
        self.seen: dict[str, int] = {}

    def generate(self, requests):
        out = []
        for r in requests:
            prompt = r.messages[-1]["content"]
            if len(r.messages) == 1:  # the probe: the bare question
                self.probed.append(prompt)
                n = self.seen[prompt] = self.seen.get(prompt, -1) + 1
                out.append(TeacherReply(self.answers[prompt][n % len(self.answers[prompt])]))
                continue
            q = next(p["question"] for p in POOL if p["question"] in prompt)
            if "搜索结果" in prompt:
                text = "不知道。"
            elif "query" in prompt:
                # A reason that passes the search-reason gate, and is false of a stable fact.
                text = json.dumps({"reasoning": f"{q.rstrip('？')}会随时间变化，我记得的可能过时，需要查。",
                                   "query": q.rstrip("？")}, ensure_ascii=False)
            elif prompt.startswith("问题："):  # the answer, given the analysis
                text = {"12乘以12等于多少？": "144", "水在标准大气压下的沸点是多少摄氏度？": "100摄氏度"}.get(q, "鄱阳湖")
            else:
                text = "先想清楚问题问的是什么，再一步步推出结论。"
            out.append(TeacherReply(text))
        return out


class Search:
    name = "scripted"

    def search(self, query, k=5):
        return [Result("国际金价创新高", "黄金价格每克约800元（2025年10月）。", date="2025-10-08")]


def run(tmp_path, teacher=None, **kw):
    pool = tmp_path / "t.jsonl"
    pool.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in POOL), encoding="utf-8")
    (tmp_path / "s.txt").write_text("", encoding="utf-8")
    cfg = SynthConfig(thinking_questions=str(pool), search_questions=str(tmp_path / "s.txt"), eval_questions=None,
                      output=str(tmp_path / "out.jsonl"), num_thinking=len(POOL), num_search=0,
                      search_reason_fallback=True, max_abstaining_share=0.0, **kw)
    teacher = teacher or Teacher()
    stats = synth.synthesize(cfg, teacher=teacher, search=Search(), progress=False)
    return stats, {r["messages"][1]["content"]: r for r in synth.read_rows(cfg.output)}, teacher


def test_unknown_knowledge_becomes_a_search_row(tmp_path):
    stats, rows, teacher = run(tmp_path, knowledge_probe=2)
    lake, boil, sums = (rows[p["question"]] for p in POOL)
    assert lake["type"] == "search" and lake["meta"]["knowledge_probe"] == {"right": 0, "of": 2, "known": False}
    reason = lake["messages"][2]["content"]
    assert reason.startswith("<thinking>") and ("不确定" in reason or "没有把握" in reason)
    # Code states the measured reason (the probe), in place of the teacher's "it changes", and
    # does not open by restating the question (the student learned to restate, then search).
    assert "变化" not in reason and not reason.startswith("<thinking>中国面积") and "中国面积最大的淡水湖是哪个" in reason
    assert "reasoning: template (knowledge_probe)" in lake["meta"]["gates"]["repairs"]
    # The corpus has nothing on lakes: an abstention, kept although the cap allows none.
    assert lake["meta"]["answer"] == "abstained" and scoring.abstains(lake["messages"][4]["content"])
    assert boil["type"] == "thinking" and boil["meta"]["knowledge_probe"] == {"right": 2, "of": 2, "known": True}
    assert sums["type"] == "thinking" and "knowledge_probe" not in sums["meta"]
    assert sorted(set(teacher.probed)) == sorted(PROBE_ANSWERS) and len(teacher.probed) == 4
    assert dict(stats.knowledge) == {"probed": 2, "known": 1, "search_rows": 1}
    saved = json.loads(synth.sibling(tmp_path / "out.jsonl", ".stats.json").read_text(encoding="utf-8"))
    assert saved["knowledge"] == {"probed": 2, "known": 1, "search_rows": 1}
    assert saved["search_rows"]["knowledge"]["abstaining"] == 1
    report = (tmp_path / "out.report.md").read_text(encoding="utf-8")
    assert "## Knowledge boundary" in report and "| 0 of 2 | 0 | 1 |" in report and "| 2 of 2 | 1 | 0 |" in report


def test_known_share_sets_how_sure_the_student_must_be(tmp_path):
    half = dict(PROBE_ANSWERS, **{"中国面积最大的淡水湖是哪个？": ["洞庭湖。", "鄱阳湖。"]})
    _, rows, _ = run(tmp_path, Teacher(half), knowledge_probe=2, knowledge_known_share=0.5)
    assert rows["中国面积最大的淡水湖是哪个？"]["type"] == "thinking"
    (tmp_path / "all").mkdir()
    _, rows, _ = run(tmp_path / "all", Teacher(half), knowledge_probe=2)  # the default: right every time
    assert rows["中国面积最大的淡水湖是哪个？"]["type"] == "search"


def test_probe_off_writes_thinking_rows_only(tmp_path):
    stats, rows, teacher = run(tmp_path)
    assert {r["type"] for r in rows.values()} == {"thinking"} and not teacher.probed and not stats.knowledge
    assert all("knowledge_probe" not in r["meta"] for r in rows.values())


@pytest.mark.parametrize(("field", "value", "flag"), [("knowledge_probe", -1, "knowledge-probe"),
                                                      ("knowledge_known_share", 0, "knowledge-known-share"),
                                                      ("knowledge_known_share", 1.5, "knowledge-known-share"),
                                                      ("probe_model", " ", "probe-model")])
def test_bad_probe_settings_name_the_flag(field, value, flag):
    with pytest.raises(ConfigError, match=flag):
        SynthConfig(**{field: value})


def test_decision_line_of_a_knowledge_row_does_not_claim_the_fact_changes(tmp_path):
    _, rows, _ = run(tmp_path, knowledge_probe=2, decision_line=True)
    lake = rows["中国面积最大的淡水湖是哪个？"]["messages"][2]["content"]
    assert lake.startswith("<thinking>\n这个问题问的是一个我没有把握的事实，需要搜索核实。\n")
