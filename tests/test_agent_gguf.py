"""ask/chat/serve with ``agent.gguf``: llama.cpp runs the exported tuned model while it matches the
adapter; a missing or stale file, or no xllamacpp, falls back to transformers with a note."""

from __future__ import annotations

import importlib.util

import pytest
from test_gguf_cache import make_adapter
from test_gguf_export import reference_gguf

from thinksearch import gguf_cache
from thinksearch.config import AgentConfig
from thinksearch.engines import load_engine, pick_engine
from thinksearch.errors import ConfigError, ThinksearchError


@pytest.fixture()
def published(tmp_path, tiny, tiny_model_dir):
    model, tok = tiny
    base = reference_gguf(model, tok, tmp_path / "tiny.gguf")
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=7)
    plan = gguf_cache.cached_gguf(str(base), adapter, directory=tmp_path / "cache")
    gguf = gguf_cache.publish(plan, tmp_path / "run" / "model.gguf")
    cfg = AgentConfig(model=str(base), adapter=str(adapter), gguf=str(gguf), context_tokens=512, max_new_tokens=8)
    return cfg, tiny_model_dir


def test_a_current_gguf_runs_in_llamacpp_and_a_stale_one_never(published):
    pytest.importorskip("xllamacpp")
    cfg, base_dir = published
    notes: list[str] = []
    assert pick_engine(cfg, notes.append) == "llamacpp" and not notes
    engine = load_engine(cfg)
    try:
        assert engine.name == "llamacpp (model.gguf)"
    finally:
        engine.close()
    make_adapter(base_dir, cfg.adapter, seed=8)  # retrained since the export
    assert pick_engine(cfg, notes.append) == "transformers"
    assert notes == [f"not using --gguf: {cfg.gguf} is stale: adapter '{cfg.adapter}' changed since it was exported; "
                     "answering through transformers (thinksearch run's export stage writes a current one)"]
    with pytest.raises(ThinksearchError, match=r"^--gguf: .* is stale: .*; rerun thinksearch run .* or use --engine transformers"):
        load_engine(AgentConfig(**{**cfg.__dict__, "engine": "llamacpp"}))


def test_without_xllamacpp_the_gguf_is_skipped_with_a_note(published, monkeypatch):
    cfg, _ = published
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real(name, *a))
    notes: list[str] = []
    assert pick_engine(cfg, notes.append) == "transformers"
    assert notes[0].startswith("not using --gguf: xllamacpp is not installed")
    missing = AgentConfig(**{**cfg.__dict__, "gguf": cfg.gguf + ".gone"})
    monkeypatch.undo()
    assert pick_engine(missing, notes.append) == "transformers" and "does not exist" in notes[-1]


def test_llamacpp_with_an_adapter_needs_the_gguf():
    with pytest.raises(ConfigError, match="the llamacpp engine cannot put a LoRA adapter on the model"):
        AgentConfig(engine="llamacpp", adapter="runs/quickstart/adapter")
    AgentConfig(engine="llamacpp", adapter="runs/quickstart/adapter", gguf="runs/quickstart/model.gguf")
