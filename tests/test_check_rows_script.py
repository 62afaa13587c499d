"""scripts/check_rows.py: thinking rows rescored against the pool's gold, from outside the synth."""

from __future__ import annotations

import json


def _row(question, answer, verified=None, kind="thinking", trace="想一想。"):
    meta = {"verified": verified} if verified else {}
    return {"type": kind, "meta": meta, "messages": [
        {"role": "system", "content": "…"}, {"role": "user", "content": question},
        {"role": "assistant", "content": f"<thinking>{trace}</thinking>{answer}"}]}


def test_rows_are_scored_by_the_pool_gold_not_by_their_label(load_script, tmp_path, capsys):
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
            # right answer, but the trace works out 7 and then asserts 12
            _row("3乘以4等于多少？", "等于12。", "hint", trace="3 + 4 = 7，所以答案是12。"),
            _row("3乘以4等于多少？", "12", kind="search")]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out_json = tmp_path / "out.json"
    load_script("scripts/check_rows.py").main([str(data), "--pool", str(pool), "--json", str(out_json)])
    out = json.loads(out_json.read_text(encoding="utf-8"))
    assert out["checkable_rows"]["gold"]["k"] == 1 and out["checkable_rows"]["gold"]["n"] == 2
    assert out["checkable_rows"]["hint"]["k"] == 0 and out["checkable_rows"]["hint"]["n"] == 1
    assert out["by_category"]["arithmetic"]["k"] == 0 and out["rows_without_gold"] == 1
    assert [(m["question"], m["miss"]) for m in out["misses"]] == [("3乘以4等于多少？", "answer"),
                                                                   ("3乘以4等于多少？", "trace")]
    printed = capsys.readouterr().out
    assert "miss (answer) [gold] 3乘以4等于多少？" in printed and "miss (trace) [hint] 3乘以4等于多少？" in printed


def test_search_rows_are_scored_by_the_search_pool_gold(load_script, tmp_path, capsys):
    pool = tmp_path / "search.jsonl"
    pool.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        {"type": "search", "question": "意大利总理是哪位？", "category": "office_holders", "answerable": True,
         "passages": ["c-0001"], "answers": ["梅洛尼"], "match": "any"},
        {"type": "search", "question": "香港特别行政区行政长官是谁？", "category": "office_holders", "answerable": True,
         "passages": ["c-0002"], "answers": ["李家超"], "match": "any"},
        {"type": "search", "question": "一克铂金能卖多少钱？", "category": "prices", "answerable": False},
    ]), encoding="utf-8")
    rows = [_row("意大利总理是哪位？", "意大利总理是梅洛尼。", kind="search"),
            _row("香港特别行政区行政长官是谁？", "香港特别行政区行政长官是岑浩辉。", kind="search"),  # misattributed
            _row("一克铂金能卖多少钱？", "搜索结果里没有铂金的价格。", kind="search"),
            _row("一克铂金能卖多少钱？", "一克铂金约230元。", kind="search")]  # invented
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out_json = tmp_path / "out.json"
    load_script("scripts/check_rows.py").main([str(data), "--search-pool", str(pool), "--json", str(out_json)])
    out = json.loads(out_json.read_text(encoding="utf-8"))["search"]
    assert out["counts"] == {"answerable: key fact": 1, "answerable: miss": 1, "unanswerable: abstains": 1,
                             "unanswerable: miss": 1}
    assert [m["question"] for m in out["misses"]] == ["香港特别行政区行政长官是谁？", "一克铂金能卖多少钱？"]
    assert "miss [search] 香港特别行政区行政长官是谁？ gold=李家超" in capsys.readouterr().out
