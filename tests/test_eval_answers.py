"""Final-answer scoring in the evaluation: hand-written outputs, the agent loop with a scripted
model, and `thinksearch eval --agent` end to end with the tiny model."""

from __future__ import annotations

import json

import pytest

from fake_engines import FixedSearch, ScriptedEngine, answer, call
from thinksearch import scoring as sc
from thinksearch.agent import Agent
from thinksearch.cli import main
from thinksearch.config import EvalConfig
from thinksearch.errors import ThinksearchError
from thinksearch.evaluate import load_eval_set
from thinksearch.evaluate.agentic import agent_settings, base_record, run_agent
from thinksearch.evaluate.answers import answer_flags, answer_metrics, disagreements, wilson
from thinksearch.search.base import Result

GOLD6 = {"answers": ["6"], "match": "any"}
KEY = {"answerable": True, "passages": ["c-0001"], "answers": ["3500"], "match": "any"}
UNANSWERABLE = {"answerable": False}


def rec(type_: str, output: str, gold=None, searches=None, final=None, question="问题？", id_="q1"):
    r = {"id": id_, "type": type_, "category": "x", "question": question, "output": output, "gold": gold,
         "flags": {"did_search": "<tool_call>" in output}}
    if searches is not None:
        r["agent"] = {"searches": [{"query": "q", "text": t} for t in searches], "final": final if final is not None else output}
    return r


def test_a_right_thinking_answer_is_correct():
    f = answer_flags(rec("thinking", "<thinking>\n36+x=3(8+x)，x=6\n</thinking>\n再过6年。", GOLD6))
    assert f["correct"] is True and f["confidently_wrong"] is False and f["final_answer"] == "再过6年。"



def test_an_answer_naming_the_wrong_option_too_is_not_correct():
    gold = {"answers": ["选A店"], "match": "any", "wrong": ["选B店"]}
    assert answer_flags(rec("thinking", "<thinking>\n600<650\n</thinking>\n选A店。", gold))["correct"] is True
    assert answer_flags(rec("thinking", "<thinking>\n都行\n</thinking>\n选A店或选B店都可以。", gold))["correct"] is False

def test_a_wrong_answer_without_search_is_confidently_wrong():
    f = answer_flags(rec("thinking", "<thinking>\n想一想\n</thinking>\n再过4年。", GOLD6))
    assert f["correct"] is False and f["confidently_wrong"] is True


def test_gold_inside_the_thinking_does_not_count():
    f = answer_flags(rec("thinking", "<thinking>\n答案是6吗？\n</thinking>\n再过4年。", GOLD6))
    assert f["correct"] is False


def test_no_closing_tag_is_no_final_answer_not_an_error():
    f = answer_flags(rec("thinking", "<thinking>\n设再过x年，36+x=3(8+x)，x=6", GOLD6))
    assert f["has_final_answer"] is False and f["correct"] is False
    assert f["confidently_wrong"] is False  # it said nothing, so it was not confidently wrong


def test_a_base_model_that_never_thinks_is_scored_on_its_whole_reply():
    assert answer_flags(rec("thinking", "再过6年，妈妈的年龄是女儿的3倍。", GOLD6))["correct"] is True


def test_an_abstention_on_an_unanswerable_question():
    f = answer_flags(rec("search", "", UNANSWERABLE, searches=["[1] 国际金价回顾 — 2024年全年上涨27%"],
                         final="搜索结果中没有提到今天的原油收盘价，无法确定。"))
    assert f["abstained"] is True and f["correct"] is None and f["searched"] is True
    assert f["unsupported_numbers"] == []


def test_an_invented_figure_is_an_unsupported_number():
    f = answer_flags(rec("search", "", KEY, searches=["[1] 金价 — 接近每盎司3500美元"],
                         final="根据搜索结果，金价约为每盎司3888美元[1]。"))
    assert f["correct"] is False and f["unsupported_numbers"] == ["3888"] and f["numbers"] == 1
    g = answer_flags(rec("search", "", KEY, searches=["[1] 金价 — 接近每盎司3500美元"],
                         final="根据搜索结果，金价接近每盎司3,500美元[1]。"))
    assert g["correct"] is True and g["unsupported_numbers"] == []


def test_answering_a_search_question_from_memory_shows_up():
    """No search: every number in the answer is unsupported, and a wrong one is confidently wrong."""
    r = rec("search", "<thinking>\n我记得\n</thinking>\n金价是每盎司2000美元。", KEY, searches=[])
    f = answer_flags(r)
    assert f["searched"] is False and f["unsupported_numbers"] == ["2000"] and f["confidently_wrong"] is True


def test_abstaining_with_the_key_fact_in_hand_is_over_abstention():
    """An abstention is honest only when the results lack the answer: with the key fact in the
    results it read, the same sentence counts against the model."""
    over = answer_flags(rec("search", "", KEY, searches=["[1] 金价 — 接近每盎司3500美元"],
                            final="搜索结果里没有今天金价的信息。"))
    assert over["answer_in_results"] is True and over["abstained"] is True and over["correct"] is False
    honest = answer_flags(rec("search", "", KEY, searches=["[1] 油价 — 92号汽油7.5元"],
                              final="搜索结果里没有今天金价的信息。"))
    assert honest["answer_in_results"] is False
    m = answer_metrics([rec("search", "", KEY, searches=["3500"], final="结果里没有相关信息。", id_="a"),
                        rec("search", "", KEY, searches=["3500"], final="约3500美元。", id_="b"),
                        rec("search", "", KEY, searches=["无关"], final="结果里没有相关信息。", id_="c"),
                        rec("search", "", UNANSWERABLE, searches=["3500"], final="结果里没有相关信息。", id_="d")])
    assert (m["abstention_with_answer"]["k"], m["abstention_with_answer"]["n"]) == (1, 2)
    # A report.json written before the flag existed still rescores.
    old = rec("search", "", KEY, searches=["3500"], final="结果里没有相关信息。")
    old["answer"] = {k: v for k, v in answer_flags(old).items() if k != "answer_in_results"}
    assert answer_metrics([old])["abstention_with_answer"]["n"] == 0


def test_metrics_count_and_intervals():
    records = [
        rec("thinking", "<thinking>x</thinking>6", GOLD6, id_="a"),
        rec("thinking", "<thinking>x</thinking>4", GOLD6, id_="b"),
        rec("thinking", "<thinking>x", GOLD6, id_="c"),
        rec("thinking", "<thinking>x</thinking>随便说说", None, id_="d"),  # open question: not scored
        rec("search", "", UNANSWERABLE, searches=["无关"], final="结果里没有相关信息。", id_="e"),
        rec("search", "", KEY, searches=["3500"], final="约3500美元，涨了9%。", id_="f"),
    ]
    m = answer_metrics(records)
    assert (m["thinking_accuracy"]["k"], m["thinking_accuracy"]["n"]) == (1, 3)
    assert m["thinking_accuracy"]["ci95"] == pytest.approx(list(wilson(1, 3)))
    assert (m["abstention_unanswerable"]["k"], m["abstention_unanswerable"]["n"]) == (1, 1)
    assert (m["grounded_answer"]["k"], m["grounded_answer"]["n"]) == (1, 1)
    assert (m["unsupported_number_share"]["k"], m["unsupported_number_share"]["n"]) == (1, 2)
    assert (m["confidently_wrong"]["k"], m["confidently_wrong"]["n"]) == (1, 4)
    assert (m["no_final_answer"]["k"], m["no_final_answer"]["n"]) == (1, 6)


def test_wilson_interval_matches_the_textbook_values():
    lo, hi = wilson(22, 30)
    assert (round(lo, 3), round(hi, 3)) == (0.556, 0.858)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0) and wilson(0, 0) is None


def test_disagreements_list_where_one_model_is_wrong_and_the_other_right():
    base = [rec("thinking", "6", GOLD6, id_="a"), rec("thinking", "4", GOLD6, id_="b")]
    tuned = [rec("thinking", "<thinking>x</thinking>5", GOLD6, id_="a"), rec("thinking", "<thinking>x</thinking>6", GOLD6, id_="b")]
    d = disagreements(tuned, base)
    assert [x["id"] for x in d] == ["a"] and d[0]["wrong"] == "5" and d[0]["right"] == "6"
    assert [x["id"] for x in disagreements(base, tuned)] == ["b"]


def test_the_agent_loop_records_every_round_and_scores_the_last(tiny_tokenizer, tmp_path):
    data = tmp_path / "e.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"id": "s1", "type": "search", "question": "金价多少？", **{k: v for k, v in KEY.items() if k != "passages"},
         "answerable": True, "passages": ["c-0001"]},
        {"id": "t1", "type": "thinking", "question": "再过几年？", **GOLD6},
    ]) + "\n", encoding="utf-8")
    items = load_eval_set(data).items
    engine = ScriptedEngine(tiny_tokenizer, reply=lambda msgs: (
        answer("金价接近每盎司3500美元[1]。", thinking="") if msgs[-1]["role"] == "tool"
        else call("金价") if "金价" in msgs[-1]["content"] else answer("再过6年。")))
    backend = FixedSearch([Result(title="金价", snippet="接近每盎司3500美元", url="", date="2025-04-23", source="离线")])
    agent = Agent(engine, backend, agent_settings(EvalConfig(agent=True)))
    saved: list[dict] = []
    run_agent(agent, items, lambda it: base_record(it, "k"), 512, 8, saved.extend)
    by_id = {r["id"]: r for r in saved}
    s, t = by_id["s1"], by_id["t1"]
    assert s["output"].rstrip().endswith("</tool_call>") and len(s["agent"]["rounds"]) == 2
    assert s["agent"]["searches"][0]["query"] == "金价" and "3500" in s["agent"]["searches"][0]["text"]
    assert s["gold"]["answers"] == ["3500"] and s["key"] == "k"
    fs, ft = answer_flags(s), answer_flags(t)
    assert fs["correct"] is True and fs["searched"] is True and fs["unsupported_numbers"] == []
    assert ft["correct"] is True and len(t["agent"]["rounds"]) == 1


@pytest.mark.parametrize("row, message", [
    ({"type": "thinking", "question": "1+1?", "answers": [], "match": "any"}, "'answers' is empty"),
    ({"type": "thinking", "question": "1+1?", "answers": ["2"], "match": "some"}, "match"),
    ({"type": "thinking", "question": "1+1?", "answers": ["2"], "match": "any", "answer": "2"}, "unknown field 'answer'"),
    ({"type": "search", "question": "金价?", "answerable": True, "passages": ["c-9999"], "answers": ["1"],
      "match": "any"}, "c-9999"),
])
def test_bad_gold_rows_name_file_and_line(tmp_path, row, message):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "c-0001", "title": "t", "text": "x"}) + "\n", encoding="utf-8")
    data = tmp_path / "e.jsonl"
    data.write_text(json.dumps({"type": "thinking", "question": "ok?"}) + "\n" + json.dumps(row, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    with pytest.raises(ThinksearchError, match=rf"e\.jsonl:2: .*{message}"):
        load_eval_set(data, [corpus])


def test_eval_agent_end_to_end_with_the_tiny_model(tmp_path, tiny_model_dir):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "c-0001", "title": "金价", "text": "金价接近每盎司3500美元。", "date": "2025-04-23"},
                                 ensure_ascii=False) + "\n", encoding="utf-8")
    index = tmp_path / "index.sqlite"
    assert main(["index", "build", str(corpus), "--out", str(index)]) == 0
    data = tmp_path / "e.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"id": "s1", "type": "search", "question": "金价多少？", "answerable": True, "passages": ["c-0001"],
         "answers": ["3500"], "match": "any"},
        {"id": "s2", "type": "search", "question": "油价多少？", "answerable": False},
        {"id": "t1", "type": "thinking", "question": "再过几年？", **GOLD6},
    ]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["eval", "--agent", "--data", str(data), "--corpus", str(corpus), "--output-dir", str(out),
            "--model", f"base={tiny_model_dir}", "--search-index", str(index), "--max-new-tokens", "8",
            "--batch-size", "2", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    (m,) = report["models"]
    assert m["settings"]["agent"]["max_rounds"] == 3 and m["settings"]["agent"]["index_generation"]
    assert all(r["agent"]["rounds"] and r["answer"]["final_answer"] == sc.final_answer(r["agent"]["final"])
               for r in m["records"])
    assert m["metrics"]["answers"]["thinking_accuracy"]["n"] == 1
    assert m["metrics"]["answers"]["abstention_unanswerable"]["n"] == 1
    assert m["metrics"]["policy"]["fresh_data_recall"]["n"] == 2 and m["metrics"]["policy"]["undecided"]["n"] == 3
    assert "最终回答" in (out / "report.md").read_text(encoding="utf-8")
    assert "搜索策略" in (out / "report.md").read_text(encoding="utf-8")
    # A rerun resumes: nothing is generated again and the report is the same.
    before = (out / "outputs" / "base.jsonl").read_text(encoding="utf-8")
    assert main(args) == 0
    assert (out / "outputs" / "base.jsonl").read_text(encoding="utf-8") == before


def test_eval_agent_without_an_index_says_how_to_make_one(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "e.jsonl"
    data.write_text(json.dumps({"type": "thinking", "question": "1+1?"}) + "\n", encoding="utf-8")
    args = ["eval", "--agent", "--data", str(data), "--output-dir", str(tmp_path / "o"), "--model", f"base={tiny_model_dir}",
            "--search-index", str(tmp_path / "missing.sqlite"), "--device", "cpu", "--no-progress"]
    assert main(args) != 0
    assert "--agent needs a search backend" in capsys.readouterr().err
