"""scripts/check_rows.py: thinking rows rescored against the pool's gold, from outside the synth."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("check_rows_script", ROOT / "scripts" / "check_rows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(question, answer, verified=None, kind="thinking"):
    meta = {"verified": verified} if verified else {}
    return {"type": kind, "meta": meta, "messages": [
        {"role": "system", "content": "…"}, {"role": "user", "content": question},
        {"role": "assistant", "content": f"<thinking>想一想。</thinking>{answer}"}]}


def test_rows_are_scored_by_the_pool_gold_not_by_their_label(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        {"question": "成年人全身一共有多少块骨头？", "category": "knowledge", "answers": ["206"], "match": "any"},
        {"question": "3乘以4等于多少？", "category": "arithmetic", "answers": ["12"], "match": "any"},
        {"question": "怎样才能睡得更好？", "category": "everyday"},
    ]), encoding="utf-8")
    data = tmp_path / "data.jsonl"
    rows = [_row("成年人全身一共有多少块骨头？", "共有206块。", "gold"),
            # labelled gold, but its answer misses: the script trusts the scorer, not the label
            _row("3乘以4等于多少？", "等于7。", "gold"),
            _row("怎样才能睡得更好？", "早点睡。", "none"),
            _row("3乘以4等于多少？", "12", kind="search")]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out_json = tmp_path / "out.json"
    _script().main([str(data), "--pool", str(pool), "--json", str(out_json)])
    out = json.loads(out_json.read_text(encoding="utf-8"))
    assert out["checkable_rows"]["gold"]["k"] == 1 and out["checkable_rows"]["gold"]["n"] == 2
    assert out["by_category"]["arithmetic"]["k"] == 0 and out["rows_without_gold"] == 1
    assert [m["question"] for m in out["misses"]] == ["3乘以4等于多少？"]
    assert "miss [gold] 3乘以4等于多少？" in capsys.readouterr().out
