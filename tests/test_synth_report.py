"""data.report.md: counts, shares, template reasoning and abstentions by category, 10 seeded
rows in full that no ``` inside a row can break, an empty file, a synth run writing it (and
rebuilding it from every row on resume), --report-only, and the run summary linking it."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from teacher_server import reply_for
from thinksearch import cli, pipeline, synth
from thinksearch import format as fmt
from thinksearch.config import SynthConfig
from thinksearch.synth.report import fence, sample, write_data_report
from thinksearch.synth.rows import template_reasoning
from thinksearch.teacher import TeacherReply


def thinking_row(n: int, verified: str | None = None, category: str | None = "arithmetic", answer: str = "答案是2。") -> dict:
    meta = {"gates": {"passed": ["analysis", "answer"], "repairs": []}}
    if verified:
        meta["verified"] = verified
    if category:
        meta["category"] = category
    return {"id": f"t-{n:03d}", "type": "thinking", "meta": meta,
            "messages": fmt.thinking_messages(f"问题{n}：一加一？", "一加一等于二。", answer)}


def search_row(n: int, answer: str, template: bool = False, category: str = "finance", by_code: bool = False) -> dict:
    query = f"金价 {n}"
    reasoning = template_reasoning(query) if template else "金价每天都在变，要查今天的。"
    repairs = ["reasoning: template (no_search_reason)"] if template else []
    return {"id": f"s-{n:03d}", "type": "search",
            "meta": {"category": category, "search_query": query, "gates": {"passed": [], "repairs": repairs},
                     "answer": "abstained" if by_code else "teacher"},
            "messages": fmt.search_messages(f"今天金价{n}？", reasoning, query, "[1] 金价\n今天金价每克700元。", answer)}


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def section(md: str, title: str) -> str:
    return md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


ROWS = ([thinking_row(i, "gold") for i in range(6)] + [thinking_row(6, "hint"), thinking_row(7, "none", "advice")]
        + [search_row(10, "今天金价每克700元[1]。"), search_row(11, "搜索结果中没有提到今天的金价。", template=True),
           search_row(12, "今天金价每克700元[1]。", template=True),
           search_row(13, "未找到相关信息。", category="weather", by_code=True)])


def test_counts_shares_template_and_abstentions(tmp_path):
    data = write(tmp_path / "data.jsonl", ROWS)
    (tmp_path / "data.stats.json").write_text(json.dumps({
        "rejected": {"gold/mismatch": 3, "query/no_query": 1}, "failed": {"search/search_error": 2},
        "gold": {"k": 4, "by_category": {"arithmetic": {"tried": 10, "pass_at_1": 4, "pass_at_k": 7}},
                 "never_matched": []}}), encoding="utf-8")
    write(tmp_path / "data.failures.jsonl",
          [{"id": f"f{i}", "type": "thinking", "stage": "gold", "reason": "mismatch", "transient": False} for i in range(5)]
          + [{"id": "f9", "type": "search", "stage": "search", "reason": "search_error", "transient": True}])
    path = write_data_report(data)
    assert path == tmp_path / "data.report.md"
    md = path.read_text(encoding="utf-8")

    assert "12 rows: 4 search, 8 thinking." in md
    cats = section(md, "Rows by type and category")
    assert "| thinking | arithmetic | 7 |" in cats and "| thinking | advice | 1 |" in cats
    assert "| search | finance | 3 |" in cats and "| search | weather | 1 |" in cats
    ver = section(md, "Verification of thinking rows")
    assert "| 8 | 6 (75.0%) | 1 (12.5%) | 1 (12.5%) | 0 (0.0%) |" in ver
    gold = section(md, "Gold-checked sampling")
    assert "pass@4" in gold and "| arithmetic | 10 | 4 (40.0%) | 7 (70.0%) |" in gold
    rej = section(md, "Rejections")
    assert "| gold/mismatch | thinking | no | 5 | 3 |" in rej
    assert "| search/search_error | search | yes | 1 | 2 |" in rej and "| query/no_query |  | no | 0 | 1 |" in rej
    search = section(md, "Search rows")
    # abstaining (any), of which the relevance gate's code-written ones, template reasoning
    assert "| finance | 3 | 1 (33.3%) | 0 | 2 (66.7%) |" in search
    assert "| weather | 1 | 1 (100.0%) | 1 | 0 (0.0%) |" in search
    assert "| **all** | 4 | 2 (50.0%) | 1 | 2 (50.0%) |" in search


def test_not_checked_and_category_lookup_for_older_rows(tmp_path):
    rows = [thinking_row(i, category=None) for i in range(3)]
    md = write_data_report(write(tmp_path / "d.jsonl", rows), lambda kind, q: "old" if q.endswith("0：一加一？") else None)
    md = md.read_text(encoding="utf-8")
    assert "| 3 | 0 (0.0%) | 0 (0.0%) | 0 (0.0%) | 3 (100.0%) |" in md
    assert "| thinking | old | 1 |" in md and "| thinking | (none) | 2 |" in md
    assert "Gold-checked sampling" not in md and "None recorded." in md


def test_ten_samples_are_seeded_and_in_full(tmp_path):
    rows = [thinking_row(i, "gold", answer=f"答案是{i}号。") for i in range(40)]
    data = write(tmp_path / "data.jsonl", rows)
    first = write_data_report(data).read_text(encoding="utf-8")
    assert write_data_report(data).read_text(encoding="utf-8") == first
    picked = re.findall(r"^### \d+\. `(t-\d+)`", first, re.M)
    assert len(picked) == 10 and picked == [rows[i]["id"] for i in sample(rows)]
    assert picked != [r["id"] for r in rows[:10]]  # random, not the first ten
    i = int(picked[0][2:])
    for m in rows[i]["messages"]:  # every message, role and content, unescaped
        assert f"**{m['role']}**\n\n```\n{m['content']}\n```" in first
    # A search row's tool call is written into its turn, as the model sees it.
    md = write_data_report(write(tmp_path / "s.jsonl", [search_row(1, "答案[1]。")])).read_text(encoding="utf-8")
    assert '"name": "search"' in section(md, "1 random rows") and "Query: 金价 1" in md


def test_backticks_in_a_row_do_not_break_the_fence(tmp_path):
    nasty = "代码如下：\n```python\nprint(1)\n```\n还有````四个。"
    md = write_data_report(write(tmp_path / "data.jsonl", [thinking_row(1, answer=nasty)])).read_text(encoding="utf-8")
    assert fence(nasty) == "`````"
    block = re.search(r"\*\*assistant\*\*\n\n(`{3,})\n(.*?)\n\1\n", md, re.S)
    assert block and block.group(1) == "`````" and nasty in block.group(2)
    # Outside the fences nothing of the row leaks: every fence opened is closed.
    assert sum(1 for line in md.splitlines() if line == "`````") % 2 == 0


@pytest.mark.parametrize("content", [None, ""])
def test_an_empty_or_missing_data_file_says_there_are_no_rows(tmp_path, content):
    data = tmp_path / "data.jsonl"
    if content is not None:
        data.write_text(content, encoding="utf-8")
    md = write_data_report(data).read_text(encoding="utf-8")
    assert "There are no rows in this data file yet." in md and "random rows" not in md


class FakeTeacher:
    """The fake server's plausible replies (tests/teacher_server.py), in process."""

    name = "fake"

    def generate(self, requests):
        return [TeacherReply(text, finish_reason=finish)
                for text, finish in (reply_for(r.messages[-1]["content"]) for r in requests)]


def _pool(tmp_path: Path) -> str:
    path = tmp_path / "pool.jsonl"
    qs = [("一加一等于几？", "arithmetic"), ("二加二等于几？", "arithmetic"), ("怎样养成早起的习惯？", "advice"),
          ("三加三等于几？", "arithmetic")]
    path.write_text("".join(json.dumps({"question": q, "category": c}, ensure_ascii=False) + "\n" for q, c in qs),
                    encoding="utf-8")
    return str(path)


def test_synth_writes_the_report_and_rebuilds_it_from_every_row_on_resume(tmp_path, capsys):
    cfg = SynthConfig(thinking_questions=_pool(tmp_path), eval_questions=None, output=str(tmp_path / "data.jsonl"),
                      num_thinking=2, num_search=0, batch_size=2)
    teacher = FakeTeacher()
    synth.synthesize(cfg, teacher=teacher, console=Console(file=io.StringIO()), progress=False)
    report = tmp_path / "data.report.md"
    assert "2 rows: 2 thinking." in report.read_text(encoding="utf-8")
    rows = synth.read_rows(cfg.output)
    assert all(r["meta"].get("category") for r in rows)

    cfg.num_thinking = 4  # resume: this run writes 2 more, the report counts all 4
    synth.synthesize(cfg, teacher=teacher, console=Console(file=io.StringIO()), progress=False)
    md = report.read_text(encoding="utf-8")
    assert "4 rows: 4 thinking." in md and "| thinking | arithmetic | 3 |" in md and "| thinking | advice | 1 |" in md

    # --report-only rebuilds it alone (no teacher), taking categories from the pool for rows without one.
    stripped = [{**r, "meta": {k: v for k, v in r["meta"].items() if k != "category"}} for r in rows]
    write(Path(cfg.output), stripped)
    report.unlink()
    assert cli.main(["synth", "--report-only", "--output", cfg.output, "--thinking-questions",
                     cfg.thinking_questions, "--eval-questions", "null"]) == 0
    md = report.read_text(encoding="utf-8")
    assert "| thinking | arithmetic |" in md and "(none)" not in md and "wrote" in capsys.readouterr().out
    assert cli.main(["synth", "--report-only", "--output", str(tmp_path / "nope.jsonl")]) != 0


def test_the_run_summary_lists_the_report(tmp_path):
    for name in ("data.jsonl", "data.report.md", "data.stats.json"):
        (tmp_path / name).write_text("", encoding="utf-8")
    paths = pipeline.artifact_paths({"run_dir": str(tmp_path)})
    assert str(tmp_path / "data.report.md") in paths
    assert f"- `{tmp_path / 'data.report.md'}`" in pipeline.summary_markdown({"run_dir": str(tmp_path)})
