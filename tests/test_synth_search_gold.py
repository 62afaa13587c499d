"""Search rows checked against the pool's gold (``synth.search_gold``), with a scripted teacher
and search: a grounded answer must state the key fact (a passage naming two office holders,
answered with the wrong one, is rejected), a question the corpus cannot answer abstains even
when its results look on topic, a key fact no result shows abstains too, and an answer that
pastes a result whole is rejected. With the check off, the same teacher's misattributions
become rows."""

from __future__ import annotations

import json

from thinksearch import scoring, synth
from thinksearch.config import SynthConfig
from thinksearch.search.base import Result
from thinksearch.teacher import TeacherReply

GOLD = {"answerable": True, "passages": ["c-0001"], "match": "any"}
POOL = [
    {"question": "黄金价格每克多少钱？", "category": "prices", **GOLD, "answers": ["800"]},
    # One passage names both chief executives; the teacher picks Macau's.
    {"question": "香港特别行政区行政长官是谁？", "category": "office_holders", **GOLD, "answers": ["李家超"]},
    # On topic (英国, 首相) but the corpus does not say who: the teacher would answer with the address.
    {"question": "英国首相叫什么名字？", "category": "office_holders", "answerable": False},
    # Answered by pasting the result whole, rewritten as "title——text".
    {"question": "北约秘书长是谁？", "category": "office_holders", **GOLD, "answers": ["吕特"]},
    # Answerable, but the query found only a passage about tickets.
    {"question": "2024年欧洲杯冠军是哪支球队？", "category": "sports", **GOLD, "answers": ["西班牙"]},
]
FRANCE = {"question": "法国总统是谁？", "category": "office_holders", "answerable": False}
ANSWERS = {"法国总统是谁？": "法国总统住在爱丽舍宫。", "北约秘书长是谁？": "北约秘书长吕特（2024年10月起）——吕特于2024年10月1日接任。",
           "黄金价格每克多少钱？": "黄金价格每克约800元。", "香港特别行政区行政长官是谁？": "香港特别行政区行政长官是岑浩辉。",
           "英国首相叫什么名字？": "英国首相住在伦敦唐宁街10号。", "2024年欧洲杯冠军是哪支球队？": "欧洲杯门票已售罄。"}


class Search:
    name = "scripted"

    def search(self, query, k=5):
        if "黄金" in query:
            return [Result("国际金价创新高", "黄金价格每克约800元（2025年10月）。", date="2025-10-08")]
        if "行政长官" in query:
            return [Result("港澳两地行政长官", "澳门特别行政区行政长官岑浩辉；香港特别行政区行政长官李家超。", date="2025-01-01")]
        if "北约" in query:
            return [Result("北约秘书长吕特（2024年10月起）", "吕特于2024年10月1日接任北约秘书长。", date="2024-10-01")]
        if "首相" in query:
            return [Result("英国首相官邸", "英国首相的官邸位于伦敦唐宁街10号。", date="2025-01-01")]
        return [Result("欧洲杯门票", "2024年欧洲杯门票已售罄。", date="2024-06-01")]


class Teacher:
    name = "scripted"

    def __init__(self):
        self.grounded: list[str] = []
        self.asked: list[str] = []

    def generate(self, requests):
        out = []
        for r in requests:
            prompt = r.messages[-1]["content"]
            q = next(row["question"] for row in POOL + [FRANCE] if row["question"] in prompt)
            if "搜索结果" in prompt:
                self.grounded.append(q)
                out.append(TeacherReply(ANSWERS[q]))
            else:
                self.asked.append(q)
                query = q.rstrip("？").replace("叫什么名字", "").replace("是谁", "").replace("是哪支球队", "")
                out.append(TeacherReply(json.dumps({"reasoning": "这个问题我知道答案，直接回答即可。", "query": query}, ensure_ascii=False)))
        return out


def run(tmp_path, pool_rows=POOL, **kw):
    pool = tmp_path / "s.jsonl"
    pool.write_text("".join(json.dumps({"type": "search", **row}, ensure_ascii=False) + "\n" for row in pool_rows),
                    encoding="utf-8")
    (tmp_path / "t.txt").write_text("", encoding="utf-8")
    kw.setdefault("max_abstaining_share", 1.0)
    cfg = SynthConfig(thinking_questions=str(tmp_path / "t.txt"), search_questions=str(pool), eval_questions=None,
                      output=str(tmp_path / "out.jsonl"), num_thinking=0, num_search=len(POOL),
                      search_reason_fallback=True, require_citation=False, **kw)
    teacher = Teacher()
    synth.synthesize(cfg, teacher=teacher, search=Search(), progress=False)
    rows = {r["messages"][1]["content"]: r for r in synth.read_rows(cfg.output)}
    failures = {f["question"]: f for f in synth.read_rows(synth.sibling(cfg.output, ".failures.jsonl"))}
    return rows, failures, teacher


def test_search_rows_are_checked_against_gold(tmp_path):
    rows, failures, teacher = run(tmp_path)
    gold = rows["黄金价格每克多少钱？"]
    assert gold["meta"]["answer"] == "teacher" and gold["meta"]["verified"] == "gold"
    # The wrong office holder, from a passage that names the right one too, is not a row.
    assert failures["香港特别行政区行政长官是谁？"]["reason"] == "misses_gold"
    assert "李家超" in failures["香港特别行政区行政长官是谁？"]["detail"]
    assert failures["北约秘书长是谁？"]["reason"] == "copied_results"
    # Unanswerable by gold: abstains without asking the teacher, and says what was missing.
    uk = rows["英国首相叫什么名字？"]
    assert uk["meta"]["answer"] == "abstained" and uk["meta"]["missing"] == "答案"
    assert "英国首相叫什么名字？" not in teacher.grounded
    assert scoring.abstains(uk["messages"][4]["content"]) and "唐宁街" not in uk["messages"][4]["content"]
    # Answerable, but no result shows the key fact: abstains, the results called unrelated.
    euro = rows["2024年欧洲杯冠军是哪支球队？"]
    assert euro["meta"]["answer"] == "abstained" and "missing" not in euro["meta"]
    assert "与这个问题无关" in euro["messages"][4]["content"]
    assert {r["meta"].get("verified") for r in rows.values()} == {"gold"}
    report = (tmp_path / "out.report.md").read_text(encoding="utf-8")
    assert "3 of 3 search rows (100.0%) were checked against the pool's gold" in report
    assert "1 state the key fact, 2 abstain" in report


def test_without_the_check_misattributions_become_rows(tmp_path):
    rows, failures, teacher = run(tmp_path, search_gold=False)
    assert rows["香港特别行政区行政长官是谁？"]["messages"][4]["content"] == "香港特别行政区行政长官是岑浩辉。"
    assert rows["英国首相叫什么名字？"]["messages"][4]["content"] == "英国首相住在伦敦唐宁街10号。"
    assert not any("verified" in r["meta"] for r in rows.values())


def test_unanswerable_questions_are_not_asked_once_the_abstention_cap_is_full(tmp_path):
    # Two questions the gold marks unanswerable, room for one abstaining row (a share of 0.25 of
    # 5 rows, and of the rows ahead of it in its batch): one is asked, the other passed over
    # before any teacher call, since its row could only be dropped by the cap.
    rows, failures, teacher = run(tmp_path, POOL + [FRANCE], max_abstaining_share=0.25)
    unanswerable = ("英国首相叫什么名字？", "法国总统是谁？")
    assert sum(q in teacher.asked for q in unanswerable) == 1
    assert not any(q not in teacher.asked and q in failures for q in unanswerable)


def test_answer_opening_opens_grounded_answers_only(tmp_path):
    # Grounded answers share code's opening, so answering and abstaining part at one token;
    # the abstentions keep theirs, and the gates judged the teacher's words.
    rows, _, _ = run(tmp_path, answer_opening="根据搜索结果，")
    assert rows["黄金价格每克多少钱？"]["messages"][4]["content"] == "根据搜索结果，黄金价格每克约800元。"
    for q in ("英国首相叫什么名字？", "2024年欧洲杯冠军是哪支球队？"):
        assert rows[q]["messages"][4]["content"].startswith("我搜索了“")
