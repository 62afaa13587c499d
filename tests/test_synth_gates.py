"""The search rows' gates end to end, with a scripted teacher and search: relevance (unrelated
results give a code-written abstention, never a grounded answer quoting them), the query gate
(numbers the question lacks, no key term of it, a claim it does not make), the number gate
(numbers in neither question nor results), the slot gate (a time or day asked for and not
given), the per-category template reasons, and their counts
in data.stats.json. Each test fails with the
gate switched off, which the off-switch cases show."""

from __future__ import annotations

import json

import pytest

from thinksearch import scoring, synth
from thinksearch.config import SynthConfig
from thinksearch.errors import ConfigError
from thinksearch.search import segment
from thinksearch.search.base import Result
from thinksearch.synth import relevance
from thinksearch.synth.templates import TEMPLATE_REASONS, template_reasoning
from thinksearch.teacher import TeacherReply

QUESTIONS = {
    "英国首相叫什么名字？": "office_holders",   # results about Japan only: abstain
    "黄金价格每克多少钱？": "prices",           # relevant results: grounded
    "VS Code最新版本是多少？": "releases",       # the teacher invents a version in the query
    "比特币现在多少钱？": "prices",             # the answer invents a number
    "王者荣耀新出的英雄是谁？": "releases",     # the teacher searches for a name it made up
    "星巴克营业到几点？": "policies_hours",     # the teacher searches for its own guess, a statement
    "F1中国大奖赛哪天举行？": "sports",         # the results give no day: abstain, naming what is missing
    "上海迪士尼几点开门？": "policies_hours",   # the results give the time, the answer does not
}


class Search:
    name = "scripted"

    def search(self, query, k=5):
        if "首相" in query:
            return [Result("日本首相石破茂辞职", "日本首相石破茂宣布辞职。", date="2025-09-07")]
        if "黄金" in query:
            return [Result("国际金价创新高", "黄金价格每克约800元（2025年10月）。", date="2025-10-08")]
        if "比特币" in query:
            return [Result("比特币价格回顾", "比特币现在的价格在2025年曾超过10万美元。", date="2025-10-01")]
        if "F1" in query:
            return [Result("F1中国大奖赛", "上海国际赛车场自2004年起举办F1中国大奖赛。", date="2025-03-01")]
        if "迪士尼" in query:
            return [Result("上海迪士尼乐园开放时间", "上海迪士尼乐园通常8:30开园。", date="2025-03-01")]
        return [Result("VS Code 版本说明", "VS Code 每月发布一个新版本。", date="2025-10-01")]


class Teacher:
    """Reasons without a search cue (so the template is used), queries and grounded answers by question."""

    name = "scripted"

    def __init__(self):
        self.grounded: list[str] = []

    def generate(self, requests):
        out = []
        for r in requests:
            prompt = r.messages[-1]["content"]
            q = next(q for q in QUESTIONS if q in prompt)
            if "搜索结果" in prompt:
                self.grounded.append(q)
                text = {"黄金价格每克多少钱？": "黄金价格每克约800元[1]。",
                        "比特币现在多少钱？": "比特币现在约12万美元[1]。",
                        "F1中国大奖赛哪天举行？": "上海国际赛车场自2004年起举办F1中国大奖赛[1]。",
                        "上海迪士尼几点开门？": "上海迪士尼乐园每天开门[1]。"}.get(q, "日本首相石破茂[1]。")
            else:
                query = {"VS Code最新版本是多少？": "VS Code 最近一次更新了 2023.7.2。",
                         "王者荣耀新出的英雄是谁？": "艾瑞克", "星巴克营业到几点？": "星巴克全天营业。"}.get(q, q.rstrip("？")[:8])
                text = json.dumps({"reasoning": "这个问题我知道答案，直接回答即可。", "query": query}, ensure_ascii=False)
            out.append(TeacherReply(text))
        return out


def run(tmp_path, **kw):
    pool = tmp_path / "s.jsonl"
    pool.write_text("".join(json.dumps({"question": q, "category": c}, ensure_ascii=False) + "\n"
                            for q, c in QUESTIONS.items()), encoding="utf-8")
    (tmp_path / "t.txt").write_text("", encoding="utf-8")
    kw.setdefault("max_abstaining_share", 1.0)  # one row of eight passes every gate: both abstentions stay
    cfg = SynthConfig(thinking_questions=str(tmp_path / "t.txt"), search_questions=str(pool), eval_questions=None,
                      output=str(tmp_path / "out.jsonl"), num_thinking=0, num_search=len(QUESTIONS),
                      search_reason_fallback=True, **kw)
    teacher = Teacher()
    stats = synth.synthesize(cfg, teacher=teacher, search=Search(), progress=False)
    rows = {r["messages"][1]["content"]: r for r in synth.read_rows(cfg.output)}
    failures = synth.read_rows(synth.sibling(cfg.output, ".failures.jsonl"))
    return stats, rows, {f["question"]: f for f in failures}, teacher


def test_gates_on(tmp_path):
    stats, rows, failures, teacher = run(tmp_path)
    # Relevance: the Japan result never reaches the teacher; the answer is code's abstention.
    uk = rows["英国首相叫什么名字？"]
    answer = uk["messages"][4]["content"]
    assert uk["meta"]["answer"] == "abstained" and "英国首相叫什么名字？" not in teacher.grounded
    assert scoring.abstains(answer) and "英国首相" in answer and "石破茂" not in answer.split("：")[0]
    gold = rows["黄金价格每克多少钱？"]
    assert gold["meta"]["answer"] == "teacher" and "relevance" in gold["meta"]["gates"]["passed"]
    # Query gate: the invented version is rejected before any search.
    assert failures["VS Code最新版本是多少？"]["reason"] == "query_invented"
    assert "2023" in failures["VS Code最新版本是多少？"]["detail"]
    # Number gate: 12 (万美元) is in neither the question nor the results.
    assert failures["比特币现在多少钱？"]["reason"] == "unsupported_numbers"
    # ... and so is a query that shares no key term with the question.
    assert failures["王者荣耀新出的英雄是谁？"]["reason"] == "query_off_topic"
    assert failures["星巴克营业到几点？"]["reason"] == "query_statement"
    # Slot gate: 几点 answered without a time the results give is rejected; 哪天 answered with a
    # year, from results that give no day, becomes an abstention naming the missing day.
    assert failures["上海迪士尼几点开门？"]["reason"] == "misses_slot"
    f1 = rows["F1中国大奖赛哪天举行？"]
    assert f1["meta"]["answer"] == "abstained" and f1["meta"]["missing"] == "具体日期（哪一天）"
    assert "relevance" in f1["meta"]["gates"]["passed"] and scoring.abstains(f1["messages"][4]["content"])
    assert "2004" not in f1["messages"][4]["content"] and "具体日期" in f1["messages"][4]["content"]
    assert stats.rejected == {"query/query_invented": 1, "query/query_off_topic": 1, "query/query_statement": 1,
                              "grounded/unsupported_numbers": 1, "grounded/misses_slot": 1}
    # Template reasons name the category's change; counts by category in the stats file.
    assert "价格" in rows["黄金价格每克多少钱？"]["messages"][2]["content"]
    assert "职务" in uk["messages"][2]["content"] or "职位" in uk["messages"][2]["content"] \
        or "人事" in uk["messages"][2]["content"]
    saved = json.loads(synth.sibling(tmp_path / "out.jsonl", ".stats.json").read_text(encoding="utf-8"))
    assert saved["search_rows"]["office_holders"] == {"rows": 1, "template": 1, "template_share": 1.0,
                                                      "abstaining": 1, "abstaining_share": 1.0}
    assert saved["search_rows"]["all"]["rows"] == 3 and saved["search_rows"]["all"]["abstaining"] == 2
    report = (tmp_path / "out.report.md").read_text(encoding="utf-8")
    assert "| query/query_invented | search | no | 1 | 1 |" in report
    assert "| grounded/unsupported_numbers | search | no | 1 | 1 |" in report
    assert "| office_holders | 1 | 1 (100.0%) | 1 | 1 (100.0%) |" in report


def test_gates_off(tmp_path):
    # Without the gates the same teacher's misattribution and inventions all become rows:
    # the failures above are the gates' doing.
    stats, rows, failures, teacher = run(tmp_path, relevance_gate=False, query_gate=False, number_gate=False,
                                         slot_gate=False)
    assert not failures and len(rows) == len(QUESTIONS)
    assert rows["F1中国大奖赛哪天举行？"]["messages"][4]["content"] == "上海国际赛车场自2004年起举办F1中国大奖赛[1]。"
    assert rows["星巴克营业到几点？"]["meta"]["search_query"] == "星巴克全天营业。"
    assert rows["王者荣耀新出的英雄是谁？"]["meta"]["search_query"] == "艾瑞克"
    assert rows["英国首相叫什么名字？"]["messages"][4]["content"] == "日本首相石破茂[1]。"
    assert rows["VS Code最新版本是多少？"]["meta"]["search_query"] == "VS Code 最近一次更新了 2023.7.2。"


def test_relevance_rule():
    r = relevance.relevant("英国首相叫什么名字？", [Result("英国首相斯塔默（2024年7月起）", "工党领袖斯塔默出任英国首相。"),
                                                    Result("日本首相石破茂辞职", "日本首相石破茂宣布辞职。")], splitter="bigram")
    assert r == [True, False]
    # Sub-words earn partial credit: 金价 stands for 黄金价格 under jieba.
    if segment.jieba_available():
        assert relevance.relevant("黄金价格每克多少钱？", [Result("国际金价创新高", "每克约800元")]) == [True]
        # Two of three key terms (PM2.5, 浓度) are the 60%, but the place named is another:
        # a proper noun of the question must be in the result.
        assert relevance.relevant("西安的PM2.5浓度是多少？", [Result("北京PM2.5浓度十年变化", "北京PM2.5年均浓度30.5微克"),
                                                          Result("西安空气质量", "西安PM2.5年均浓度45微克")]) == [False, True]
    # A question of stop words only cannot be checked: nothing is refused.
    assert relevance.relevant("现在是什么？", [Result("无关", "无关")], splitter="bigram") == [True]


def test_template_reasons_differ_by_category_and_seed():
    categories = [c for c in TEMPLATE_REASONS if c]
    assert {"prices", "weather", "sports", "releases", "office_holders", "rankings", "news", "exchange_rates",
            "schedules", "policies_hours"} <= set(categories)
    sentences = {template_reasoning("Q", c, s).removeprefix("Q：") for c in categories for s in range(3)}
    assert len(sentences) == 3 * len(categories)  # no wording shared between categories or variants
    assert template_reasoning("Q", "prices", 7) == template_reasoning("Q", "prices", 7)


@pytest.mark.parametrize("value", [0, 1.5, -0.1])
def test_bad_threshold_names_the_flag(value):
    with pytest.raises(ConfigError, match="relevance-threshold"):
        SynthConfig(relevance_threshold=value)


def test_default_threshold_is_the_measured_one():
    assert SynthConfig().relevance_threshold == relevance.THRESHOLD


def test_abstaining_rows_are_capped(tmp_path):
    # The UK question's results are all unrelated, the F1 one's give no day: with no room for
    # abstaining rows they yield no row and are logged with their reason, instead of an abstention.
    stats, rows, failures, _ = run(tmp_path, max_abstaining_share=0.0)
    for q in ("英国首相叫什么名字？", "F1中国大奖赛哪天举行？"):
        assert q not in rows and failures[q]["reason"] == "abstention_cap"
    assert stats.rejected["search/abstention_cap"] == 2
    assert all(r["meta"]["answer"] == "teacher" for r in rows.values())


def test_abstentions_keep_their_share_of_the_rows_written(tmp_path):
    # One row answers from its results. The old cap, a share of the 8 rows asked for (4),
    # kept both abstentions: 2 of 3 rows. A share of the rows written keeps one (1 of 2 = 0.5).
    stats, rows, failures, _ = run(tmp_path, max_abstaining_share=0.5)
    abstained = [q for q, r in rows.items() if r["meta"]["answer"] == "abstained"]
    assert len(abstained) == 1 and len(rows) == 2
    assert stats.rejected["search/abstention_cap"] == 1
    assert "1 of 2 search rows abstain already" in next(f["detail"] for f in failures.values() if f["reason"] == "abstention_cap")


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_bad_abstaining_share_names_the_flag(value):
    with pytest.raises(ConfigError, match="max-abstaining-share"):
        SynthConfig(max_abstaining_share=value)
