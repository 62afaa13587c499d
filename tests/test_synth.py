"""Synthesis: quality gates, crash-safe output, the whole pipeline over real HTTP with faults,
resume, the reference export, the local backend, signals and the CLI's one-line errors."""

from __future__ import annotations

import dataclasses
import doctest
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synth_driver import SEARCH, SEARCH_ROWS, THINKING, THINKING_ROWS, FakeSearch, write_pools
from teacher_server import Server
from thinksearch import cli
from thinksearch import format as fmt
from thinksearch import scoring
from thinksearch import synth
from thinksearch.config import SynthConfig, TeacherConfig
from thinksearch.errors import ThinksearchError
from thinksearch.questions import question_id
from thinksearch.teacher import TeacherReply

ROOT = Path(__file__).resolve().parents[1]


def test_module_doctests():
    # testmod skips what a module only re-exports, so the package's own doctests live in its modules.
    from thinksearch.synth import gates, output, prompts, relevance, rows, run, templates, verify

    results = [doctest.testmod(m) for m in (synth, prompts, gates, rows, output, run, verify, relevance, templates)]
    assert sum(r.attempted for r in results) >= 19 and sum(r.failed for r in results) == 0


# ----------------------------------------------------------------------------- gates


def R(text="", reasoning=None, finish="stop", error=None):
    return TeacherReply(text, reasoning, "error" if error else finish, error=error)


@pytest.mark.parametrize(
    "reply, reason, detail",
    [
        (R("周长比是2:1。</think>"), "leaked_tags", "</think>"),
        (R("先想<think>再答"), "leaked_tags", "<think>"),
        (R("答案<thinking>x"), "leaked_tags", "<thinking>"),
        (R('<tool_call>\n{"name": "search"}'), "leaked_tags", "<tool_call>"),
        (R("答案<|im_end|>"), "leaked_tags", "<|im_end|>"),
        (R("一半", finish="length"), "truncated", "finish_reason length"),
        (R("   "), "empty", ""),
        (R("", reasoning="只有推理"), "empty", "nothing after </think>"),
        (R("嗯"), "too_short", "1 < 2 characters"),
        (R("所以答案是" + "对对对" * 10), "repetition", None),
        (R(error="HTTP 500"), "teacher_error", "HTTP 500"),
    ],
)
def test_each_gate_rejects_with_its_reason(reply, reason, detail):
    got = synth.check_text(reply, "answer", 2, 0.3)
    assert isinstance(got, synth.Rejection) and got.reason == reason
    assert got.transient == (reason == "teacher_error")
    if detail is not None:
        assert got.detail == detail


def test_gate_passes_clean_text_and_picks_the_trace_source():
    assert synth.check_text(R("答案：周长比是2:1。"), "answer", 2, 0.3) == ("周长比是2:1。", "text")
    r1 = R("分析文本", reasoning="设边长为a，则面积之比是边长之比的平方。")
    assert synth.check_text(r1, "analysis", 10, 0.3, use_reasoning=True) == ("设边长为a，则面积之比是边长之比的平方。", "reasoning")
    assert synth.check_text(r1, "answer", 2, 0.3) == ("分析文本", "text")


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"reasoning": "需要实时行情。", "query": "比特币\\n价格"}', ("需要实时行情。", "比特币 价格", ["query: joined 2 lines"])),
        ('好的：\n```json\n{"reasoning": "需要实时行情。", "query": "“比特币价格”"}\n```', ("需要实时行情。", "比特币价格", ["query: removed quotes"])),
        ('{"reasoning": "需要实时行情。", "query": "  "}', "query_empty"),
        ('{"reasoning": "需要实时行情。", "query": "' + "很长" * 40 + '"}', "query_too_long"),
        ('{"reasoning": "需要实时行情。", "query": "<tool_call>价格"}', "query_tags"),
        ('{"reasoning": "需要</think>行情。", "query": "价格"}', "leaked_tags"),
        ('{"reasoning": "", "query": "价格"}', "reasoning_empty"),
        ('{"query": "价格"}', "reasoning_missing"),
        ('{"reasoning": "需要实时行情。"}', "query_missing"),
        ("我需要搜索比特币价格", "not_json"),
    ],
)
def test_query_stage_parsing(text, expected):
    got = synth.parse_query_reply(text, 4, 0.3)
    if isinstance(expected, str):
        assert isinstance(got, synth.Rejection) and got.reason == expected and got.stage == "query"
    else:
        assert got == expected


@pytest.mark.parametrize(
    "reasoning, expected",
    [
        ("英国首相会随大选更替，我知道的可能不是现任，需要查。", None),
        ("这个问题需要最新的实时数据，我需要搜索当前的信息。", "generic_reasoning"),  # fits any question
        ("英国首相是乔治·华盛顿。", "no_search_reason"),  # a (wrong) answer, not a reason to search
    ],
)
def test_search_reasoning_gate(reasoning, expected):
    got = synth.reasoning_problem(reasoning, "英国首相叫什么名字？")
    if expected is None:
        assert got is None
    else:
        assert (got.stage, got.reason) == ("query", expected)


def test_citations():
    assert synth.check_citations("约为6万美元[1][3]。", 3) == ("约为6万美元[1][3]。", [])
    assert synth.check_citations("没有找到相关结果。", 0) == ("没有找到相关结果。", [])
    assert synth.check_citations("约为6万美元。", 3).reason == "no_citation"
    assert synth.check_citations("约为6万美元[0]。", 3).reason == "bad_citation"


# ----------------------------------------------------------------------------- output file


def test_jsonl_log_cuts_a_partial_last_line_and_refuses_a_corrupt_one(tmp_path):
    p = tmp_path / "out.jsonl"
    log = synth.JsonlLog(p)
    assert log.open() == []
    log.append({"id": "t-1", "text": "多行\n文本"})
    log.close()
    good = p.read_bytes()
    with open(p, "ab") as fh:
        fh.write('{"id": "t-2", "text": "写到一半'.encode("utf-8")[:-2])  # a crash mid-write, mid-character even
    log = synth.JsonlLog(p)
    assert log.open() == [{"id": "t-1", "text": "多行\n文本"}]
    assert log.dropped_bytes > 0 and p.read_bytes() == good
    log.append({"id": "t-3"})
    log.close()
    assert [json.loads(line)["id"] for line in p.read_text(encoding="utf-8").splitlines()] == ["t-1", "t-3"]
    p.write_bytes(good + b"{not json}\n" + b'{"id": "t-4"}\n')
    with pytest.raises(ThinksearchError, match=r"out.jsonl:2: not a JSON object \(a corrupt row\)"):
        synth.JsonlLog(p).open()


def test_two_writers_cannot_share_an_output(tmp_path):
    a = synth.JsonlLog(tmp_path / "out.jsonl")
    a.open()
    try:
        with pytest.raises(ThinksearchError, match="another thinksearch synth is writing"):
            synth.JsonlLog(tmp_path / "out.jsonl").open()
    finally:
        a.close()


# ----------------------------------------------------------------------------- whole pipeline over HTTP


def http_config(folder: Path, server: Server, **kw) -> SynthConfig:
    teacher = TeacherConfig(backend="openai", model="scripted", base_url=server.base_url, timeout_s=0.6,
                            max_retries=3, backoff_s=0.01, backoff_max_s=0.05, concurrency=8)
    base = dict(write_pools(folder), output=str(folder / "data.jsonl"), num_thinking=THINKING_ROWS,
                num_search=SEARCH_ROWS, batch_size=6, teacher=teacher, decision_line=True)
    return SynthConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def http_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth-http")
    server = Server(fault_percent=25, timeout_sleep_s=1.0).start()
    cfg = http_config(folder, server, export_reference=str(folder / "synthetic_data.json"))
    stats = synth.synthesize(cfg, search=FakeSearch(), progress=False)
    rows = synth.read_rows(cfg.output)
    failures = synth.read_rows(synth.sibling(cfg.output, ".failures.jsonl"))
    yield cfg, stats, rows, failures, server
    server.stop()


def test_pipeline_reaches_the_targets_despite_faults(http_run):
    cfg, stats, rows, failures, server = http_run
    assert set(server.injected) == {"500", "429", "timeout", "garbage", "no_choices"}, server.injected
    by_type = {k: [r for r in rows if r["type"] == k] for k in ("thinking", "search")}
    assert len(by_type["thinking"]) == cfg.num_thinking and len(by_type["search"]) == cfg.num_search
    assert stats.complete and stats.rows_in_file == {"thinking": cfg.num_thinking, "search": cfg.num_search}
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    # Nothing lost: every pool question is either a row or a failure with its reason.
    asked = {question_id("thinking", q) for q in THINKING} | {question_id("search", q) for q in SEARCH}
    asked.discard(question_id("search", "现任日本首相是谁？"))  # decontaminated (eval overlap)
    assert set(ids) | {f["id"] for f in failures} == asked
    assert stats.pools["search"]["dropped"] == {"eval_overlap": 1}
    assert question_id("search", "现任日本首相是谁？") not in ids
    reasons = {(f["question"].split()[0], f["stage"], f["reason"]) for f in failures}
    assert reasons == {
        ("[泄漏]", "answer", "leaked_tags"), ("[截断]", "analysis", "truncated"), ("[循环]", "analysis", "repetition"),
        ("[无引用]", "grounded", "no_citation"), ("[截断]", "query", "truncated"), ("故障", "search", "search_error"),
        ("[照抄]", "grounded", "copied_results"), ("[泛泛]", "query", "generic_reasoning"),
    }
    assert all(f["detail"] for f in failures)
    assert stats.rejected["answer/leaked_tags"] == 1 and stats.failed == {"search/search_error": 1}
    assert stats.prompt_tokens > 0 and stats.completion_tokens > 0 and stats.samples_per_minute > 0
    saved = json.loads(synth.sibling(cfg.output, ".stats.json").read_text(encoding="utf-8"))
    assert saved["kept"] == dict(stats.kept) and saved["rejected"] == dict(stats.rejected) and saved["complete"]


def test_rows_follow_the_format_contract(http_run, tiny_tokenizer):
    cfg, stats, rows, failures, server = http_run
    for row in rows:
        msgs = row["messages"]
        assert msgs[0] == {"role": "system", "content": fmt.SYSTEM_PROMPT} and msgs[1]["role"] == "user"
        rendered = fmt.render(tiny_tokenizer, msgs)
        turns = rendered.split("<|im_start|>assistant\n")[1:]
        first = fmt.parse(turns[0])
        assert first.thinking and first.thinking_closed
        # The decision is stated first, by code; the teacher's text follows on its own line.
        decision, _, teacher_text = first.thinking.partition("\n")
        assert decision == synth.DECISION_LINES[row["type"]] and teacher_text.strip()
        if row["type"] == "thinking":
            assert len(msgs) == 3 and first.answer and not first.attempted_call
            assert row["meta"]["finish_reasons"] == ["stop", "stop"]
        else:
            assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
            (call,) = first.tool_calls
            assert call.query == row["meta"]["search_query"] and fmt.validate_query(call) is None
            assert "<tool_call>" not in msgs[3]["content"] and "‹tool_call›" in msgs[3]["content"]  # neutralised results
            assert row["meta"]["search_backend"] == "fake" and len(row["meta"]["results"]) == 3
            if row["meta"]["answer"] == "abstained":
                # [换行]'s repaired query (价格 今日) finds nothing about 以太坊: code says so, naming the query.
                assert row["messages"][1]["content"].startswith("[换行]") and row["meta"]["gates"]["passed"] == ["query", "search"]
                assert scoring.abstains(msgs[4]["content"]) and row["meta"]["search_query"] in msgs[4]["content"]
            else:
                assert synth.check_citations(msgs[4]["content"], 3)[0] == msgs[4]["content"]
                assert row["meta"]["answer"] == "teacher" and "relevance" in row["meta"]["gates"]["passed"]
        assert row["meta"]["teacher"] == "openai:scripted" and row["meta"]["tokens"]["completion"] > 0
    repaired = next(r for r in rows if r["messages"][1]["content"].startswith("[换行]"))
    assert repaired["meta"]["search_query"] == "价格 今日"
    assert repaired["meta"]["gates"]["repairs"] == ["query: joined 2 lines"]
    assert stats.repairs["query: joined 2 lines"] == 1
    r1 = next(r for r in rows if r["messages"][1]["content"].startswith("[R1]"))
    assert r1["meta"]["trace_source"] == "reasoning"
    assert r1["messages"][2]["content"].startswith(f"<thinking>\n{synth.DECISION_LINES['thinking']}\n嗯，用户问的是")


def test_reference_export_layout(http_run, tiny_tokenizer):
    cfg, stats, rows, failures, server = http_run
    exported = json.loads(Path(cfg.export_reference).read_text(encoding="utf-8"))
    assert isinstance(exported, list) and len(exported) == len(rows)
    for row, ref in zip(rows, exported):
        assert set(ref) == {"messages", "type"} and ref["type"] == row["type"]
        assert all(set(m) == {"role", "content"} for m in ref["messages"])
        # Tool calls written into the content render exactly as the template renders tool_calls.
        assert fmt.render(tiny_tokenizer, ref["messages"]) == fmt.render(tiny_tokenizer, row["messages"])


def test_rerun_resumes_without_duplicates(http_run):
    cfg, stats, rows, failures, server = http_run
    before = server.requests
    again = synth.synthesize(cfg, search=FakeSearch(), progress=False)
    assert sum(again.kept.values()) == 0 and again.complete and server.requests == before
    assert synth.read_rows(cfg.output) == rows
    more = dataclasses.replace(cfg, num_search=cfg.num_search + 1, retry_rejected=False)
    # The search pool has one transient failure left (故障): asking for one more row retries it.
    third = synth.synthesize(more, search=FakeSearch(), progress=False)
    assert third.failed == {"search/search_error": 1} and third.exhausted == ["search"]
    assert len(synth.read_rows(cfg.output)) == len(rows)


def test_local_backend_with_the_tiny_model(tmp_path, tiny):
    from thinksearch.teacher import LocalTeacher

    model, tok = tiny
    teacher = LocalTeacher(TeacherConfig(model="tiny", batch_size=4), model=model, tokenizer=tok)
    (tmp_path / "t.txt").write_text("\n".join(THINKING[:4]) + "\n", encoding="utf-8")
    (tmp_path / "s.txt").write_text("\n".join(SEARCH[:3]) + "\n", encoding="utf-8")
    cfg = SynthConfig(thinking_questions=str(tmp_path / "t.txt"), search_questions=str(tmp_path / "s.txt"),
                      eval_questions=None, output=str(tmp_path / "out.jsonl"), num_thinking=3, num_search=2,
                      batch_size=4, max_tokens_analysis=8, max_tokens_answer=8, max_tokens_query=8,
                      max_tokens_grounded=8, temperature=0.0)
    stats = synth.synthesize(cfg, teacher=teacher, search=FakeSearch(), progress=False)
    rows = synth.read_rows(cfg.output)
    failures = synth.read_rows(synth.sibling(cfg.output, ".failures.jsonl"))
    # A random 2-layer model writes noise: whatever the gates decided, every question asked is accounted for.
    assert stats.teacher == "local:tiny" and stats.teacher_requests >= 5 and stats.prompt_tokens > 0
    assert len(rows) == sum(stats.kept.values())
    assert len(failures) == sum(stats.rejected.values()) + sum(stats.failed.values()) > 0
    assert all(f["reason"] for f in failures)


class AnsweringTeacher:
    """Answers the question where it was asked why to search (as small teachers do)."""

    name = "answering"

    def generate(self, requests):
        return [TeacherReply("英国首相是某某[1]。" if "搜索结果" in r.messages[-1]["content"] else
                             json.dumps({"reasoning": "英国首相是乔治·华盛顿。", "query": "英国首相"}, ensure_ascii=False))
                for r in requests]


@pytest.mark.parametrize("fallback, decision_line", [(False, True), (True, True), (True, False)])
def test_a_teacher_that_gives_no_reason_to_search(tmp_path, fallback, decision_line):
    (tmp_path / "t.txt").write_text("", encoding="utf-8")
    (tmp_path / "s.txt").write_text("英国首相叫什么名字？\n", encoding="utf-8")
    cfg = SynthConfig(thinking_questions=str(tmp_path / "t.txt"), search_questions=str(tmp_path / "s.txt"),
                      eval_questions=None, output=str(tmp_path / "out.jsonl"), num_thinking=0, num_search=1,
                      search_reason_fallback=fallback, decision_line=decision_line)
    stats = synth.synthesize(cfg, teacher=AnsweringTeacher(), search=FakeSearch(), progress=False)
    rows = synth.read_rows(cfg.output)
    if not fallback:
        assert rows == [] and stats.rejected == {"query/no_search_reason": 1}
        return
    (row,) = rows
    thinking = fmt.parse(row["messages"][2]["content"]).thinking
    opening = synth.DECISION_LINES["search"] + "\n" if decision_line else ""
    # An uncategorised question (a .txt pool) gets one of the general wordings, picked by the row's seed.
    from thinksearch.synth.templates import TEMPLATE_REASONS

    assert thinking in {opening + v.format(q="英国首相") for v in TEMPLATE_REASONS[None]} and "华盛顿" not in thinking
    assert row["meta"]["gates"]["repairs"] == ["reasoning: template (no_search_reason)"]
    assert stats.repairs == {"reasoning: template (no_search_reason)": 1}


class DeadTeacher:
    name = "dead"

    def generate(self, requests):
        return [TeacherReply("", finish_reason="error", error="HTTP 503") for _ in requests]


def test_a_teacher_that_keeps_failing_stops_the_run_resumably(tmp_path):
    cfg = SynthConfig(**write_pools(tmp_path), output=str(tmp_path / "out.jsonl"), num_thinking=30, num_search=0,
                      max_consecutive_errors=5, batch_size=4)
    with pytest.raises(ThinksearchError) as e:
        synth.synthesize(cfg, teacher=DeadTeacher(), progress=False)
    assert str(e.value) == ("stopped after 5 teacher errors in a row (last: HTTP 503); "
                            "fix the teacher and rerun the same command to resume")
    saved = json.loads(synth.sibling(cfg.output, ".stats.json").read_text(encoding="utf-8"))
    assert saved["error"] == str(e.value) and saved["failed"] == {"analysis/teacher_error": 5}


# ----------------------------------------------------------------------------- signals (real CLI process)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_batch_in_flight_and_exits_zero(tmp_path, sig):
    server = Server(delay_s=0.25).start()
    try:
        pools = write_pools(tmp_path)
        out = tmp_path / "data.jsonl"
        cmd = [sys.executable, "-m", "thinksearch", "synth", "--no-progress", "--thinking-questions", pools["thinking_questions"],
               "--eval-questions", "null", "--num-thinking", "30", "--num-search", "0", "--batch-size", "2",
               "--output", str(out), "--teacher-backend", "openai", "--teacher-model", "scripted",
               "--teacher-base-url", server.base_url]
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not _lines(out) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 0, stderr
    name = signal.Signals(sig).name
    assert f"{name}: finishing the rows in flight, then stopping" in stderr
    assert f"stopped by {name} after finishing the rows in flight; rerun the same command to resume" in stderr
    rows = [json.loads(line) for line in _lines(out)]
    # Only questions without scripted mistakes can be drawn here... unless the batch holds one: count both.
    failures = _lines(tmp_path / "data.failures.jsonl")
    assert 0 < len(rows) < 30 and (len(rows) + len(failures)) % 2 == 0  # whole batches only
    stats = json.loads((tmp_path / "data.stats.json").read_text(encoding="utf-8"))
    assert stats["interrupted"] == name and "synth → " in stdout


# ----------------------------------------------------------------------------- CLI one-line errors


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["synth", "--no-progress", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.fixture()
def pools(tmp_path):
    return write_pools(tmp_path)


def test_cli_missing_question_file(tmp_path, capsys):
    code, msg = run_cli(capsys, "--thinking-questions", str(tmp_path / "nope.txt"), "--num-search", "0",
                        "--eval-questions", "null")
    assert (code, msg) == (2, f"error: question file not found: {tmp_path / 'nope.txt'}")


def test_cli_empty_question_file(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n", encoding="utf-8")
    code, msg = run_cli(capsys, "--thinking-questions", str(tmp_path / "empty.txt"), "--num-search", "0",
                        "--eval-questions", "null")
    assert (code, msg) == (2, f"error: question file {tmp_path / 'empty.txt'} holds no questions")


def test_cli_non_utf8_question_file(tmp_path, capsys):
    (tmp_path / "gbk.txt").write_bytes("第一题\n".encode("utf-8") + "第二题".encode("gbk") + b"\n")
    code, msg = run_cli(capsys, "--thinking-questions", str(tmp_path / "gbk.txt"), "--num-search", "0",
                        "--eval-questions", "null")
    assert (code, msg) == (2, f"error: {tmp_path / 'gbk.txt'}:2: not valid UTF-8 (byte 0xb5); save the file as UTF-8")


def test_cli_malformed_jsonl(tmp_path, capsys, pools):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "北京天气？"}\n{"question": "上海天气？"\n', encoding="utf-8")
    code, msg = run_cli(capsys, "--search-questions", str(bad), "--num-thinking", "0", "--eval-questions", "null")
    assert code == 2 and msg.startswith(f"error: {bad}:2: invalid JSON: ")


def test_cli_missing_eval_file(tmp_path, capsys, pools):
    code, msg = run_cli(capsys, "--thinking-questions", pools["thinking_questions"], "--num-search", "0",
                        "--eval-questions", str(tmp_path / "no-eval.jsonl"))
    assert (code, msg) == (2, f"error: eval file not found: {tmp_path / 'no-eval.jsonl'} (it is used to decontaminate "
                              "the pools; pass --eval-questions null to skip that)")


def test_cli_endpoint_down(tmp_path, capsys, pools):
    from test_teacher import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    code, msg = run_cli(capsys, "--thinking-questions", pools["thinking_questions"], "--num-search", "0",
                        "--eval-questions", "null", "--output", str(tmp_path / "o.jsonl"),
                        "--teacher-backend", "openai", "--teacher-base-url", url)
    assert code == 2 and msg.startswith(f"error: teacher endpoint {url} is not reachable (")
    assert msg.endswith("; start the server or fix --teacher-base-url")


def test_cli_missing_api_key_variable(tmp_path, capsys, pools, monkeypatch):
    monkeypatch.delenv("THINKSEARCH_MISSING_KEY", raising=False)
    code, msg = run_cli(capsys, "--thinking-questions", pools["thinking_questions"], "--num-search", "0",
                        "--eval-questions", "null", "--output", str(tmp_path / "o.jsonl"),
                        "--teacher-backend", "openai", "--teacher-api-key-env", "THINKSEARCH_MISSING_KEY")
    assert (code, msg) == (2, "error: environment variable THINKSEARCH_MISSING_KEY is not set; export it with the "
                              "teacher's API key (--teacher-api-key-env names the variable; use null for servers that need no key)")


def test_cli_bad_value_names_the_flag(capsys):
    code, msg = run_cli(capsys, "--top-p", "1.5")
    assert (code, msg) == (2, "error: --top-p (synth.top_p): must be in (0, 1], got 1.5")


def test_config_fields_are_documented_and_yaml_and_flags_combine(tmp_path):
    import argparse

    from thinksearch import config

    for cls in (TeacherConfig, SynthConfig):
        assert set(config.field_docs(cls)) == {f.name for f in dataclasses.fields(cls)}, cls.__name__
    y = tmp_path / "c.yaml"
    y.write_text("synth:\n  num_search: 5\n  teacher: {backend: openai, api_key_env: MY_KEY}\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    config.add_flags(parser, SynthConfig)
    args = parser.parse_args(["--teacher-concurrency", "16", "--eval-questions", "null"])
    c = config.build(SynthConfig, y, "synth", config.overrides_from_args(args, SynthConfig))
    assert (c.num_search, c.teacher.backend, c.teacher.api_key_env, c.teacher.concurrency, c.eval_questions) == (
        5, "openai", "MY_KEY", 16, None)


@pytest.mark.slow
def test_quickstart_teacher_writes_rows(tmp_path):
    """The offline 0.5B model as a local teacher: real rows come out, every question is accounted for."""
    (tmp_path / "t.txt").write_text("一个数的3倍加5等于20，这个数是多少？\n为什么冬天窗户内侧会结霜？\n", encoding="utf-8")
    (tmp_path / "s.txt").write_text("今天美元兑人民币汇率多少？\n现任日本首相是谁？\n", encoding="utf-8")
    cfg = SynthConfig(thinking_questions=str(tmp_path / "t.txt"), search_questions=str(tmp_path / "s.txt"),
                      eval_questions=None, output=str(tmp_path / "out.jsonl"), num_thinking=1, num_search=1,
                      teacher=TeacherConfig(backend="local"))
    stats = synth.synthesize(cfg, search=FakeSearch(), progress=False)
    rows = synth.read_rows(cfg.output)
    failures = synth.read_rows(synth.sibling(cfg.output, ".failures.jsonl"))
    assert rows, failures
    second_stage = len(rows) + sum(f["stage"] in ("answer", "grounded") for f in failures)
    assert len(rows) + len(failures) == stats.teacher_requests - second_stage  # one outcome per question asked
    for row in rows:
        assert row["messages"][2]["content"].startswith("<thinking>\n")
