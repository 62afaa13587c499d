"""Evaluation: per-question flags on hand-written outputs, metrics, eval-file errors, reports."""

from __future__ import annotations

import doctest
import json
import re

import pytest

from thinksearch import evaluate as ev
from thinksearch.evaluate import reports
from thinksearch import format as fmt
from thinksearch.cli import main
from thinksearch.config import EvalConfig
from thinksearch.errors import ConfigError, ThinksearchError


def call(query: str, name: str = "search") -> str:
    return f"{fmt.TOOL_OPEN}\n{fmt.tool_call_json(name, {'query': query})}\n{fmt.TOOL_CLOSE}"


GOOD_THINK = "<thinking>\n设小正方形边长为a，大的为2a。\n</thinking>\n\n周长比是2:1。"
GOOD_SEARCH = "<thinking>\n需要实时数据。\n</thinking>\n" + call("比特币价格 今日")


def flags(type_: str, output: str) -> dict:
    return ev.question_flags(type_, output)


@pytest.mark.parametrize("module", ["evalset", "metrics", "reports"])
def test_doctests(module):
    import importlib

    result = doctest.testmod(importlib.import_module(f"thinksearch.evaluate.{module}"))
    assert result.attempted > 0 and result.failed == 0


def test_refs_doctests():
    from thinksearch import refs

    result = doctest.testmod(refs)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------- flags


def test_good_outputs_hit_everything():
    f = flags("thinking", GOOD_THINK)
    assert f["tag_hit"] and f["thinking_well_formed"] and not f["did_search"] and f["decision_correct"]
    assert f["call_valid"] is None and f["call_error"] is None
    f = flags("search", GOOD_SEARCH)
    assert f["tag_hit"] and f["did_search"] and f["did_search_valid"] and f["call_valid"]
    assert f["thinking_well_formed"] and f["thinking_followed"] and not f["call_in_thinking"]
    assert (f["call_json_ok"], f["call_name_ok"], f["call_query_ok"], f["n_calls"]) == (True, True, True, 1)


def test_thinking_opened_never_closed():
    f = flags("thinking", "<thinking>\n设边长为a，那么面积是a²，周长")
    assert f["tag_hit"] and f["thinking_opened"] and not f["thinking_closed"]
    assert f["thinking_nonempty"] and not f["thinking_followed"] and not f["thinking_well_formed"]


def test_tool_call_inside_the_thinking():
    # Generation stops at </tool_call>, so the thinking is left open around the call.
    f = flags("search", "<thinking>\n我需要搜索一下。" + call("北京 天气"))
    assert f["did_search"] and f["call_valid"] and f["call_in_thinking"]
    assert not f["thinking_closed"] and not f["thinking_well_formed"]
    # Closed around the call: still not well-formed, the call belongs after the thinking.
    f = flags("search", "<thinking>\n" + call("北京 天气") + "\n</thinking>\n\n答案")
    assert f["thinking_closed"] and f["call_in_thinking"] and not f["thinking_well_formed"]


def test_two_calls_count_once_as_a_decision_and_each_for_validity():
    f = flags("search", GOOD_SEARCH + "\n" + call("比特币 美元"))
    assert f["n_calls"] == 2 and f["did_search"] and f["call_valid"]
    f = flags("search", GOOD_SEARCH + "\n" + call("x" * 70))
    assert f["n_calls"] == 2 and f["did_search"] and not f["call_valid"] and not f["did_search_valid"]
    assert f["call_error"] == "query longer than 64 characters"


def test_json_with_a_trailing_comma_is_an_attempt_but_not_valid():
    out = '<thinking>\n要搜。\n</thinking>\n<tool_call>\n{"name": "search", "arguments": {"query": "天气"},}\n</tool_call>'
    f = flags("search", out)
    assert f["tag_hit"] and f["did_search"] and not f["did_search_valid"]
    assert (f["call_json_ok"], f["call_name_ok"], f["call_query_ok"], f["call_valid"]) == (False, False, False, False)
    assert f["call_error"].startswith("invalid JSON")
    # The thinking itself is fine: closed, non-empty, followed by a (broken) call.
    assert f["thinking_well_formed"]


def test_call_on_a_thinking_question_is_a_false_search():
    f = flags("thinking", "<thinking>\n不确定。\n</thinking>\n" + call("正方形 周长"))
    assert f["tag_hit"] and f["did_search"] and not f["decision_correct"]
    # On a thinking question a call is not an answer: the thinking is not followed by one.
    assert not f["thinking_followed"] and not f["thinking_well_formed"]


def test_empty_output():
    for type_ in ("thinking", "search"):
        f = flags(type_, "")
        assert not any(f[k] for k in ("tag_hit", "did_search", "thinking_opened", "thinking_well_formed"))
        assert f["decision_correct"] is (type_ == "thinking")
        assert ev.miss_reason({"type": type_, "flags": f, "finish_reason": "stop", "output": ""}).endswith("empty output")


def test_wrong_tool_name():
    f = flags("search", "<thinking>\n查。\n</thinking>\n" + call("天气", name="web_search"))
    assert f["did_search"] and f["call_json_ok"] and not f["call_name_ok"] and f["call_query_ok"]
    assert not f["call_valid"] and f["call_error"].startswith("unknown tool 'web_search'")


@pytest.mark.parametrize("query, why", [
    ("比特币" * 22, "query longer than 64 characters"),
    ("北京\n天气", "query spans several lines"),
    ("   ", "empty query"),
])
def test_bad_queries(query, why):
    f = flags("search", call(query))
    assert f["call_json_ok"] and f["call_name_ok"] and not f["call_query_ok"] and f["call_error"] == why


def test_missing_query_and_unterminated_call():
    f = flags("search", '<tool_call>\n{"name": "search", "arguments": {"q": "天气"}}\n</tool_call>')
    assert not f["call_query_ok"] and f["call_error"] == "missing string argument 'query'"
    f = flags("search", '<tool_call>\n{"name": "search", "arguments": {"query": "天')
    assert f["did_search"] and not f["call_json_ok"] and f["call_terminated"] is False


def test_thinking_edge_cases():
    f = flags("thinking", "<thinking>\n  \n</thinking>\n\n答案")
    assert f["thinking_closed"] and not f["thinking_nonempty"] and not f["thinking_well_formed"]
    f = flags("thinking", "答案在前。<thinking>\n想\n</thinking>")  # nothing after the thinking
    assert f["thinking_closed"] and not f["thinking_followed"]
    f = flags("thinking", "直接回答，没有思考。")
    assert not f["tag_hit"] and not f["thinking_opened"]
    # The tag check is the reference's substring check; end of turn cuts the turn.
    f = flags("thinking", "<thinking>\n想\n</thinking>\n\n答<|im_end|>")
    assert f["thinking_well_formed"]


# ----------------------------------------------------------------------------- metrics


def rec(type_: str, output: str, i: int, tokens: int = 10, latency: float = 1.0, batch: str = "b0", finish: str = "stop",
        category: str = "") -> dict:
    return ev.record_for_report({
        "id": f"{type_[0]}{i}", "type": type_, "category": category, "question": f"问题{i}", "system": None,
        "output": output, "finish_reason": finish, "prompt_tokens": 5, "completion_tokens": tokens,
        "latency_s": latency, "elapsed_s": latency, "batch_id": batch, "batch_size": 2, "key": "k",
    })


def sample_records() -> list[dict]:
    return [
        rec("thinking", GOOD_THINK, 0, category="数学"),
        rec("thinking", "<thinking>\n不确定\n</thinking>\n" + call("周长"), 1, category="数学"),  # false search
        rec("thinking", "直接答", 2, batch="b1"),  # no tag
        rec("search", GOOD_SEARCH, 3, batch="b1", category="价格"),
        rec("search", '<tool_call>\n{"name": "search", "arguments": {"query": "x"},}\n</tool_call>', 4, batch="b2"),
        rec("search", "我不知道。", 5, tokens=30, latency=3.0, batch="b2", finish="length"),  # missed
    ]


def test_metrics_per_category_overall_and_decision():
    m = ev.summarize(sample_records())
    t, s, o = m["categories"]["thinking"], m["categories"]["search"], m["overall"]
    assert (t["n"], t["tag_hit"], s["tag_hit"], o["tag_hit"]) == (3, 2, 2, 4)
    assert (s["call_attempts"], s["call_valid"], s["call_json_ok"]) == (2, 1, 1)
    assert t["thinking_well_formed"] == 1 and s["thinking_well_formed"] == 1 and s["truncated"] == 1
    anyd, valid = m["decision"]["any"], m["decision"]["valid"]
    assert (anyd["tp"], anyd["fn"], anyd["fp"], anyd["tn"]) == (2, 1, 1, 2)
    assert anyd["false_search_rate"] == pytest.approx(1 / 3) and anyd["missed_search_rate"] == pytest.approx(1 / 3)
    assert anyd["precision"] == pytest.approx(2 / 3) and anyd["f1"] == pytest.approx(2 / 3)
    assert (valid["tp"], valid["fn"], valid["fp"]) == (1, 2, 1)
    sp = m["speed"]
    assert sp["batches"] == 3 and sp["generation_s"] == pytest.approx(5.0) and sp["completion_tokens"] == 80
    assert sp["tokens_per_s"] == pytest.approx(16.0)


def test_metrics_without_any_search_question():
    m = ev.summarize([rec("thinking", GOOD_THINK, 0)])
    assert m["categories"]["search"]["tag_hit_rate"] is None
    d = m["decision"]["any"]
    assert d["precision"] is None and d["recall"] is None and d["f1"] is None and d["false_search_rate"] == 0.0


# ----------------------------------------------------------------------------- eval file


def write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_load_plain_and_reference_rows(tmp_path):
    rows = [
        {"type": "thinking", "question": "为什么天空是蓝色的？", "category": "物理"},
        {"type": "search", "messages": [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "今天金价？"},
                                        {"role": "assistant", "content": "…"}]},
        {"type": "search", "messages": [{"role": "system", "content": fmt.SYSTEM_PROMPT}, {"role": "user", "content": "汇率？"}]},
    ]
    p = write(tmp_path, "e.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    s = ev.load_eval_set(p)
    assert [i.question for i in s.items] == ["为什么天空是蓝色的？", "今天金价？", "汇率？"]
    assert s.items[0].category == "物理" and s.items[0].system is None
    assert s.items[1].system == "你是助手。" and s.items[2].system is None  # the default prompt is not copied
    assert s.counts() == {"thinking": 1, "search": 2}
    arr = write(tmp_path, "ref.json", json.dumps(rows, ensure_ascii=False, indent=2))
    assert [i.id for i in ev.load_eval_set(arr).items] == [i.id for i in s.items]


def test_duplicates_are_counted_once_unless_ids_clash(tmp_path):
    row = json.dumps({"type": "thinking", "question": "q"})
    s = ev.load_eval_set(write(tmp_path, "d.jsonl", f"{row}\n{row}\n"))
    assert len(s.items) == 1 and s.duplicates == 1
    a, b = (json.dumps({"id": "x", "type": "thinking", "question": q}) for q in ("q1", "q2"))
    with pytest.raises(ThinksearchError, match=r"d2.jsonl:2: duplicate id 'x' \(first at .*d2.jsonl:1\)"):
        ev.load_eval_set(write(tmp_path, "d2.jsonl", f"{a}\n{b}\n"))


@pytest.mark.parametrize("text, message", [
    ('{"type": "thinking", "question": "q"}\n{"type": "chat", "question": "q"}\n',
     r"e.jsonl:2: unknown type 'chat' \(allowed: thinking, search\)$"),
    ('\n{"type": "search"}\n', r"e.jsonl:2: missing 'question' \(or a user turn in 'messages'\)$"),
    ('{"question": "q"}\n', r"e.jsonl:1: missing 'type' \(one of: thinking, search\)$"),
    ('{"type": "search", "question": "  "}\n', r"e.jsonl:1: 'question' must be a non-empty string$"),
    ('{"type": "search", "messages": [{"role": "system", "content": "s"}]}\n', r"e.jsonl:1: missing question \('messages' has no user turn\)$"),
    ('{"type": "search", "question": "q"\n', r"e.jsonl:1: invalid JSON: Expecting ',' delimiter \(column 35\)$"),
    ('["a"]\n', r"e.jsonl:1: expected a JSON object, got str$"),
    ("", r"e.jsonl: no eval rows"),
    ("\n  \n", r"e.jsonl: no eval rows"),
    ("[]", r"e.jsonl: no eval rows"),
    ('[\n {"type": "thinking", "question": "q"},\n {"type": "x", "question": "q"}\n]', r"e.jsonl:3: unknown type 'x'"),
    ('[\n {"type": "thinking", "question": "q"}\n {"type": "x"}\n]', r"e.jsonl:3: invalid JSON: expected ',' or '\]'"),
])
def test_bad_eval_files(tmp_path, text, message):
    with pytest.raises(ThinksearchError, match=message) as e:
        ev.load_eval_set(write(tmp_path, "e.jsonl", text))
    assert "\n" not in str(e.value)


def test_missing_eval_file(tmp_path):
    with pytest.raises(ThinksearchError, match="eval file not found: .*nope.jsonl$"):
        ev.load_eval_set(tmp_path / "nope.jsonl")


def test_subsample_is_seeded_per_type_without_replacement():
    items = [ev.EvalItem(f"t{i}", "thinking", f"q{i}") for i in range(40)] + [ev.EvalItem(f"s{i}", "search", f"q{i}") for i in range(35)]
    a = ev.subsample(items, 30, seed=1)
    assert a == ev.subsample(items, 30, seed=1) and a != ev.subsample(items, 30, seed=2)
    assert sum(i.type == "thinking" for i in a) == 30 and sum(i.type == "search" for i in a) == 30
    assert len({i.id for i in a}) == 60 and a == sorted(a, key=items.index)


# ----------------------------------------------------------------------------- model specs, config


def test_model_specs():
    assert ev.parse_model_specs(["base=a", "tuned=a+runs/ad"]) == [ev.ModelSpec("base", "a"), ev.ModelSpec("tuned", "a+runs/ad")]
    assert ev.parse_model_spec("qwen2.5-coder-0.5b-instruct+runs/train/adapter/").name == "adapter"
    with pytest.raises(ConfigError, match="two models are named 'm'"):
        ev.parse_model_specs(["m=a", "m=b"])
    with pytest.raises(ConfigError, match="has no reference"):
        ev.parse_model_spec("m=")
    with pytest.raises(ConfigError, match="model name 'a b'"):
        ev.parse_model_spec("a b=x")


def test_config_errors_name_the_flag(capsys):
    with pytest.raises(ConfigError, match=r"^--batch-size \(batch_size\): must be > 0, got 0$"):
        EvalConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"^--models \(models\): two models are named 'x'"):
        EvalConfig(models=["x=a", "x=b"])
    assert main(["eval", "--top-p", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --top-p (eval.top_p): must be in (0, 1], got 0.0"


# ----------------------------------------------------------------------------- reports from records


def md_tables(md: str) -> dict[str, list[dict[str, str]]]:
    """Markdown tables by the heading above them: rows as {column: cell}, model names carried down."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading, header = "", None
    for line in md.splitlines():
        if line.startswith("## "):
            heading, header = line[3:], None
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if header is None:
                header = cells
            elif not set(line) <= set("|-: "):
                row = dict(zip(header, cells))
                tables.setdefault(heading, []).append(row)
        else:
            header = None
    for rows in tables.values():
        current = ""
        for row in rows:
            if "模型" in row:
                current = row["模型"].strip("*") or current
                row["模型"] = current
    return tables


def table(md: str, prefix: str) -> list[dict[str, str]]:
    return next(rows for h, rows in md_tables(md).items() if h.startswith(prefix))


def check_markdown_against_records(report: dict) -> None:
    """Recompute report.md's figures from report.json's per-question records, independently."""
    md = ev.render_markdown(report)
    hits = table(md, "标签命中率")
    decisions = table(md, "搜索决策")
    speed = table(md, "速度")
    for m in report["models"]:
        recs = m["records"]
        for cat, label in (("thinking", "thinking 思考"), ("search", "search 搜索")):
            rs = [r for r in recs if r["type"] == cat]
            tag = "<thinking>" if cat == "thinking" else "<tool_call>"
            k, n = sum(tag in r["output"] for r in rs), len(rs)
            row = next(r for r in hits if r["模型"] == m["name"] and r["类别"] == label)
            assert row["样本数"] == str(n)
            assert row["标签命中"] == (f"{k}/{n}" if n else "—")
            assert row["命中率"] == (f"{100 * k / n:.2f}%" if n else "—")
            assert row["调用搜索"] == (f"{sum('<tool_call>' in r['output'] for r in rs)}/{n}" if n else "—")
            assert row["截断"] == (f"{sum(r['finish_reason'] == 'length' for r in rs)}/{n}" if n else "—")
            if n:
                assert float(row["平均 tokens"]) == pytest.approx(sum(r["completion_tokens"] for r in rs) / n, abs=0.05)
            ref = report["reference"][cat]
            assert row["参考命中率"] == f"{100 * ref['hits'] / ref['n']:.2f}% ({ref['hits']}/{ref['n']})"
        tp = sum(r["type"] == "search" and "<tool_call>" in r["output"] for r in recs)
        fp = sum(r["type"] == "thinking" and "<tool_call>" in r["output"] for r in recs)
        fn = sum(r["type"] == "search" and "<tool_call>" not in r["output"] for r in recs)
        tn = sum(r["type"] == "thinking" and "<tool_call>" not in r["output"] for r in recs)
        row = next(r for r in decisions if r["模型"] == m["name"] and r["判定"] == "any")
        assert [row[c] for c in ("TP", "FN", "FP", "TN")] == [str(tp), str(fn), str(fp), str(tn)]
        if 2 * tp + fp + fn:
            assert row["F1"] == f"{100 * 2 * tp / (2 * tp + fp + fn):.2f}%"
        fine = [r for r in table(md, "细分类别") if r["模型"] == m["name"]] if "细分类别" in md else []
        groups = sorted({(r["type"], r["category"]) for r in recs if r["category"]})
        assert [(r["类别"], r["细分类别"]) for r in fine] == sorted(groups, key=lambda g: (g[0] != "thinking", g[1]))
        for row in fine:
            rs = [r for r in recs if (r["type"], r["category"]) == (row["类别"], row["细分类别"])]
            tag = "<thinking>" if row["类别"] == "thinking" else "<tool_call>"
            assert row["标签命中"] == f"{sum(tag in r['output'] for r in rs)}/{len(rs)}"
        row = next(r for r in speed if r["模型"] == m["name"])
        assert row["生成 tokens"] == str(sum(r["completion_tokens"] for r in recs))
        last: dict[str, float] = {}
        for r in recs:
            last[r["batch_id"]] = max(last.get(r["batch_id"], 0.0), r["elapsed_s"])
        assert float(row["生成时间 (s)"]) == pytest.approx(sum(last.values()), abs=0.05)


def store_with(tmp_path, name: str, records: list[dict]) -> ev.OutputStore:
    store = ev.OutputStore(tmp_path, name, {"ref": name})
    store.append([{k: v for k, v in r.items() if k not in ("parsed", "flags")} | {"key": store.key} for r in records])
    return ev.OutputStore(tmp_path, name, {"ref": name})


def test_report_from_hand_written_outputs(tmp_path):
    recs = sample_records()
    items = [ev.EvalItem(r["id"], r["type"], r["question"]) for r in recs]
    evalset = ev.EvalSet("eval.jsonl", items)
    specs = [ev.ModelSpec("base", "base"), ev.ModelSpec("tuned", "tuned")]
    stores = {"base": store_with(tmp_path, "base", recs), "tuned": store_with(tmp_path, "tuned", recs[:4])}
    report = ev.build_report(EvalConfig(), evalset, items, specs, stores)
    paths = ev.write_reports(report, tmp_path / "out")
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert paths["md"].read_text(encoding="utf-8") == ev.render_markdown(data)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_markdown_against_records(data)
    md = paths["md"].read_text(encoding="utf-8")
    assert "| **base** | thinking 思考 | 3 | 2/3 | 66.67% | 100.00% (30/30) |" in md
    assert "| | search 搜索 | 3 | 2/3 | 66.67% | 73.33% (22/30) |" in md.replace("|  |", "| |")
    # every per-question record keeps the raw output, its parse and its flags
    r = data["models"][0]["records"][4]
    assert r["flags"]["call_error"].startswith("invalid JSON") and r["parsed"]["invalid_calls"][0]["raw"]
    assert "searched a thinking question" in md and "did not call search" in md


def test_markdown_check_catches_a_wrong_figure(tmp_path):
    recs = sample_records()
    items = [ev.EvalItem(r["id"], r["type"], r["question"]) for r in recs]
    report = ev.build_report(EvalConfig(), ev.EvalSet("e", items), items, [ev.ModelSpec("base", "b")],
                             {"base": store_with(tmp_path, "base", recs)})
    report = json.loads(json.dumps(report))
    report["models"][0]["metrics"]["categories"]["thinking"]["tag_hit"] += 1
    with pytest.raises(AssertionError):
        check_markdown_against_records(report)


def test_markdown_cells_stay_in_their_column():
    assert reports._cell("a | b\nc") == "a \\| b c"
    assert re.fullmatch(r".{79}…", reports._cell("x" * 200, 80))


def test_non_utf8_eval_file_names_the_line(tmp_path):
    path = tmp_path / "gbk.jsonl"
    path.write_bytes('{"type": "thinking", "question": "一"}\n'.encode() + '{"type": "search", "question": "天气"}\n'.encode("gbk"))
    with pytest.raises(ThinksearchError, match=r"gbk.jsonl:2: not valid UTF-8 \(byte 0x[0-9a-f]{2}\); save the file as UTF-8$"):
        ev.load_eval_set(path)


def test_repetition_penalty_goes_to_both_decoders_and_into_the_settings_key(tmp_path):
    from types import SimpleNamespace

    from thinksearch.evaluate import sampling_for
    from thinksearch.evaluate.agentic import agent_settings
    from thinksearch.evaluate.outputs import generation_settings

    spec = SimpleNamespace(ref="m")
    resolved = SimpleNamespace(ref="m", path=str(tmp_path), gguf_file=None, adapter=None)
    plain, penalised = EvalConfig(), EvalConfig(repetition_penalty=1.1)
    assert sampling_for(penalised).repetition_penalty == 1.1 and agent_settings(penalised).repetition_penalty == 1.1
    assert sampling_for(plain).repetition_penalty == 1.0
    # Outputs saved before the option existed have no such key: at 1 it stays out, so they resume.
    assert "repetition_penalty" not in generation_settings(spec, resolved, plain)
    assert generation_settings(spec, resolved, penalised)["repetition_penalty"] == 1.1
    with pytest.raises(ConfigError, match="repetition-penalty"):
        EvalConfig(repetition_penalty=0)
