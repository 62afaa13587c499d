"""Exporting a tuned model to GGUF: metadata from the base's GGUF, weights from the model.

The tiny model gets a small reference GGUF written here (what the offline alias's GGUF is
for the real model); transformers reads the export back, and its logits match the model's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from thinksearch.errors import ThinksearchError
from thinksearch.gguf_export import export_gguf


def reference_gguf(model, tok, path, blocks=None):
    """A GGUF of the tiny base: llama.cpp-style qwen2 metadata, its tokenizer, f32 weights."""
    import gguf

    c = model.config
    n = blocks or c.num_hidden_layers
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_block_count(n)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"] if getattr(c, "rope_parameters", None) else c.rope_theta)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    vocab = {v: k for k, v in tok.get_vocab().items()}
    tokens = [vocab[i] for i in range(len(tok))]
    specials = set(tok.all_special_tokens)
    added = {t.content for t in tok.added_tokens_decoder.values()}
    w.add_token_list(tokens)
    w.add_token_types([3 if t in specials else 4 if t in added else 1 for t in tokens])
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_chat_template(tok.chat_template)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, n)
    for k, v in model.state_dict().items():
        new = names.get_name(k, try_suffixes=(".weight", ".bias"))
        if new is not None and not (new.startswith("blk.") and int(new.split(".")[1]) >= n):
            w.add_tensor(new, v.detach().float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def logits(model, tok, text="今天比特币的价格是多少？"):
    import torch

    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits[0].float().numpy()


@pytest.mark.parametrize("qtype, tol", [("f32", 1e-5), ("q8_0", 0.05)])
def test_export_reads_back_with_the_same_logits(tiny, tiny_model_dir, tmp_path, qtype, tol):
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = tiny
    ref = reference_gguf(model, tok, tmp_path / "base.gguf")
    out = export_gguf(str(tiny_model_dir), tmp_path / "out" / "tuned.gguf", like=ref, qtype=qtype, progress=False)
    assert out.is_file() and not list(out.parent.glob(".*partial"))
    r = gguf.GGUFReader(out)
    assert r.fields["tokenizer.chat_template"].contents() == tok.chat_template
    assert {t.name: t.tensor_type.name for t in r.tensors}["blk.0.attn_q.weight"] == qtype.upper()
    back = AutoModelForCausalLM.from_pretrained(str(out.parent), gguf_file=out.name)
    assert np.abs(logits(back, tok) - logits(model, tok)).max() < tol
    tok_back = AutoTokenizer.from_pretrained(str(out.parent), gguf_file=out.name)
    assert tok_back("比特币 价格")["input_ids"] == tok("比特币 价格")["input_ids"]


def test_export_merges_an_adapter(tiny, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model, tok = tiny
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "down_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    tuned = logits(peft_model, tok)
    ref = reference_gguf(model, tok, tmp_path / "base.gguf")
    out = export_gguf(str(tiny_model_dir), tmp_path / "tuned.gguf", like=ref, adapter=str(tmp_path / "adapter"),
                      qtype="f32", progress=False)
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name)
    assert np.abs(logits(back, tok) - tuned).max() < 1e-4
    assert np.abs(tuned - logits(model, tok)).max() > 1e-3  # the adapter did change the model


def test_export_refuses_another_architecture(tiny, tiny_model_dir, tmp_path):
    model, tok = tiny
    ref = reference_gguf(model, tok, tmp_path / "one-block.gguf", blocks=1)
    with pytest.raises(ThinksearchError, match=r"does not match the base GGUF one-block.gguf: it has 'model.layers.1."):
        export_gguf(str(tiny_model_dir), tmp_path / "x.gguf", like=ref, progress=False)
    assert not (tmp_path / "x.gguf").exists()
    with pytest.raises(ThinksearchError, match="no GGUF of the base model found"):
        export_gguf(str(tiny_model_dir), tmp_path / "x.gguf", progress=False)
    with pytest.raises(ThinksearchError, match="--out must end in .gguf"):
        export_gguf(str(tiny_model_dir), tmp_path / "x.bin", like=ref, progress=False)


def test_llamacpp_engine_runs_the_export(tiny, tiny_model_dir, tmp_path):
    """The exported file runs in llama.cpp (in-process, xllamacpp) through the agent's engine."""
    pytest.importorskip("xllamacpp")
    from fake_engines import FixedSearch

    from thinksearch.agent import Agent, LlamaCppEngine
    from thinksearch.config import AgentConfig

    model, tok = tiny
    out = export_gguf(str(tiny_model_dir), tmp_path / "tuned.gguf", like=reference_gguf(model, tok, tmp_path / "base.gguf"),
                      progress=False)
    engine = LlamaCppEngine(out, tok, threads=1, context_length=512)
    try:
        r = Agent(engine, FixedSearch(), AgentConfig(max_new_tokens=8, max_rounds=1, context_tokens=512)).ask("你好")
        assert 0 < r.completion_tokens <= 8 and r.rounds[0].prompt_tokens == engine.count_tokens(r.messages[:2])
        s = Agent(engine, FixedSearch(), AgentConfig(max_new_tokens=8, max_rounds=1, context_tokens=512)).ask("你好", on_event=lambda e: None)
        assert s.rounds[0].raw == r.rounds[0].raw  # greedy: streamed and not streamed agree
    finally:
        engine.close()


def test_llamacpp_refuses_a_broken_gguf(tiny_tokenizer, tmp_path):
    pytest.importorskip("xllamacpp")
    from thinksearch.agent import LlamaCppEngine

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ThinksearchError, match=rf"^llama.cpp could not load {bad}: "):
        LlamaCppEngine(bad, tiny_tokenizer, threads=1, context_length=256)


def test_export_command(tiny, tiny_model_dir, tmp_path, capsys, ts_home):
    from thinksearch import cli

    model, tok = tiny
    ref = reference_gguf(model, tok, tmp_path / "base.gguf")
    assert cli.main(["export-gguf", str(tiny_model_dir), "--out", str(tmp_path / "t.gguf"), "--like", str(ref)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "t.gguf")
    assert cli.main(["export-gguf", str(tiny_model_dir), "--out", str(tmp_path / "u.gguf")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: no GGUF of the base model found for '{tiny_model_dir}'; "
                                              "pass --like BASE.gguf (the GGUF of the model it was tuned from)")
