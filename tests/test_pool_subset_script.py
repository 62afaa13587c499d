"""scripts/pool_subset.py: a pool's questions of some categories that earlier rows do not hold."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("scripts/pool_subset.py")


def _pool(tmp_path):
    rows = [{"id": "k1", "type": "thinking", "question": "水的化学式是什么？", "category": "knowledge", "answers": ["H2O"], "match": "any"},
            {"id": "k2", "type": "thinking", "question": "《红楼梦》的作者是谁？", "category": "knowledge", "answers": ["曹雪芹"], "match": "any"},
            {"id": "s1", "type": "thinking", "question": "天空为什么是蓝色的？", "category": "science"},
            {"id": "a1", "type": "thinking", "question": "3+4等于几？", "category": "arithmetic", "answers": ["7"], "match": "any"}]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    data = tmp_path / "data.jsonl"
    # the same question as k2 but for its punctuation
    data.write_text(json.dumps({"type": "thinking", "messages": [{"role": "system", "content": "s"},
                                {"role": "user", "content": "《红楼梦》的作者是谁?"}, {"role": "assistant", "content": "…"}]},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    return pool, data


def test_keeps_the_categories_leaves_out_held_and_ungolded_questions(script, tmp_path):
    pool, data = _pool(tmp_path)
    out = tmp_path / "sub.jsonl"
    assert script.main([str(pool), "--categories", "knowledge", "science", "--exclude", str(data), "--out", str(out)]) == 0
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == ["k1"]
    assert script.main([str(pool), "--categories", "knowledge", "science", "--with-ungolded", "--out", str(out)]) == 0
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == ["k1", "k2", "s1"]


def test_an_unknown_category_is_named(script, tmp_path, capsys):
    pool, _ = _pool(tmp_path)
    assert script.main([str(pool), "--categories", "sciense", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "--categories: sciense not in" in capsys.readouterr().err
