"""Shared fixtures: the tiny model, an isolated THINKSEARCH_HOME, no hub access."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# Tests never reach a model hub; a test that tries fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny Qwen2 model directory (built once per test session)."""
    from tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tiny import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    """(model, tokenizer) loaded from the tiny model directory through thinksearch.models."""
    from thinksearch.models import load

    return load(str(tiny_model_dir), dtype="float32", device="cpu")


@pytest.fixture()
def ts_home(tmp_path, monkeypatch):
    """An empty THINKSEARCH_HOME for this test."""
    home = tmp_path / "home"
    monkeypatch.setenv("THINKSEARCH_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def load_script():
    """Import a file under scripts/ or bench/ (neither is a package) by its path from the repository root."""
    root = Path(__file__).resolve().parent.parent

    def load(relpath: str):
        spec = importlib.util.spec_from_file_location(Path(relpath).stem + "_under_test", root / relpath)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
