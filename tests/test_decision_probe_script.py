"""scripts/decision_probe.py: the probed decisions counted per kind and compared with an evaluation
(the forward pass itself, thinksearch.steer.margins, is tested in test_steer.py)."""

from __future__ import annotations

import json

import pytest

from thinksearch.evaluate.evalset import EvalItem
from thinksearch.format import DECISION_LINES


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("scripts/decision_probe.py")


def _items():
    return [EvalItem("s1", "search", "今天比特币的价格是多少？", category="finance"),
            EvalItem("t1", "thinking", "如果一个正方形的面积是另一个正方形面积的4倍，那么它们的周长比是多少？", category="arithmetic"),
            EvalItem("k1", "thinking", "为什么天空是蓝色的？", category="science")]


def test_summary_counts_search_lines_per_kind_and_agreement_with_the_eval(script, tmp_path):
    items = _items()
    probes = [{"logp": {"thinking": -3.0, "search": -0.1, "knowledge": -4.0}, "margin": 2.9, "top_is_a_line": True},
              {"logp": {"thinking": -0.2, "search": -2.0, "knowledge": -3.0}, "margin": -1.8, "top_is_a_line": True},
              # the knowledge line is a search decision too
              {"logp": {"thinking": -2.0, "search": -3.0, "knowledge": -0.5}, "margin": 1.5, "top_is_a_line": False}]
    outputs = tmp_path / "eval" / "outputs"
    outputs.mkdir(parents=True)
    records = [
        {"id": "s1", "type": "search", "question": "今天比特币的价格是多少？", "output": "<thinking>\n" + DECISION_LINES["search"] + "\n…</thinking>",
         "agent": {"final": "答案", "searches": [{"query": "比特币价格"}], "rounds": []}},
        # opened with the search line but then answered: the line agrees, the action does not
        {"id": "t1", "type": "thinking", "question": "…", "output": "<thinking>\n" + DECISION_LINES["search"] + "\n…</thinking>2:1",
         "agent": {"final": "2:1", "searches": [], "rounds": []}},
        {"id": "k1", "type": "thinking", "question": "为什么天空是蓝色的？", "output": "<thinking>\n" + DECISION_LINES["knowledge"] + "\n…</thinking>",
         "agent": {"final": "…", "searches": [{"query": "天空 蓝色"}], "rounds": []}},
    ]
    (outputs / "tuned.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    summary = script.summarize(items, probes, script.evaluated(tmp_path))
    assert (summary["fresh_data"]["k"], summary["fresh_data"]["n"]) == (1, 1)
    assert (summary["reasoning"]["k"], summary["reasoning"]["n"]) == (0, 1)
    assert (summary["knowledge"]["k"], summary["knowledge"]["n"]) == (1, 1)
    assert summary["off_path"] == 1
    assert summary["median_margin"] == {"fresh_data": 2.9, "reasoning": -1.8, "knowledge": 1.5}
    assert summary["auc_fresh_vs_reasoning"] == 1.0
    assert script.auc([1.0, -1.0], [0.0, 0.0]) == 0.5 and script.auc([], [1.0]) is None
    assert summary["agreement"] == {"n": 3, "line": 2, "searched": 3, "eval_searched_fresh_data": 1,
                                    "eval_searched_reasoning": 0, "eval_searched_knowledge": 1}
    assert "shifted" not in summary


def test_summary_with_the_calibrated_shift_counts_the_evals_decisions(script):
    probes = [{"logp": {"thinking": 0.0, "search": m}, "margin": m, "top_is_a_line": True} for m in (-0.5, -1.8, -0.2)]
    shifted = script.summarize(_items(), probes, None, shift=1.0)["shifted"]
    assert shifted["shift"] == 1.0
    assert [(shifted[k]["k"], shifted[k]["n"]) for k in ("fresh_data", "reasoning", "knowledge")] == [(1, 1), (0, 1), (1, 1)]
