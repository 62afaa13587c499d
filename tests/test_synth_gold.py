"""Gold-checked sampling: k candidates per thinking question with gold, only a matching one
kept, pass@1 / pass@k per category, unverified rows labelled and capped, a category the
teacher never gets right reported, resume after a crash, and k=1 unchanged."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from teacher_server import stage_of
from thinksearch import cli, scoring, synth
from thinksearch.config import SynthConfig
from thinksearch.questions import question_id
from thinksearch.synth.verify import candidate_seed
from thinksearch.teacher import TeacherReply

ROOT = Path(__file__).resolve().parents[1]
_QUESTION_RE = re.compile(r"问题：(.*)")

# question → (category, gold, the teacher's answer for candidate 0, 1, 2 …); gold None: an open question.
ARITH = {
    "一加一等于几？": ("arithmetic", "2", ["答案是3。", "答案是2。", "答案是2。"]),  # right only on candidate 1
    "两个五相乘是多少？": ("arithmetic", "10", ["结果是10。", "结果是12。", "结果是10。"]),  # right at once
    "十的一半是多少？": ("arithmetic", "5", ["是4。", "是6。", "是7。"]),  # never right
}
HISTORY = {q: ("history", gold, ["我记得是在1919年。"] * 3) for q, gold in (
    ("法国大革命爆发在哪一年？", "1789"), ("秦始皇统一六国是哪一年？", "前221"), ("唐朝由谁建立？", "李渊"),
    ("赤壁之战发生在哪个朝代末年？", "东汉"), ("哥伦布第一次到达美洲是哪一年？", "1492"))}
OPEN = {q: (None, None, ["我的看法是多读书、多练习，循序渐进。"]) for q in (
    "怎样才能养成早起的习惯？", "学编程应该先学哪门语言？", "周末适合做些什么放松？", "如何和同事更好地沟通？",
    "读书时怎样做笔记更有用？", "旅行前要做哪些准备？")}


def write_pool(folder: Path, script: dict) -> str:
    rows = []
    for q, (category, gold, _) in script.items():
        row = {"question": q, "category": category or "advice"}
        if gold is not None:
            row.update(answers=[gold], match="any")
        rows.append(json.dumps(row, ensure_ascii=False))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "thinking.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


class ScriptedTeacher:
    """Answers each question's candidates in turn from the script; records every request.

    The candidate is its place among the same question's requests in one call: synth asks all
    of a question's candidates in one batched call, in order."""

    name = "scripted"

    def __init__(self, script: dict, crash_on_call: int | None = None, hints: dict | None = None):
        self.script, self.crash_on_call, self.hints = script, crash_on_call, hints or {}
        self.calls: list[list] = []

    def generate(self, requests):
        if self.crash_on_call is not None and len(self.calls) + 1 == self.crash_on_call:
            raise RuntimeError("the teacher process died")
        self.calls.append(list(requests))
        seen: dict[str, int] = {}
        out = []
        for r in requests:
            prompt = r.messages[-1]["content"]
            q = _QUESTION_RE.search(prompt).group(1).strip()
            j = seen[q] = seen.get(q, -1) + 1
            if "正确结果是" in prompt:  # the rationalisation prompt: question → (trace, answer)
                out.append(TeacherReply(self.hints[q][0]))
            elif stage_of(prompt) == "answer" and any(t in prompt for t, _ in self.hints.values()):
                out.append(TeacherReply(next(a for t, a in self.hints.values() if t in prompt)))
            elif stage_of(prompt) == "analysis":
                out.append(TeacherReply("先弄清题目问的是什么，列出已知条件，再一步步推出结论并检验。"))
            else:
                answers = self.script[q][2]
                out.append(TeacherReply(answers[min(j, len(answers) - 1)]))
        return out


def make_cfg(tmp_path: Path, script: dict, **kw) -> SynthConfig:
    base = dict(thinking_questions=write_pool(tmp_path, script), eval_questions=None, output=str(tmp_path / "out.jsonl"),
                num_thinking=len(script), num_search=0, batch_size=4)
    return SynthConfig(**{**base, **kw})


def run(cfg: SynthConfig, teacher) -> tuple[list[dict], list[dict], dict, str]:
    buf = io.StringIO()
    synth.synthesize(cfg, teacher=teacher, console=Console(file=buf, width=400), progress=False)
    failures_path = synth.sibling(cfg.output, ".failures.jsonl")
    failures = synth.read_rows(failures_path) if failures_path.exists() else []
    saved = json.loads(synth.sibling(cfg.output, ".stats.json").read_text(encoding="utf-8"))
    return synth.read_rows(cfg.output), failures, saved, buf.getvalue()


def question_of(row: dict) -> str:
    return row["messages"][1]["content"]


def test_a_row_is_kept_only_when_it_matches_gold(tmp_path):
    cfg = make_cfg(tmp_path, ARITH, samples_per_question=3, sample_temperature=1.1)
    teacher = ScriptedTeacher(ARITH)
    rows, failures, saved, _ = run(cfg, teacher)

    by_q = {question_of(r): r for r in rows}
    assert set(by_q) == {"一加一等于几？", "两个五相乘是多少？"}
    for q, row in by_q.items():  # the eval's scorer, independently of the synth gate
        final = scoring.final_answer(row["messages"][2]["content"])
        assert scoring.matches_gold(final, [ARITH[q][1]]) and row["meta"]["verified"] == "gold"
        assert row["meta"]["sampling"]["temperature"] == 1.1
    assert by_q["一加一等于几？"]["meta"]["gold"] == {"candidate": 1, "candidates": 3, "right": 2}
    assert by_q["两个五相乘是多少？"]["meta"]["gold"] == {"candidate": 0, "candidates": 3, "right": 2}
    (failure,) = failures
    assert (failure["question"], failure["stage"], failure["reason"], failure["transient"]) == (
        "十的一半是多少？", "gold", "mismatch", False)
    assert failure["text"] == "是4。"
    assert saved["rejected"] == {"gold/mismatch": 1}
    assert saved["gold"]["by_category"]["arithmetic"] == {
        "tried": 3, "pass_at_1": 1, "pass_at_k": 2, "pass_at_1_rate": 0.3333, "pass_at_k_rate": 0.6667}
    assert saved["gold"]["k"] == 3 and saved["verified"] == {"gold": 2}

    # All candidates in the same two batched calls (analysis, answer), each with its own seed.
    assert len(teacher.calls) == 2 and [len(c) for c in teacher.calls] == [9, 9]
    seeds = [r.seed for r in teacher.calls[0]]
    assert len(set(seeds)) == 9 and all(r.temperature == 1.1 for r in teacher.calls[0])
    assert seeds[1] == candidate_seed(seeds[0], 1)


def test_a_candidate_naming_every_option_is_not_verified(tmp_path):
    script = {"A店和B店哪家更便宜？": ("everyday", "选A店", ["选A店或者选B店都可以。", "A店便宜50元，选A店。"])}
    cfg = make_cfg(tmp_path, script, samples_per_question=2)
    pool = Path(cfg.thinking_questions)
    row = {**json.loads(pool.read_text(encoding="utf-8")), "wrong": ["选B店"]}  # the gold's other option
    pool.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")

    rows, _, saved, _ = run(cfg, ScriptedTeacher(script))
    (kept,) = rows
    assert kept["meta"]["gold"] == {"candidate": 1, "candidates": 2, "right": 1}
    assert saved["gold"]["by_category"]["everyday"]["pass_at_1"] == 0


def test_unverified_rows_are_labelled_and_capped(tmp_path):
    script = {**{q: v for q, v in ARITH.items() if q != "十的一半是多少？"}, **OPEN}
    cfg = make_cfg(tmp_path, script, num_thinking=5, samples_per_question=2, max_unverified_share=0.4)
    rows, failures, saved, _ = run(cfg, ScriptedTeacher(script))
    labels = sorted(r["meta"]["verified"] for r in rows)
    assert labels == ["gold", "gold", "none", "none"] and failures == []
    assert saved["unverified"]["cap"] == 2 and saved["unverified"]["rows_in_file"] == 2
    assert saved["unverified"]["passed_over"] == 4 and saved["exhausted"] == ["thinking"]
    assert all("gold" not in r["meta"] for r in rows if r["meta"]["verified"] == "none")

    # No cap at 1: the open questions fill the target.
    cfg = make_cfg(tmp_path / "all", script, num_thinking=5, samples_per_question=2, max_unverified_share=1.0)
    rows, _, saved, _ = run(cfg, ScriptedTeacher(script))
    assert len(rows) == 5 and sum(saved["verified"].values()) == 5 and saved["verified"]["none"] > 2


def test_a_category_the_teacher_never_gets_right_is_reported(tmp_path):
    script = {**ARITH, **HISTORY, **OPEN}
    cfg = make_cfg(tmp_path, script, num_thinking=8, samples_per_question=3, max_unverified_share=0.25)
    rows, failures, saved, console = run(cfg, ScriptedTeacher(script))
    assert saved["gold"]["never_matched"] == ["history"]
    assert saved["gold"]["by_category"]["history"]["tried"] == 5
    assert saved["gold"]["by_category"]["history"]["pass_at_k"] == 0
    assert "thinking category history: the teacher matched gold on none of 5 questions (3 candidates each)" in console
    # It is not filled with unverified rows: they stay within the cap.
    assert sum(r["meta"]["verified"] == "none" for r in rows) == 2 and saved["rows_in_file"]["thinking"] == 4
    assert sum(f["reason"] == "mismatch" for f in failures) == 6


def test_resume_after_a_crash_keeps_the_same_rows(tmp_path):
    script = {**ARITH, **HISTORY, **OPEN}
    kw = dict(num_thinking=8, samples_per_question=3, max_unverified_share=0.25, batch_size=3)
    ref_rows, ref_failures, _, _ = run(make_cfg(tmp_path / "ref", script, **kw), ScriptedTeacher(script))

    cfg = make_cfg(tmp_path / "crash", script, **kw)
    with pytest.raises(RuntimeError, match="died"):
        run(cfg, ScriptedTeacher(script, crash_on_call=4))  # during the second batch
    assert 0 < len(synth.read_rows(cfg.output)) < len(ref_rows)
    rows, failures, saved, _ = run(cfg, ScriptedTeacher(script))
    assert rows == ref_rows
    assert [(f["id"], f["reason"]) for f in failures] == [(f["id"], f["reason"]) for f in ref_failures]
    assert saved["unverified"]["rows_in_file"] == 2  # the cap counts resumed rows by their label


def test_k1_default_keeps_rows_and_stats_as_before(tmp_path):
    cfg = make_cfg(tmp_path, ARITH)
    assert not cfg.gold_checked
    teacher = ScriptedTeacher(ARITH)
    rows, failures, saved, _ = run(cfg, teacher)
    assert len(rows) == 3 and failures == []  # the wrong answers are kept, as before
    assert all("verified" not in r["meta"] and "gold" not in r["meta"] for r in rows)
    assert "gold" not in saved and "verified" not in saved
    assert all(r.temperature == cfg.temperature for r in teacher.calls[0])
    ids = sorted(question_id("thinking", q) for q in ARITH)
    assert sorted(r["id"] for r in rows) == ids

    # check_gold with one candidate: the check alone, no extra samples, at the usual temperature.
    cfg = make_cfg(tmp_path / "one", ARITH, check_gold=True)
    teacher = ScriptedTeacher(ARITH)
    rows, failures, saved, _ = run(cfg, teacher)
    assert [question_of(r) for r in rows] == ["两个五相乘是多少？"] and len(failures) == 2
    assert saved["gold"]["by_category"]["arithmetic"]["pass_at_1"] == saved["gold"]["by_category"]["arithmetic"]["pass_at_k"] == 1
    assert len(teacher.calls[0]) == 3 and all(r.temperature == cfg.temperature for r in teacher.calls[0])


def test_gold_hint_keeps_a_rationalised_trace_only_when_it_reaches_gold_unprompted(tmp_path):
    hints = {"十的一半是多少？": ("十平均分成两份，每份是十除以二，等于五。", "答案是5。"),
             "法国大革命爆发在哪一年？": ("根据提示，法国大革命爆发于1789年。", "是1789年。"),
             "唐朝由谁建立？": ("隋朝末年天下大乱，各地起兵反隋。", "是李世民。"),
             # States gold after working out another year: the answer is right, the trace is not.
             "哥伦布第一次到达美洲是哪一年？": ("1500 - 8 = 1490年他出海，两年后到达。", "是1492年。")}
    script = {**ARITH, **{q: HISTORY[q] for q in hints if q in HISTORY}}
    cfg = make_cfg(tmp_path, script, samples_per_question=2, gold_hint=True, batch_size=6)
    teacher = ScriptedTeacher(script, hints=hints)
    rows, failures, saved, _ = run(cfg, teacher)
    by_q = {question_of(r): r for r in rows}
    assert by_q["十的一半是多少？"]["meta"]["verified"] == "hint"
    assert by_q["十的一半是多少？"]["meta"]["gold"] == {"hint": "5"}
    assert "十除以二" in by_q["十的一半是多少？"]["messages"][2]["content"]
    assert {f["question"]: f["reason"] for f in failures} == {"法国大革命爆发在哪一年？": "mentions_hint",
                                                              "唐朝由谁建立？": "mismatch",
                                                              "哥伦布第一次到达美洲是哪一年？": "underived"}
    assert saved["rejected"] == {"hint/mentions_hint": 1, "hint/mismatch": 1, "hint/underived": 1}
    assert saved["verified"] == {"gold": 2, "hint": 1}
    # pass@k counts the unhinted candidates only.
    assert saved["gold"]["total"]["pass_at_k"] == 2 and saved["gold"]["total"]["tried"] == 6
    # One hinted round for the four missed questions, after the candidates' two calls.
    assert [len(c) for c in teacher.calls] == [12, 12, 4, 4]
    assert all("正确结果是" in r.messages[-1]["content"] for r in teacher.calls[2])
    assert not any("正确结果是" in r.messages[-1]["content"] for r in teacher.calls[3])  # the answer never sees the hint


def test_the_shipped_pool_with_a_teacher_that_states_gold(tmp_path):
    """The shipped thinking pool's gold, in every format it uses, is matched by a teacher that
    states it on the second candidate, and only then; open questions stay within the cap."""
    from thinksearch.questions import read_pool

    pool = ROOT / "data" / "questions" / "thinking.jsonl"
    script = {}
    for q in read_pool(pool):
        said = "、".join(q.answers) if q.match == "all" else (q.answers[0] if q.answers else "")
        script[q.text] = (q.category, q.answers or None, ["我不太确定。", f"所以答案是{said}。" if said else "我不太确定。"])
    cfg = SynthConfig(thinking_questions=str(pool), eval_questions=None, output=str(tmp_path / "out.jsonl"),
                      num_thinking=40, num_search=0, batch_size=8, samples_per_question=2)
    rows, failures, saved, _ = run(cfg, ScriptedTeacher(script))
    assert len(rows) == 40 and failures == []
    assert saved["verified"] == {"gold": 28, "none": 12}
    total = saved["gold"]["total"]
    assert total["pass_at_1"] == 0 and total["pass_at_k"] == total["tried"] == 28
    assert all(r["meta"]["gold"]["candidate"] == 1 for r in rows if r["meta"]["verified"] == "gold")


def test_a_pool_without_gold_is_named(tmp_path):
    (tmp_path / "t.txt").write_text("\n".join(OPEN) + "\n", encoding="utf-8")
    cfg = SynthConfig(thinking_questions=str(tmp_path / "t.txt"), eval_questions=None, output=str(tmp_path / "out.jsonl"),
                      num_thinking=5, num_search=0, samples_per_question=3)
    rows, _, saved, console = run(cfg, ScriptedTeacher(OPEN))
    assert "carries no gold (answers / match): every thinking row would be unverified, and the cap (--max-unverified-share) allows 1" in console
    assert len(rows) == 1 and saved["unverified"] == {"rows_in_file": 1, "cap": 1, "passed_over": 5}


@pytest.mark.parametrize("flag, value, message", [
    ("--gold-hint", None, "error: --gold-hint (synth.gold_hint): needs gold checking: set --samples-per-question above 1 "
                          "or --check-gold"),
    ("--samples-per-question", "0", "error: --samples-per-question (synth.samples_per_question): must be an integer >= 1, got 0"),
    ("--max-unverified-share", "1.5", "error: --max-unverified-share (synth.max_unverified_share): must be in [0, 1], got 1.5"),
    ("--sample-temperature", "-1", "error: --sample-temperature (synth.sample_temperature): must be >= 0, got -1.0"),
])
def test_bad_values_name_the_flag(capsys, flag, value, message):
    code = cli.main(["synth", "--no-progress", flag, *([value] if value is not None else [])])
    assert (code, capsys.readouterr().err.strip().splitlines()[-1]) == (2, message)


def test_a_candidate_whose_trace_computes_something_else_is_not_right():
    """The first candidate states gold after working out another number (a pattern seen in real
    hinted rows: "240元 × 8折 = 1920元 … = 1900元，因此最终答案是：172"); the second derives it."""
    from types import SimpleNamespace

    from thinksearch import format as fmt
    from thinksearch.questions import Question
    from thinksearch.synth.verify import pick

    q = "一件衣服原价240元，先打八折再减20元，最后要付多少钱？"
    gold = Question(q, answers=("172",), category="arithmetic")

    def cand(trace: str, answer: str) -> SimpleNamespace:
        return SimpleNamespace(row={"messages": fmt.thinking_messages(q, trace, answer), "meta": {}}, rejection=None)

    wrong_way = cand("240元 × 8折 = 1920元。1920元 - 20元 = 1900元，因此最终答案是：172。", "要付172元。")
    right_way = cand("240 × 0.8 = 192元，192 - 20 = 172元。", "要付172元。")
    cfg = SynthConfig(check_gold=True, samples_per_question=2)
    item = SimpleNamespace(type="thinking", gold=gold)
    (row, rejection), tried = pick(cfg, item, [wrong_way, right_way])
    assert row is right_way.row and rejection is None and row["meta"]["gold"]["candidate"] == 1
    assert tried is not None and (tried.first, tried.any) == (False, True)
    (row, rejection), _ = pick(cfg, item, [wrong_way, wrong_way])
    assert row is None and rejection.label == "gold/mismatch"
    assert "2 state it after a trace that computes something else" in rejection.detail
