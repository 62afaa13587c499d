"""brief_traces end to end, with a scripted teacher that answers whichever trace prompt it gets:
on, the teacher is asked for a few sentences of prose (not the steps prompt), and a trace that
writes the prompt's wording as its own labels is rejected as echoes_prompt; off, the steps
prompt is asked and the same trace is kept, since its wording is not that prompt's."""

from __future__ import annotations

from thinksearch import synth
from thinksearch.synth.prompts import BRIEF_TASK, STEPS_TASK
from thinksearch.config import SynthConfig
from thinksearch.teacher import TeacherReply

TRACES = {
    "一件衣服原价240元，打八折后多少钱？": "八折就是乘以0.8，240乘以0.8等于192，所以是192元。",
    "3个苹果加5个苹果一共几个？": "最后一句给出结论：3加5等于8。",
}


class Teacher:
    name = "scripted"

    def __init__(self):
        self.asked: list[str] = []

    def generate(self, requests):
        out = []
        for r in requests:
            prompt = r.messages[-1]["content"]
            q = next(q for q in TRACES if q in prompt)
            if prompt.startswith("问题："):  # the answer, given the analysis
                out.append(TeacherReply("192元" if "240" in q else "8个"))
            else:
                self.asked.append(prompt)
                out.append(TeacherReply(TRACES[q]))
        return out


def run(tmp_path, **kw):
    pool = tmp_path / "t.txt"
    pool.write_text("".join(q + "\n" for q in TRACES), encoding="utf-8")
    (tmp_path / "s.txt").write_text("", encoding="utf-8")
    cfg = SynthConfig(thinking_questions=str(pool), search_questions=str(tmp_path / "s.txt"), eval_questions=None,
                      output=str(tmp_path / "out.jsonl"), num_thinking=len(TRACES), num_search=0, **kw)
    teacher = Teacher()
    stats = synth.synthesize(cfg, teacher=teacher, progress=False)
    return stats, {r["messages"][1]["content"]: r for r in synth.read_rows(cfg.output)}, teacher


def test_brief_prompt_and_echo_gate(tmp_path):
    stats, rows, teacher = run(tmp_path, brief_traces=True)
    assert teacher.asked and all(BRIEF_TASK in p and STEPS_TASK not in p for p in teacher.asked)
    row = rows["一件衣服原价240元，打八折后多少钱？"]
    assert "所以是192元。\n</thinking>" in row["messages"][2]["content"]
    assert "3个苹果加5个苹果一共几个？" not in rows and stats.rejected == {"analysis/echoes_prompt": 1}
    failure = synth.read_rows(synth.sibling(tmp_path / "out.jsonl", ".failures.jsonl"))[0]
    assert failure["reason"] == "echoes_prompt" and "最后一句给出" in failure["detail"]


def test_off_asks_for_steps_and_keeps_the_trace(tmp_path):
    stats, rows, teacher = run(tmp_path)
    assert all(STEPS_TASK in p and BRIEF_TASK not in p for p in teacher.asked)
    assert len(rows) == 2 and not stats.rejected
