"""scripts/decision_probe.py: the decision lines' first own tokens, scored in one padded forward pass."""

from __future__ import annotations

import json

import pytest

from thinksearch import format as fmt
from thinksearch.agent import build_messages
from thinksearch.evaluate.evalset import EvalItem
from thinksearch.synth.rows import DECISION_LINES


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("scripts/decision_probe.py")


def _items():
    return [EvalItem("s1", "search", "今天比特币的价格是多少？", category="finance"),
            EvalItem("t1", "thinking", "如果一个正方形的面积是另一个正方形面积的4倍，那么它们的周长比是多少？", category="arithmetic"),
            EvalItem("k1", "thinking", "为什么天空是蓝色的？", category="science")]


def test_the_shared_tokens_end_where_the_lines_part(script, tiny_tokenizer):
    prompt = fmt.render(tiny_tokenizer, build_messages("北京明天天气怎么样？"), add_generation_prompt=True)
    shared, heads = script.line_tokens(tiny_tokenizer, prompt)
    assert set(heads) == set(DECISION_LINES) and len(set(heads.values())) == len(heads)
    for kind, line in DECISION_LINES.items():
        own = tiny_tokenizer(prompt + "<thinking>\n" + line, add_special_tokens=False)["input_ids"]
        assert own[:len(shared) + 1] == shared + [heads[kind]]


def test_padded_batch_scores_each_question_as_it_would_score_alone(script, tiny):
    import torch

    model, tok = tiny
    items = _items()
    batched = script.probe(model, tok, items, batch_size=3)  # prompts of three lengths, left-padded
    for it, got in zip(items, batched):
        prompt = fmt.render(tok, build_messages(it.question), add_generation_prompt=True)
        shared, heads = script.line_tokens(tok, prompt)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([shared])).logits[0, -1].float(), dim=-1)
        for kind, t in heads.items():
            assert got["logp"][kind] == pytest.approx(float(logp[t]), abs=2e-3)
        assert got["margin"] == pytest.approx(max(got["logp"]["search"], got["logp"]["knowledge"]) - got["logp"]["thinking"], abs=1e-3)


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
