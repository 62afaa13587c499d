"""Training the real offline 0.5B model for a few steps: the loss falls, the adapter changes the model."""

from __future__ import annotations

import json

import pytest

from thinksearch import format as fmt
from thinksearch import models
from thinksearch import train as tr
from thinksearch.config import TrainConfig

pytestmark = pytest.mark.slow
ALIAS = models.DEFAULT_ALIAS


def rows() -> list[dict]:
    out = []
    for i, (q, trace, answer) in enumerate([
        ("如果一个正方形的面积是另一个正方形面积的4倍，那么它们的周长比是多少？",
         "设小正方形边长为a，大正方形边长为b。b²=4a²，所以b=2a。周长比=4b:4a=2:1。", "周长比是2:1。"),
        ("解方程2x+3=11。", "移项得2x=8，两边除以2得x=4。代回验证：2×4+3=11。", "x=4。"),
    ]):
        out.append({"id": f"t-{i}", "type": "thinking", "messages": fmt.thinking_messages(q, trace, answer), "meta": {}})
    for i, (q, query, result, answer) in enumerate([
        ("今天比特币的价格是多少？", "比特币价格 今日", "[1] 比特币行情 — 今日报价约6.5万美元 (新闻, 2025-06-01)",
         "根据搜索结果，比特币今日价格约为6.5万美元[1]。"),
        ("北京明天天气怎么样？", "北京 明天 天气", "[1] 北京天气预报 — 明天多云，最高18度 (气象台, 2025-06-01)",
         "根据搜索结果，北京明天多云，最高气温18度[1]。"),
    ]):
        msgs = fmt.search_messages(q, "这个问题需要最新的实时数据，我需要搜索。", query, result, answer)
        out.append({"id": f"s-{i}", "type": "search", "messages": msgs, "meta": {}})
    return out


def test_mask_with_the_real_qwen_tokenizer():
    tok = models.load_tokenizer(models.resolve(ALIAS))
    row = rows()[2]
    enc = tr.encode(tok, row["messages"])
    runs, cur = [], None
    for t, m in zip(enc.input_ids, enc.assistant_masks):
        if m != cur:
            runs.append((m, []))
            cur = m
        runs[-1][1].append(t)
    trained = [tok.decode(ids, skip_special_tokens=False) for m, ids in runs if m]
    assert trained == [
        '<thinking>\n这个问题需要最新的实时数据，我需要搜索。\n</thinking>\n<tool_call>\n'
        '{"name": "search", "arguments": {"query": "比特币价格 今日"}}\n</tool_call><|im_end|>',
        "根据搜索结果，比特币今日价格约为6.5万美元[1]。<|im_end|>",
    ]
    assert tok.convert_tokens_to_ids("<tool_call>") in enc.input_ids


def test_short_training_lowers_the_loss_and_the_adapter_changes_the_output(tmp_path):
    import torch

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows()), encoding="utf-8")
    cfg = TrainConfig(model=ALIAS, data=[str(data)], output_dir=str(tmp_path / "run"), batch_size=2, grad_accum=1,
                      epochs=3, learning_rate=1e-3, eval_fraction=0.0, lr_scheduler="constant", warmup_ratio=0.0,
                      save_steps=1000)
    m = tr.train(cfg).metrics
    losses = [h["loss"] for h in m["history"] if "loss" in h]
    print("losses per step:", [round(x, 3) for x in losses])
    assert len(losses) == 6  # 4 rows / batch 2 x 3 epochs
    assert sum(losses[-2:]) < 0.8 * sum(losses[:2]), losses  # same rows, last epoch vs first

    base, tok = models.load(ALIAS, dtype="float32", device="cpu")
    prompt = fmt.render(tok, fmt.prompt_messages("今天比特币的价格是多少？"), add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        before = base(**ids).logits[0, -1]
    tuned = models.apply_adapter(base, str(tmp_path / "run"))
    with torch.no_grad():
        after = tuned(**ids).logits[0, -1]
    assert (after - before).abs().max() > 0.1
    first = tok(fmt.THINK_OPEN, add_special_tokens=False)["input_ids"][0]
    assert int(after.argmax()) == first != int(before.argmax())  # it now opens with <thinking>; it did not before
