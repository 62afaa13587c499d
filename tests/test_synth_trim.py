"""trim_analysis end to end, with a scripted teacher whose traces run past max_tokens_analysis:
a trace with a full sentence in its second half is kept up to that sentence (and says so in its
repairs); one without is rejected as truncated, as every truncated trace is with the option off."""

from __future__ import annotations


from thinksearch import synth
from thinksearch.config import SynthConfig
from thinksearch.synth.rows import TRIM_REPAIR
from thinksearch.teacher import TeacherReply

TRACES = {
    "一件衣服原价240元，打八折后多少钱？": "原价240元。八折就是乘以0.8。240乘以0.8等于192。再检查一",
    "3个苹果加5个苹果一共几个？": "好。先数第一堆有三个，再数第二堆有五个，两堆合起来一共是八",
}


class Teacher:
    name = "scripted"

    def generate(self, requests):
        out = []
        for r in requests:
            prompt = r.messages[-1]["content"]
            q = next(q for q in TRACES if q in prompt)
            if prompt.startswith("问题："):  # the answer, given the analysis
                out.append(TeacherReply("192元" if "240" in q else "8个"))
            else:
                out.append(TeacherReply(TRACES[q], finish_reason="length"))
        return out


def run(tmp_path, **kw):
    pool = tmp_path / "t.txt"
    pool.write_text("".join(q + "\n" for q in TRACES), encoding="utf-8")
    (tmp_path / "s.txt").write_text("", encoding="utf-8")
    cfg = SynthConfig(thinking_questions=str(pool), search_questions=str(tmp_path / "s.txt"), eval_questions=None,
                      output=str(tmp_path / "out.jsonl"), num_thinking=len(TRACES), num_search=0, **kw)
    stats = synth.synthesize(cfg, teacher=Teacher(), progress=False)
    return stats, {r["messages"][1]["content"]: r for r in synth.read_rows(cfg.output)}


def test_trimmed_at_the_last_full_sentence(tmp_path):
    stats, rows = run(tmp_path, trim_analysis=True)
    row = rows["一件衣服原价240元，打八折后多少钱？"]
    assert row["messages"][2]["content"] == "<thinking>\n原价240元。八折就是乘以0.8。240乘以0.8等于192。\n</thinking>\n\n192元"
    assert row["meta"]["gates"]["repairs"] == [TRIM_REPAIR] and row["meta"]["finish_reasons"][0] == "length"
    # Its only sentence end is in the first half: what is left would be no trace.
    assert "3个苹果加5个苹果一共几个？" not in rows and stats.rejected == {"analysis/truncated": 1}
    assert stats.repairs == {TRIM_REPAIR: 1}


def test_off_rejects_every_truncated_trace(tmp_path):
    stats, rows = run(tmp_path)
    assert not rows and stats.rejected == {"analysis/truncated": 2}
