"""`thinksearch run`'s export stage: RUN_DIR/model.gguf through the cache, or a clear skip, and the
summary's engine per stage (tiny model; the whole run is tests/test_pipeline.py)."""

from __future__ import annotations

import importlib.util
import shutil

from test_gguf_cache import make_adapter
from test_gguf_export import reference_gguf

from thinksearch import gguf_cache, pipeline
from thinksearch.config import RunConfig, TrainConfig


def _run_cfg(tmp_path, tiny, tiny_model_dir):
    model, tok = tiny
    base = reference_gguf(model, tok, tmp_path / "tiny.gguf")
    cfg, paths = pipeline.plan(RunConfig(run_dir=str(tmp_path / "run"), train=TrainConfig(model=str(base))))
    make_adapter(tiny_model_dir, paths.adapter, seed=9)
    return cfg, paths


def test_export_writes_model_gguf_once_and_the_summary_names_the_engines(tmp_path, tiny, tiny_model_dir):
    import pytest

    pytest.importorskip("xllamacpp")
    cfg, paths = _run_cfg(tmp_path, tiny, tiny_model_dir)
    said: list[str] = []
    assert pipeline.STAGES["export"](cfg, paths, said.append, False) == "done"
    assert gguf_cache.is_current(paths.gguf, paths.adapter) is None
    assert cfg.eval.gguf_cache == str(paths.gguf_cache)  # eval finds the same export, no second one
    inode = paths.gguf.stat().st_ino
    assert pipeline.STAGES["export"](cfg, paths, said.append, False) == "done"
    assert paths.gguf.stat().st_ino == inode and sum("exporting" in m for m in said) == 1
    rows = dict(pipeline.summary_rows(pipeline.summarize(paths, {"stages": {"train": {}, "export": {"status": "done"}}})))
    assert rows["engine: export"] == "gguf (f16) → model.gguf" and rows["engine: train"] == "transformers + PEFT (LoRA)"
    shutil.rmtree(paths.adapter)
    make_adapter(tiny_model_dir, paths.adapter, seed=10)  # retrained: the stage replaces the stale file
    assert gguf_cache.is_current(paths.gguf, paths.adapter) is not None
    assert pipeline.STAGES["export"](cfg, paths, said.append, False) == "done"
    assert gguf_cache.is_current(paths.gguf, paths.adapter) is None


def test_without_xllamacpp_export_is_skipped_with_a_note(tmp_path, tiny, tiny_model_dir, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real(name, *a))
    cfg, paths = _run_cfg(tmp_path, tiny, tiny_model_dir)
    said: list[str] = []
    status, note = pipeline.STAGES["export"](cfg, paths, said.append, False)
    assert status == "skipped" and "xllamacpp is not installed" in note and said == [f"export skipped: {note}"]
    assert not paths.gguf.exists()
    rows = dict(pipeline.summary_rows(pipeline.summarize(paths, {"stages": {"export": {"status": "skipped", "note": note}}})))
    assert rows["engine: export"] == f"skipped: {note}"
