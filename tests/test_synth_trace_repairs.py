"""The two repairs code makes to a teacher's thinking trace, end to end with a scripted teacher.

- ``trim_analysis``: a trace that runs past max_tokens_analysis and has a full sentence in its
  second half is kept up to that sentence (and says so in its repairs); one without is
  rejected as truncated, as every truncated trace is with the option off.
- ``plain_trace``: a trace written as a Markdown document is kept as the same words without the
  layout (and says so); one that was nothing but headings is rejected as empty; off, nothing
  changes.
"""

from __future__ import annotations

from thinksearch import synth
from thinksearch.config import SynthConfig
from thinksearch.synth.rows import PLAIN_REPAIR, TRIM_REPAIR
from thinksearch.teacher import TeacherReply

# question → (trace, answer)
CUT = {
    "一件衣服原价240元，打八折后多少钱？": ("原价240元。八折就是乘以0.8。240乘以0.8等于192。再检查一", "192元"),
    "3个苹果加5个苹果一共几个？": ("好。先数第一堆有三个，再数第二堆有五个，两堆合起来一共是八", "8个"),
}
BOX = "长2米、宽1.5米、高1米的水箱能装多少立方米水？"
MARKDOWN = {
    BOX: ("### 问题理解\n\n1. **已知**：\n   - 长2米，宽1.5米，高1米。\n\n### 计算\n\n2. 体积 = 2 × 1.5 × 1 = 3立方米。", "3立方米。"),
    "3个苹果加5个苹果一共几个？": ("先数第一堆有3个，第二堆有5个，3加5等于8。", "一共8个。"),
    "一周有几天？": ("### 问题理解\n\n### 结论\n", "7天。"),
}


class Teacher:
    name = "scripted"

    def __init__(self, script: dict, finish_reason: str):
        self.script, self.finish_reason = script, finish_reason

    def generate(self, requests):
        out = []
        for r in requests:
            prompt = r.messages[-1]["content"]
            trace, answer = next(v for q, v in self.script.items() if q in prompt)
            if prompt.startswith("问题："):  # the answer, given the analysis
                out.append(TeacherReply(answer))
            else:
                out.append(TeacherReply(trace, finish_reason=self.finish_reason))
        return out


def run(tmp_path, script: dict, finish_reason: str = "stop", **kw):
    pool = tmp_path / "t.txt"
    pool.write_text("".join(q + "\n" for q in script), encoding="utf-8")
    (tmp_path / "s.txt").write_text("", encoding="utf-8")
    cfg = SynthConfig(thinking_questions=str(pool), search_questions=str(tmp_path / "s.txt"), eval_questions=None,
                      output=str(tmp_path / "out.jsonl"), num_thinking=len(script), num_search=0, **kw)
    stats = synth.synthesize(cfg, teacher=Teacher(script, finish_reason), progress=False)
    return stats, {r["messages"][1]["content"]: r for r in synth.read_rows(cfg.output)}


def trace(row):
    return row["messages"][2]["content"].split("</thinking>")[0].removeprefix("<thinking>\n").strip()


def test_trimmed_at_the_last_full_sentence(tmp_path):
    stats, rows = run(tmp_path, CUT, "length", trim_analysis=True)
    row = rows["一件衣服原价240元，打八折后多少钱？"]
    assert row["messages"][2]["content"] == "<thinking>\n原价240元。八折就是乘以0.8。240乘以0.8等于192。\n</thinking>\n\n192元"
    assert row["meta"]["gates"]["repairs"] == [TRIM_REPAIR] and row["meta"]["finish_reasons"][0] == "length"
    # Its only sentence end is in the first half: what is left would be no trace.
    assert "3个苹果加5个苹果一共几个？" not in rows and stats.rejected == {"analysis/truncated": 1}
    assert stats.repairs == {TRIM_REPAIR: 1}


def test_off_rejects_every_truncated_trace(tmp_path):
    stats, rows = run(tmp_path, CUT, "length")
    assert not rows and stats.rejected == {"analysis/truncated": 2}


def test_markdown_layout_is_taken_out_and_the_words_kept(tmp_path):
    stats, rows = run(tmp_path, MARKDOWN, plain_trace=True)
    assert trace(rows[BOX]) == "1. 已知：长2米，宽1.5米，高1米。\n2. 体积 = 2 × 1.5 × 1 = 3立方米。"
    assert rows[BOX]["meta"]["gates"]["repairs"] == [PLAIN_REPAIR]
    # Already prose: untouched, no repair recorded.
    assert rows["3个苹果加5个苹果一共几个？"]["meta"]["gates"]["repairs"] == []
    # Headings only: no trace is left, and the gate says so.
    assert "一周有几天？" not in rows and stats.rejected == {"analysis/empty": 1}
    assert stats.repairs == {PLAIN_REPAIR: 2}  # the stats count repairs tried, the rejected one too


def test_plain_off_keeps_the_teachers_layout(tmp_path):
    stats, rows = run(tmp_path, MARKDOWN)
    assert trace(rows[BOX]).startswith("### 问题理解") and not stats.repairs
