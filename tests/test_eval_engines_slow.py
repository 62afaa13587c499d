"""`thinksearch eval --agent --engine llamacpp` on the real offline 0.5B model: the base on its own
GGUF, a tuned model (base + LoRA adapter) exported once through the cache, three questions."""

from __future__ import annotations

import json

import pytest

from thinksearch import models
from thinksearch.cli import main

pytestmark = pytest.mark.slow


def test_eval_through_llamacpp_with_the_offline_model(tmp_path):
    pytest.importorskip("xllamacpp")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    alias = models.DEFAULT_ALIAS
    base = AutoModelForCausalLM.from_pretrained(models.resolve(alias).path)
    # LoRA's default init (B = 0) leaves the model as it was: this tests the export path, not training.
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    del base
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "c-1", "title": "比特币价格", "text": "2025年4月23日比特币价格约为93000美元。",
                                  "date": "2025-04-23"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert main(["index", "build", str(corpus), "--out", str(tmp_path / "index.sqlite")]) == 0
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        {"type": "thinking", "question": "如果一个正方形的面积是另一个正方形面积的4倍，那么它们的周长比是多少？"},
        {"type": "search", "question": "今天比特币的价格是多少？"},
        {"type": "thinking", "question": "为什么冬天呼气会看到白雾？"}]), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["eval", "--agent", "--engine", "llamacpp", "--data", str(data), "--corpus", str(corpus),
                 "--search-index", str(tmp_path / "index.sqlite"), "--output-dir", str(out),
                 "--gguf-cache", str(tmp_path / "cache"), "--model", f"base={alias}",
                 "--model", f"tuned={alias}+{tmp_path / 'adapter'}", "--max-new-tokens", "48", "--max-rounds", "2",
                 "--batch-size", "3", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [m["engine"] for m in report["models"]] == ["llamacpp", "llamacpp"]
    for m in report["models"]:
        assert len(m["records"]) == 3
        assert all(r["output"].strip() and 0 < r["completion_tokens"] for r in m["records"])
    assert len(list((tmp_path / "cache").glob("*.gguf"))) == 1  # the tuned model's export
