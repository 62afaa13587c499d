"""The GGUF cache: one export per adapter version, never a stale one (tiny model, f32 and f16 exports)."""

from __future__ import annotations

import pytest
from test_gguf_export import reference_gguf

from thinksearch import gguf_cache, gguf_export
from thinksearch.errors import ThinksearchError


def make_adapter(base_dir, out, seed):
    """A LoRA adapter on the tiny model with random (non-zero) weights: each seed another model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "down_proj"], init_lora_weights=False)).save_pretrained(out)
    return out


@pytest.fixture()
def counted_exports(monkeypatch):
    calls = []
    real = gguf_export.export_gguf

    def counting(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(gguf_export, "export_gguf", counting)
    return calls


def test_export_once_then_reuse_and_never_stale(tiny, tiny_model_dir, tmp_path, counted_exports):
    model, tok = tiny
    like = reference_gguf(model, tok, tmp_path / "base.gguf")
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=1)
    cache = tmp_path / "cache"
    first = gguf_cache.cached_gguf(str(tiny_model_dir), adapter, like=like, directory=cache)
    assert first.ready and len(counted_exports) == 1
    assert sorted(p.name for p in cache.iterdir()) == [f"{first.key}.gguf", f"{first.key}.json"]  # no partial files
    (adapter / "metrics.json").write_text("{}")  # files beside the weights do not change the model
    again = gguf_cache.cached_gguf(str(tiny_model_dir), adapter, like=like, directory=cache)
    assert again.path == first.path and len(counted_exports) == 1

    published = gguf_cache.publish(first, tmp_path / "run" / "model.gguf")
    assert gguf_cache.is_current(published, adapter) is None
    assert gguf_cache.fingerprint_path(published).is_file()

    make_adapter(tiny_model_dir, adapter, seed=2)  # retrained in place
    assert "is stale: adapter" in gguf_cache.is_current(published, adapter)
    fresh = gguf_cache.cached_gguf(str(tiny_model_dir), adapter, like=like, directory=cache)
    assert fresh.key != first.key and len(counted_exports) == 2
    assert not first.path.exists()  # the export of the old adapter is gone, not kept beside the new one
    gguf_cache.publish(fresh, published)
    assert gguf_cache.is_current(published, adapter) is None


def test_missing_or_unfingerprinted_files_are_not_used(tmp_path, tiny_model_dir):
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=3)
    assert "does not exist" in gguf_cache.is_current(tmp_path / "none.gguf", adapter)
    loose = tmp_path / "loose.gguf"
    loose.write_bytes(b"GGUF")
    assert "has no fingerprint file" in gguf_cache.is_current(loose, adapter)
    assert gguf_cache.is_current(loose, None) is None  # no adapter: the file is the model


def test_no_base_gguf_is_one_clear_error(tmp_path, tiny_model_dir):
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=4)
    with pytest.raises(ThinksearchError, match="no GGUF of the base model .* to export the tuned model into"):
        gguf_cache.plan(str(tiny_model_dir), adapter, directory=tmp_path / "c")
    with pytest.raises(ThinksearchError, match="is not a LoRA adapter directory"):
        gguf_cache.adapter_fingerprint(tmp_path)
