"""plain_trace end to end, with a scripted teacher that writes its traces as Markdown documents:
the kept trace is the same words without the layout (and says so in its repairs), a trace that
was nothing but headings is rejected as empty, and with the option off nothing changes."""

from __future__ import annotations

from thinksearch import synth
from thinksearch.config import SynthConfig
from thinksearch.synth.rows import PLAIN_REPAIR
from thinksearch.teacher import TeacherReply

TRACES = {
    "长2米、宽1.5米、高1米的水箱能装多少立方米水？":
        "### 问题理解\n\n1. **已知**：\n   - 长2米，宽1.5米，高1米。\n\n### 计算\n\n2. 体积 = 2 × 1.5 × 1 = 3立方米。",
    "3个苹果加5个苹果一共几个？": "先数第一堆有3个，第二堆有5个，3加5等于8。",
    "一周有几天？": "### 问题理解\n\n### 结论\n",
}

ANSWERS = {q: a for q, a in zip(TRACES, ("3立方米。", "一共8个。", "7天。"))}


class Teacher:
    name = "scripted"

    def generate(self, requests):
        out = []
        for r in requests:
            prompt = r.messages[-1]["content"]
            q = next(q for q in TRACES if q in prompt)
            out.append(TeacherReply(ANSWERS[q] if prompt.startswith("问题：") else TRACES[q]))
        return out


def run(tmp_path, **kw):
    pool = tmp_path / "t.txt"
    pool.write_text("".join(q + "\n" for q in TRACES), encoding="utf-8")
    (tmp_path / "s.txt").write_text("", encoding="utf-8")
    cfg = SynthConfig(thinking_questions=str(pool), search_questions=str(tmp_path / "s.txt"), eval_questions=None,
                      output=str(tmp_path / "out.jsonl"), num_thinking=len(TRACES), num_search=0, **kw)
    stats = synth.synthesize(cfg, teacher=Teacher(), progress=False)
    return stats, {r["messages"][1]["content"]: r for r in synth.read_rows(cfg.output)}


def trace(row):
    return row["messages"][2]["content"].split("</thinking>")[0].removeprefix("<thinking>\n").strip()


def test_markdown_layout_is_taken_out_and_the_words_kept(tmp_path):
    stats, rows = run(tmp_path, plain_trace=True)
    box = rows["长2米、宽1.5米、高1米的水箱能装多少立方米水？"]
    assert trace(box) == "1. 已知：长2米，宽1.5米，高1米。\n2. 体积 = 2 × 1.5 × 1 = 3立方米。"
    assert box["meta"]["gates"]["repairs"] == [PLAIN_REPAIR]
    # Already prose: untouched, no repair recorded.
    assert rows["3个苹果加5个苹果一共几个？"]["meta"]["gates"]["repairs"] == []
    # Headings only: no trace is left, and the gate says so.
    assert "一周有几天？" not in rows and stats.rejected == {"analysis/empty": 1}
    assert stats.repairs == {PLAIN_REPAIR: 2}


def test_off_keeps_the_teachers_layout(tmp_path):
    stats, rows = run(tmp_path)
    assert trace(rows["长2米、宽1.5米、高1米的水箱能装多少立方米水？"]).startswith("### 问题理解")
    assert not stats.repairs
