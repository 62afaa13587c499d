"""`thinksearch eval` on the real offline 0.5B model: two questions, short outputs, three reports."""

from __future__ import annotations

import json

import pytest

from thinksearch import evaluate as ev
from thinksearch import models
from thinksearch.config import EvalConfig

pytestmark = pytest.mark.slow


def test_eval_with_the_offline_model(tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_text(
        json.dumps({"type": "thinking", "question": "如果一个正方形的面积是另一个正方形面积的4倍，那么它们的周长比是多少？"}, ensure_ascii=False)
        + "\n" + json.dumps({"type": "search", "question": "今天比特币的价格是多少？"}, ensure_ascii=False) + "\n",
        encoding="utf-8")
    cfg = EvalConfig(data=str(data), models=[f"base={models.DEFAULT_ALIAS}"], output_dir=str(tmp_path / "out"),
                     max_new_tokens=24)
    report = ev.evaluate(cfg, progress=False)
    (m,) = report["models"]
    assert [r["type"] for r in m["records"]] == ["thinking", "search"]
    assert all(r["output"].strip() and r["completion_tokens"] <= 24 for r in m["records"])
    assert m["settings"]["base_fingerprint"]  # the prepared directory is fingerprinted
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"report.json", "report.md", "report.png", "outputs"}
