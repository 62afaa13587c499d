"""The trace-length options end to end, with a scripted teacher.

trim_analysis: traces that run past max_tokens_analysis; one with a full sentence in its
second half is kept up to that sentence (and says so in its repairs), one without is rejected
as truncated, as every truncated trace is with the option off.

brief_traces: the teacher is asked for a few sentences of prose instead of the steps prompt,
and a trace that writes that prompt's wording as its own labels is rejected as echoes_prompt;
off, the steps prompt is asked and the same trace is kept.
"""

from __future__ import annotations

from thinksearch import synth
from thinksearch.config import SynthConfig
from thinksearch.synth.prompts import BRIEF_TASK, STEPS_TASK
from thinksearch.synth.rows import TRIM_REPAIR
from thinksearch.teacher import TeacherReply

LONG = {
    "一件衣服原价240元，打八折后多少钱？": "原价240元。八折就是乘以0.8。240乘以0.8等于192。再检查一",
    "3个苹果加5个苹果一共几个？": "好。先数第一堆有三个，再数第二堆有五个，两堆合起来一共是八",
}
BRIEF = {
    "一件衣服原价240元，打八折后多少钱？": "八折就是乘以0.8，240乘以0.8等于192，所以是192元。",
    "3个苹果加5个苹果一共几个？": "最后一句给出结论：3加5等于8。",
}


class Teacher:
    name = "scripted"

    def __init__(self, traces: dict[str, str], finish_reason: str):
        self.traces, self.finish_reason = traces, finish_reason
        self.asked: list[str] = []

    def generate(self, requests):
        out = []
        for r in requests:
            prompt = r.messages[-1]["content"]
            q = next(q for q in self.traces if q in prompt)
            if prompt.startswith("问题："):  # the answer, given the analysis
                out.append(TeacherReply("192元" if "240" in q else "8个"))
            else:
                self.asked.append(prompt)
                out.append(TeacherReply(self.traces[q], finish_reason=self.finish_reason))
        return out


def run(tmp_path, teacher, **kw):
    pool = tmp_path / "t.txt"
    pool.write_text("".join(q + "\n" for q in teacher.traces), encoding="utf-8")
    (tmp_path / "s.txt").write_text("", encoding="utf-8")
    cfg = SynthConfig(thinking_questions=str(pool), search_questions=str(tmp_path / "s.txt"), eval_questions=None,
                      output=str(tmp_path / "out.jsonl"), num_thinking=len(teacher.traces), num_search=0, **kw)
    stats = synth.synthesize(cfg, teacher=teacher, progress=False)
    return stats, {r["messages"][1]["content"]: r for r in synth.read_rows(cfg.output)}


def test_trimmed_at_the_last_full_sentence(tmp_path):
    stats, rows = run(tmp_path, Teacher(LONG, "length"), trim_analysis=True)
    row = rows["一件衣服原价240元，打八折后多少钱？"]
    assert row["messages"][2]["content"] == "<thinking>\n原价240元。八折就是乘以0.8。240乘以0.8等于192。\n</thinking>\n\n192元"
    assert row["meta"]["gates"]["repairs"] == [TRIM_REPAIR] and row["meta"]["finish_reasons"][0] == "length"
    # Its only sentence end is in the first half: what is left would be no trace.
    assert "3个苹果加5个苹果一共几个？" not in rows and stats.rejected == {"analysis/truncated": 1}
    assert stats.repairs == {TRIM_REPAIR: 1}


def test_off_rejects_every_truncated_trace(tmp_path):
    stats, rows = run(tmp_path, Teacher(LONG, "length"))
    assert not rows and stats.rejected == {"analysis/truncated": 2}


def test_brief_prompt_and_echo_gate(tmp_path):
    teacher = Teacher(BRIEF, "stop")
    stats, rows = run(tmp_path, teacher, brief_traces=True)
    assert teacher.asked and all(BRIEF_TASK in p and STEPS_TASK not in p for p in teacher.asked)
    assert "所以是192元。\n</thinking>" in rows["一件衣服原价240元，打八折后多少钱？"]["messages"][2]["content"]
    assert "3个苹果加5个苹果一共几个？" not in rows and stats.rejected == {"analysis/echoes_prompt": 1}
    failure = synth.read_rows(synth.sibling(tmp_path / "out.jsonl", ".failures.jsonl"))[0]
    assert failure["reason"] == "echoes_prompt" and "最后一句给出" in failure["detail"]


def test_brief_off_asks_for_steps_and_keeps_the_trace(tmp_path):
    teacher = Teacher(BRIEF, "stop")
    stats, rows = run(tmp_path, teacher)
    assert teacher.asked and all(STEPS_TASK in p and BRIEF_TASK not in p for p in teacher.asked)
    assert len(rows) == 2 and not stats.rejected
