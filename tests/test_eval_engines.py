"""`thinksearch eval --agent --engine`: llama.cpp on a GGUF (a tuned model exported once through the
cache), transformers as the fallback, and outputs of one engine never resumed under another."""

from __future__ import annotations

import importlib.util
import json

import pytest
from test_gguf_cache import make_adapter
from test_gguf_export import reference_gguf

from thinksearch.cli import main
from thinksearch.config import EvalConfig, from_dict
from thinksearch.errors import ConfigError
from thinksearch.evaluate.decision import opening_line


@pytest.fixture()
def setup(tmp_path, tiny, tiny_model_dir):
    """An index, three questions, the tiny model as a GGUF and an adapter on it."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "c-1", "title": "金价", "text": "金价接近每盎司3500美元。", "date": "2025-04-23"},
                                 ensure_ascii=False) + "\n", encoding="utf-8")
    index = tmp_path / "index.sqlite"
    assert main(["index", "build", str(corpus), "--out", str(index)]) == 0
    data = tmp_path / "e.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"id": "s1", "type": "search", "question": "金价多少？"}, {"id": "t1", "type": "thinking", "question": "1+1?"},
        {"id": "t2", "type": "thinking", "question": "2+2?"}]) + "\n", encoding="utf-8")
    model, tok = tiny
    gguf = reference_gguf(model, tok, tmp_path / "tiny.gguf")
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=5)
    args = ["eval", "--agent", "--data", str(data), "--corpus", str(corpus), "--search-index", str(index),
            "--max-new-tokens", "6", "--max-rounds", "2", "--batch-size", "2", "--device", "cpu", "--no-progress",
            "--gguf-cache", str(tmp_path / "cache")]
    return {"args": args, "gguf": gguf, "adapter": adapter, "out": tmp_path / "out", "tmp": tmp_path}


def _report(out):
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_llamacpp_evaluates_base_and_tuned_and_never_mixes_engines(setup, capsys):
    pytest.importorskip("xllamacpp")
    s = setup
    args = s["args"] + ["--output-dir", str(s["out"]), "--model", f"base={s['gguf']}",
                        "--model", f"tuned={s['gguf']}+{s['adapter']}", "--engine", "llamacpp"]
    assert main(args) == 0
    report = _report(s["out"])
    assert [m["engine"] for m in report["models"]] == ["llamacpp", "llamacpp"]
    base, tuned = (m["settings"] for m in report["models"])
    assert base["gguf"] and tuned["gguf"] and base["gguf"] != tuned["gguf"]
    assert all(r["agent"]["rounds"] for m in report["models"] for r in m["records"])
    exports = sorted(p.name for p in (s["tmp"] / "cache").iterdir())
    assert exports == [f"{tuned['gguf']}.gguf", f"{tuned['gguf']}.json"]  # the tuned model, exported once
    before = (s["out"] / "outputs" / "tuned.jsonl").read_text(encoding="utf-8")
    assert main(args) == 0  # resumes: nothing generated or exported again
    assert (s["out"] / "outputs" / "tuned.jsonl").read_text(encoding="utf-8") == before
    capsys.readouterr()
    # The same model through transformers is another run: its outputs are not resumed from llama.cpp's.
    assert main([*args[:-1], "transformers"]) != 0
    assert "engine: 'llamacpp' → 'transformers'" in capsys.readouterr().err


def test_without_xllamacpp_auto_falls_back_to_transformers(setup, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real(name, *a))
    s = setup
    args = s["args"] + ["--output-dir", str(s["out"]), "--model", f"base={s['gguf']}"]
    assert main(args) == 0
    assert [m["engine"] for m in _report(s["out"])["models"]] == ["transformers"]
    err = capsys.readouterr().err
    assert "base: evaluated through transformers, not llama.cpp: xllamacpp is not installed" in err
    assert main(args + ["--engine", "llamacpp", "--output-dir", str(s["tmp"] / "o2")]) == 2
    assert "error: --engine llamacpp cannot evaluate model 'base': xllamacpp is not installed" in capsys.readouterr().err


def test_a_model_directory_has_no_gguf_and_stays_on_transformers(setup, tiny_model_dir, capsys):
    s = setup
    assert main(s["args"] + ["--output-dir", str(s["out"]), "--model", f"base={tiny_model_dir}", "--limit-per-type", "1"]) == 0
    assert "base: evaluated through transformers, not llama.cpp: " in capsys.readouterr().err
    assert _report(s["out"])["models"][0]["settings"]["engine"] == "transformers"


def test_a_gguf_llamacpp_cannot_load_is_one_line_with_what_to_do(setup, capsys):
    pytest.importorskip("xllamacpp")
    from thinksearch import gguf_cache

    s = setup
    bad = s["tmp"] / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    assert main(s["args"] + ["--output-dir", str(s["out"]), "--model", f"base={bad}", "--engine", "llamacpp"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: model 'base': {bad} is GGUF v0") and err.endswith(
        "replace it with a complete GGUF, or evaluate with --engine transformers") and len(err.splitlines()) == 1
    # A cached export that went bad (not one this code writes: it renames complete files only).
    plan = gguf_cache.plan(str(s["gguf"]), s["adapter"], directory=s["tmp"] / "cache")
    plan.path.parent.mkdir(parents=True)
    plan.path.write_bytes(b"GGUF" + b"\0" * 64)
    plan.path.with_suffix(".json").write_text("{}")
    assert main(s["args"] + ["--output-dir", str(s["out"]), "--model", f"tuned={s['gguf']}+{s['adapter']}"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: model 'tuned': llama.cpp could not load {plan.path}: ") and len(err.splitlines()) == 1
    assert err.endswith(f"delete {plan.path} (and {plan.key}.json) so it is exported again, or evaluate with --engine transformers")


def test_bad_engine_names_the_flag_and_the_choices(capsys):
    with pytest.raises(ConfigError, match=r"^--engine \(eval\.engine\): 'vllm' is not allowed \(allowed: auto, llamacpp, transformers\)"):
        from_dict(EvalConfig, {"engine": "vllm"}, "eval")
    with pytest.raises(SystemExit):
        main(["eval", "--engine", "vllm"])
    assert "argument --engine: invalid choice: 'vllm'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="llamacpp evaluates through the agent loop only"):
        EvalConfig(engine="llamacpp", agent=False)


def test_a_calibrated_shift_of_zero_steers_the_eval(setup, tiny_model_dir):
    # A calibration that chose 0 still decides on the summed search lines (steer.py); the eval's
    # agent must not read the 0 as "--decision-shift 0", which turns steering off.
    s = setup
    (s["adapter"] / "decision.json").write_text('{"shift": 0.0}', encoding="utf-8")
    args = s["args"] + ["--output-dir", str(s["out"]), "--model", f"tuned={tiny_model_dir}+{s['adapter']}", "--engine", "transformers"]
    assert main(args) == 0
    records = _report(s["out"])["models"][0]["records"]
    # The untrained model's own first token starts no decision line; steered, every turn opens with one.
    assert records and all(opening_line(r) is not None for r in records)
