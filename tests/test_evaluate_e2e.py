"""`thinksearch eval` end to end with the tiny model: base and base+LoRA, three reports, resume."""

from __future__ import annotations

import json
import re

import pytest

from test_evaluate import check_markdown_against_records
from thinksearch import evaluate as ev
from thinksearch import models
from thinksearch.cli import main
from thinksearch.config import EvalConfig
from thinksearch.errors import ThinksearchError

QUESTIONS = [
    ("thinking", "如果一个正方形的面积是另一个正方形面积的4倍，那么它们的周长比是多少？"),
    ("thinking", "为什么天空是蓝色的？"),
    ("thinking", "一个数加上它的一半等于36，这个数是多少？"),
    ("search", "今天比特币的价格是多少？"),
    ("search", "北京明天天气怎么样？"),
    ("search", "最新的手机型号是什么？"),
]


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A random (non-zero) LoRA adapter on the tiny model, saved as `thinksearch train` saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out)
    (out / models.ADAPTER_META).write_text(json.dumps({
        "base_model": str(tiny_model_dir), "base_signature": models.base_signature(base.config)}), encoding="utf-8")
    return out


@pytest.fixture()
def eval_file(tmp_path):
    p = tmp_path / "test.jsonl"
    p.write_text("".join(json.dumps({"type": t, "question": q, "category": "x"}, ensure_ascii=False) + "\n"
                         for t, q in QUESTIONS), encoding="utf-8")
    return p


def cli_args(eval_file, out, tiny_model_dir, adapter_dir, *extra):
    return ["eval", "--data", str(eval_file), "--output-dir", str(out), "--model", f"base={tiny_model_dir}",
            "--model", f"tuned={tiny_model_dir}+{adapter_dir}", "--max-new-tokens", "6", "--batch-size", "4",
            "--dtype", "float32", "--device", "cpu", "--no-progress", *extra]


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_eval_two_models_reports_and_resume(eval_file, tmp_path, tiny_model_dir, adapter_dir, capsys):
    out = tmp_path / "out"
    assert main(cli_args(eval_file, out, tiny_model_dir, adapter_dir)) == 0
    printed = capsys.readouterr().out
    assert "base: thinking " in printed and "tuned: thinking " in printed and "report.md" in printed
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [m["name"] for m in report["models"]] == ["base", "tuned"]
    base, tuned = report["models"]
    assert len(base["records"]) == len(tuned["records"]) == 6
    # The adapter changes the weights, so the two models generate differently (random LoRA B).
    assert [r["output"] for r in base["records"]] != [r["output"] for r in tuned["records"]]
    assert base["settings"]["adapter_fingerprint"] is None and tuned["settings"]["adapter_fingerprint"]
    for r in base["records"]:
        assert {"question", "type", "output", "parsed", "flags", "completion_tokens", "latency_s"} <= set(r)
        assert 0 < r["completion_tokens"] <= 6 and r["prompt_tokens"] > 0
    assert (out / "report.md").read_text(encoding="utf-8") == ev.render_markdown(report)
    assert (out / "report.png").stat().st_size > 1000
    check_markdown_against_records(report)

    # Same prompts for both: the questions and their order are the same.
    assert [r["id"] for r in base["records"]] == [r["id"] for r in tuned["records"]]

    # Resume: a crash left tuned's file with two outputs lost and a partial line.
    saved = out / "outputs" / "tuned.jsonl"
    kept = saved.read_text(encoding="utf-8").splitlines()[:4]
    saved.write_text("\n".join(kept) + '\n{"id": "t-trunc', encoding="utf-8")
    base_before = (out / "outputs" / "base.jsonl").read_bytes()
    assert main(cli_args(eval_file, out, tiny_model_dir, adapter_dir)) == 0
    err = capsys.readouterr().err
    assert "tuned: resuming, 4 of 6 outputs already saved" in err and "base: resuming" not in err
    assert (out / "outputs" / "base.jsonl").read_bytes() == base_before  # nothing regenerated for base
    again = lines(saved)
    assert len(again) == 6 and [json.dumps(r) for r in again[:4]] == [json.dumps(json.loads(x)) for x in kept]
    report2 = json.loads((out / "report.json").read_text(encoding="utf-8"))
    # Greedy and batch-invariant here (fp32): the regenerated outputs are the ones lost.
    assert sorted(r["output"] for r in report2["models"][1]["records"]) == sorted(r["output"] for r in tuned["records"])

    # Other settings with the same output directory: refused, clearly; --restart starts fresh.
    assert main(cli_args(eval_file, out, tiny_model_dir, adapter_dir, "--max-new-tokens", "5")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "holds outputs of model 'base' made with other settings (max_new_tokens: 6 → 5)" in err
    assert err.endswith("rerun with --restart to discard them, or choose another --output-dir") and "\n" not in err
    assert main(cli_args(eval_file, out, tiny_model_dir, adapter_dir, "--max-new-tokens", "5", "--restart",
                         "--limit-per-type", "2")) == 0
    report3 = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report3["eval_file"]["evaluated"] == {"thinking": 2, "search": 2}
    assert all(r["completion_tokens"] <= 5 for m in report3["models"] for r in m["records"])
    assert len(lines(out / "outputs" / "base.jsonl")) == 4


def test_sampling_is_seeded(eval_file, tmp_path, tiny_model_dir):
    def run(out, seed):
        cfg = EvalConfig(data=str(eval_file), models=[f"m={tiny_model_dir}"], output_dir=str(out), max_new_tokens=5,
                         temperature=1.0, seed=seed, dtype="float32", device="cpu")
        return [r["output"] for r in ev.evaluate(cfg, progress=False)["models"][0]["records"]]

    assert run(tmp_path / "a", 3) == run(tmp_path / "b", 3)


def test_a_model_that_does_not_load_is_named(eval_file, tmp_path, tiny_model_dir, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    for ref, why in [(str(tmp_path / "missing"), "model path '.*missing' does not exist"),
                     (f"{tiny_model_dir}+{tmp_path}", "is not a LoRA adapter directory"),
                     (str(broken), "")]:
        args = ["eval", "--data", str(eval_file), "--output-dir", str(tmp_path / "o"), "--model", f"base={tiny_model_dir}",
                "--model", f"tuned={ref}", "--max-new-tokens", "2", "--no-progress", "--restart"]
        assert main(args) == 2
        (err,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
        assert err.startswith(f"error: model 'tuned' ({ref}) does not load: ")
        assert re.search(why, err)


def test_cli_bad_eval_file_and_empty_file(tmp_path, tiny_model_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "thinking", "question": "q"}\n{"type": "news", "question": "q"}\n', encoding="utf-8")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    for path, message in [(bad, f"error: {bad}:2: unknown type 'news' (allowed: thinking, search)"),
                          (empty, f"error: {empty}: no eval rows (expected JSONL rows like")]:
        assert main(["eval", "--data", str(path), "--model", f"m={tiny_model_dir}", "--output-dir", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and "\n" not in err
    assert not (tmp_path / "o").exists()  # nothing written before the input is known to be good


@pytest.mark.parametrize("continuous, emitted", [(True, [1] * 6), (False, [4, 2])])
def test_batched_generation_matches_one_at_a_time(tiny, continuous, emitted):
    model, tok = tiny
    items = [ev.EvalItem(f"q{i}", t, q) for i, (t, q) in enumerate(QUESTIONS)]
    s = ev.sampling_for(EvalConfig(max_new_tokens=8))
    assert ev.can_batch_continuously(tok, s)  # </tool_call> is one token, as in Qwen2.5
    seen: list[int] = []
    batched = ev.generate_records(model, tok, items, s, batch_size=4, on_batch=lambda b: seen.append(len(b)),
                                  continuous=continuous)
    single = ev.generate_records(model, tok, items, s, batch_size=1)
    assert seen == emitted and [r["id"] for r in batched] == [it.id for it in items]
    assert [r["output"] for r in batched] == [r["output"] for r in single]
    assert [r["completion_tokens"] for r in batched] == [r["completion_tokens"] for r in single]
    assert len({r["batch_id"] for r in batched}) == (1 if continuous else 2)
    assert all(0 < r["latency_s"] <= r["elapsed_s"] + 1e-6 for r in batched)


def test_continuous_batching_stops_at_the_tool_call_like_fixed_batches(tiny):
    """Make `</tool_call>` the likeliest token: both paths stop right after it, with the same count."""
    model, tok = tiny
    close = tok.convert_tokens_to_ids("</tool_call>")
    items = [ev.EvalItem(f"q{i}", t, q) for i, (t, q) in enumerate(QUESTIONS)]
    s = ev.sampling_for(EvalConfig(max_new_tokens=10))

    def favour_close(mod, inp, out):
        out = out.clone()
        out[..., close] += 1e3
        return out

    hook = model.lm_head.register_forward_hook(favour_close)
    try:
        cont = ev.generate_records(model, tok, items, s, batch_size=4, continuous=True)
        static = ev.generate_records(model, tok, items, s, batch_size=4, continuous=False)
    finally:
        hook.remove()
    for r in (*cont, *static):
        assert (r["output"], r["finish_reason"], r["completion_tokens"]) == ("</tool_call>", "stop", 1)


def test_unknown_model_alias_is_refused_before_generating(eval_file, tmp_path, tiny_model_dir):
    cfg = EvalConfig(data=str(eval_file), models=[f"base={tiny_model_dir}", "tuned=no-such-alias"], output_dir=str(tmp_path / "o"))
    with pytest.raises(ThinksearchError, match=r"^model 'tuned' \(no-such-alias\) does not load: unknown model alias"):
        ev.evaluate(cfg, progress=False)
    assert not (tmp_path / "o").exists()
