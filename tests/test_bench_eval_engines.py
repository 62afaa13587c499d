"""bench/bench_eval_engines.py: its --quick path runs both engines and writes the JSON the README
table is made from; the agreement counts decisions, not identical text."""

from __future__ import annotations

import json

import pytest

@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("bench/bench_eval_engines.py")


def test_quick_run_writes_both_engines_the_ratio_and_the_agreement(bench, tmp_path):
    pytest.importorskip("xllamacpp")
    out = tmp_path / "r" / "eng.json"
    assert bench.main(["--quick", "--questions", "4", "--max-new-tokens", "4", "--qtype", "q8_0", "f16", "--out", str(out)]) == out
    r = json.loads(out.read_text(encoding="utf-8"))
    assert r["name"] == "eng" and r["target"] == 3.0 and r["questions"] == 4
    assert r["ours"]["engine"].startswith("llamacpp") and r["ours"]["qtype"] == "q8_0"
    assert r["baseline"]["engine"] == "transformers" and r["baseline"]["dtype"] == "float32"
    for side in (r["ours"], r["baseline"]):
        assert side["questions"] == 4 and side["seconds"] > 0 and side["cpu_seconds"] > 0 and side["completion_tokens"] > 0
    assert r["ratio"] == pytest.approx(r["ours"]["questions_per_min"] / r["baseline"]["questions_per_min"], abs=1e-3)
    both = r["agreement"]["both"]
    assert both["n"] == 4 and 0 <= both["k"] <= 4 and both["ci95"][0] <= both["rate"] <= both["ci95"][1] + 1e-9  # Wilson at k = n: 1 - 1e-16
    assert {"search", "thinking", "identical_first_turn"} <= set(r["agreement"])
    assert r["agreement_meets_target"] == (both["rate"] >= 0.95)
    # Each qtype against the one transformers run; the headline is the first.
    assert list(r["by_qtype"]) == ["q8_0", "f16"] and r["by_qtype"]["q8_0"]["agreement"] == r["agreement"]
    f16 = r["by_qtype"]["f16"]
    assert f16["ours"]["qtype"] == "f16" and f16["agreement"]["both"]["n"] == 4
    assert f16["ours"]["ratio"] == pytest.approx(f16["ours"]["questions_per_min"] / r["baseline"]["questions_per_min"], abs=1e-3)


def test_agreement_compares_decisions_and_shows_at_most_five(bench):
    from thinksearch.evaluate.evalset import EvalItem

    call = '<tool_call>\n{"name": "search", "arguments": {"query": "金价 今日"}}\n</tool_call>'
    items = [EvalItem(f"q{i}", "search", f"问题{i}") for i in range(8)]
    ours = {it.id: {"type": "search", "output": call} for it in items}
    # Two answers differ only in wording (same decisions); six do not search at all.
    base = {it.id: {"type": "search", "output": call if i < 2 else "<thinking>\n想一想\n</thinking>\n答案"}
            for i, it in enumerate(items)}
    base["q1"]["output"] = call.replace("今日", "现在")
    a = bench.agreement(items, ours, base)
    assert (a["search"]["k"], a["thinking"]["k"], a["both"]["k"], a["identical_first_turn"]["k"]) == (2, 2, 2, 1)
    assert a["both"]["n"] == 8 and a["both"]["ci95"][0] < 0.25 < a["both"]["ci95"][1]
    shown = a["disagreements_shown"]
    assert len(shown) == 5 and shown[0]["id"] == "q2"
    assert shown[0]["llamacpp"]["search"] and not shown[0]["transformers"]["search"] and shown[0]["transformers"]["thinking"]
    assert a["decision_rates"]["transformers"]["thinking"]["k"] == 6


def test_without_an_adapter_the_base_is_exported_at_the_qtype(bench, tiny, tiny_model_dir, tmp_path):
    """Not the base's own GGUF: the offline alias's is Q4_K_M, and the figure is about q8_0/f16."""
    import gguf
    from test_gguf_export import reference_gguf

    model, tok = tiny
    like = reference_gguf(model, tok, tmp_path / "base.gguf")
    path, made = bench.gguf_for(str(tiny_model_dir), None, like, "f16", tmp_path)
    assert path != like and made.startswith("f16 export of the base")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert types["blk.0.attn_q.weight"] == "F16"
