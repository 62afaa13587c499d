"""`thinksearch view`: the static page of a run, checked in a real headless Chromium where one is
installed (Debian's `chromium`; the browser tests skip, saying so, where it is not).

The run directory is written here with the files a `thinksearch run` leaves (data.jsonl,
adapter/metrics.json, eval/report.json, eval/report.png); one row and one eval output carry
markup and script that must be shown as text and never run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from thinksearch import format as fmt
from thinksearch.cli import main
from thinksearch.view import build_view, eval_records

EVIL = '<script>document.title="pwned"</script><img src=x onerror="document.body.dataset.pwned=1">'


def _search_row(i: int, answer: str = "根据搜索结果，约为10万美元[1]") -> dict:
    msgs = fmt.search_messages(f"问题{i}：今天比特币的价格是多少？", "需要实时数据。", "比特币价格 今日", "[1] 行情 — 10万美元 (示例, 2025-01-01)", answer)
    return {"id": f"s-{i}", "type": "search", "messages": msgs,
            "meta": {"gates": {"passed": ["query", "search", "grounded"], "repairs": []},
                     "verification": {"status": "verified", "gold": "10万"},
                     "results": [{"title": "行情", "snippet": "10万美元", "url": "", "date": "2025-01-01", "source": "示例"}]}}


def _record(qid: str, kind: str, output: str, *, did: bool, finish: str = "stop", correct=None) -> dict:
    rec = {"id": qid, "type": kind, "question": f"{qid} 的问题", "output": output, "finish_reason": finish,
           "completion_tokens": 10, "flags": {"should_search": kind == "search", "did_search": did}}
    if correct is not None:  # where report.json keeps it (evaluate.answers.answer_flags)
        rec["answer"] = {"correct": correct, "final_answer": output}
    return rec


def make_run(root: Path, n_rows: int = 3) -> Path:
    """A run directory like `thinksearch run` leaves, with planted markup in one row and one output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"id": "t-0", "type": "thinking", "messages": fmt.thinking_messages("1+1等于几？", "1+1=2", "等于2。"),
             "meta": {"gates": {"passed": ["analysis", "answer"]}}},
            _search_row(1, answer=EVIL)] + [_search_row(i) for i in range(2, n_rows)]
    root.mkdir(parents=True)
    (root / "data.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (root / "adapter").mkdir()
    (root / "adapter" / "metrics.json").write_text(json.dumps(
        {"global_step": 3, "history": [{"step": s, "loss": 2.0 / s} for s in (1, 2, 3)]}))
    (root / "eval").mkdir()
    base = [_record("t-a", "thinking", "<thinking>\n想\n</thinking>\n\n2", did=False, correct=True),
            _record("t-b", "thinking", '<tool_call>\n{"name": "search"}', did=True, finish="length"),
            _record("s-a", "search", "不知道", did=False, correct=False),
            _record("s-b", "search", EVIL, did=False)]
    tuned = [_record("t-a", "thinking", "<thinking>\n想\n</thinking>\n\n2", did=False, correct=True),
             _record("t-b", "thinking", "<thinking>\n想\n</thinking>\n\n3", did=False, correct=False),
             _record("s-a", "search", '<tool_call>\n{"name": "search", "arguments": {"query": "x"}}\n</tool_call>', did=True),
             _record("s-b", "search", '<tool_call>\n{"name": "search", "arguments": {"query": "y"}}\n</tool_call>', did=True)]
    (root / "eval" / "report.json").write_text(json.dumps(
        {"models": [{"name": "base", "records": base}, {"name": "tuned", "records": tuned}]}, ensure_ascii=False))
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.bar([0, 1], [1, 2])
    fig.savefig(root / "eval" / "report.png")
    plt.close(fig)
    return root


def test_page_holds_model_text_only_as_escaped_data(tmp_path):
    page = build_view(make_run(tmp_path / "run")).read_text(encoding="utf-8")
    assert "<script>document.title" not in page and "<img src=x" not in page
    assert page.count("<script") == 2  # the data block and the page's own script, nothing else
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1))
    assert data["rows"][1]["turns"][-1]["text"] == EVIL  # the text itself is intact, only encoded
    assert "innerHTML" not in page  # all data reaches the DOM through textContent
    assert "<polyline" in page and "data:image/png;base64," in page  # the loss curve and the report chart


def test_eval_problems_per_model(tmp_path):
    models, evals = eval_records(make_run(tmp_path / "run") / "eval")
    assert models == ["base", "tuned"]
    got = {q["id"]: {m: q["by"][m]["problems"] for m in models} for q in evals}
    assert got == {"t-a": {"base": [], "tuned": []},
                   "t-b": {"base": ["false_search", "truncated"], "tuned": ["wrong"]},
                   "s-a": {"base": ["missed_search", "wrong"], "tuned": []},
                   "s-b": {"base": ["missed_search"], "tuned": []}}


def test_view_command(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert main(["view", str(run), "--out", str(tmp_path / "v.html")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "v.html")
    assert main(["view", str(tmp_path / "nowhere")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "data.jsonl").write_text('{"id": 1}\nnot json\n')
    assert main(["view", str(bad)]) == 2
    assert f"{bad / 'data.jsonl'}:2: invalid JSON" in capsys.readouterr().err


# ----------------------------------------------------------------------------- in Chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium: apt-get install chromium")


def chromium(*args: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def dom(page: Path, fragment: str = "") -> str:
    return chromium("--dump-dom", page.as_uri() + (f"#{fragment}" if fragment else ""))


def cards(html: str, kind: str) -> list[str]:
    return re.findall(rf'<div class="card {kind}" data-id="([^"]+)"', html)


@needs_chromium
def test_filters_change_what_chromium_shows_and_markup_stays_text(tmp_path):
    page = build_view(make_run(tmp_path / "run"))
    rows = dom(page)
    assert cards(rows, "row") == ["t-0", "s-1", "s-2"]
    assert "&lt;script&gt;document.title" in rows and "<title>thinksearch run: run</title>" in rows
    assert "data-pwned" not in rows and '<img src="x"' not in rows
    assert cards(dom(page, "type=search"), "row") == ["s-1", "s-2"]
    assert cards(dom(page, "tab=eval"), "evalq") == ["t-a", "t-b", "s-a", "s-b"]
    assert cards(dom(page, "tab=eval&problem=false_search"), "evalq") == ["t-b"]
    assert cards(dom(page, "tab=eval&problem=missed_search"), "evalq") == ["s-a", "s-b"]
    assert cards(dom(page, "tab=eval&problem=missed_search&model=tuned"), "evalq") == []
    assert cards(dom(page, "tab=eval&problem=wrong"), "evalq") == ["t-b", "s-a"]
    assert cards(dom(page, "tab=eval&problem=wrong&model=tuned"), "evalq") == ["t-b"]
    assert cards(dom(page, "tab=eval&problem=truncated"), "evalq") == ["t-b"]
    ev = dom(page, "tab=eval&problem=missed_search&model=base")
    assert "&lt;img src=x onerror=" in ev and "data-pwned" not in ev and "pwned</title>" not in ev


@needs_chromium
def test_five_thousand_rows_render_lazily(tmp_path):
    page = build_view(make_run(tmp_path / "run", n_rows=5000))
    html = dom(page)
    assert len(cards(html, "row")) == 100
    assert "showing 100 of 5000 (scroll for more)" in html and "5000 of 5000 rows" in html
    assert cards(dom(page, "q=问题4999"), "row") == ["s-4999"]


@needs_chromium
def test_screenshot(tmp_path):
    page = build_view(make_run(tmp_path / "run"))
    shot = tmp_path / "view.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,900", page.as_uri() + "#tab=eval")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
