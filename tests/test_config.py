"""Config machinery: YAML sections, flag overrides, one-line errors naming flag and key."""

from __future__ import annotations

import argparse
import doctest
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from thinksearch import config as cfg
from thinksearch import format as fmt
from thinksearch.config import flags
from thinksearch.errors import ConfigError


@dataclass
class Inner:
    backend: Literal["local", "searxng"] = "local"
    """Which backend."""
    k: int = 5
    """How many results."""

    def __post_init__(self):
        cfg.check_positive(self, "k")


@dataclass
class Outer:
    lora_r: int = 16
    """LoRA rank (reference recipe)."""
    lr: float = 2e-4
    """Learning rate."""
    bf16: Optional[bool] = None
    """bf16 autocast; null picks by hardware."""
    models: list[str] = field(default_factory=list)
    """Models as NAME=REF."""
    search: Inner = field(default_factory=Inner)
    """Search backend settings."""

    def __post_init__(self):
        cfg.check_positive(self, "lora_r", "lr")


def test_field_docs_come_from_attribute_docstrings():
    docs = cfg.field_docs(Outer)
    assert docs["lora_r"] == "LoRA rank (reference recipe)."
    assert docs["search"] == "Search backend settings."


def test_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lora_r: 8\n  search: {backend: searxng, k: 3}\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    cfg.add_flags(parser, Outer)
    args = parser.parse_args(["--search-k", "7", "--no-bf16", "--models", "a=x", "b=y"])
    c = cfg.build(Outer, path, "train", cfg.overrides_from_args(args, Outer))
    assert (c.lora_r, c.search.backend, c.search.k, c.bf16, c.models) == (8, "searxng", 7, False, ["a=x", "b=y"])
    assert c.lr == 2e-4


@pytest.mark.parametrize(
    "data, message",
    [
        ({"lora_rr": 8}, "unknown key 'train.lora_rr' (allowed: lora_r, lr, bf16, models, search)"),
        ({"lora_r": -1}, "--lora-r (train.lora_r): must be > 0, got -1"),
        ({"lora_r": "8"}, "--lora-r (train.lora_r): must be an integer, got '8'"),
        ({"lora_r": True}, "--lora-r (train.lora_r): must be an integer"),
        ({"search": {"backend": "bing"}}, "--search-backend (train.search.backend): 'bing' is not allowed (allowed: local, searxng)"),
        ({"search": {"k": 0}}, "--search-k (train.search.k): must be > 0, got 0"),
        ({"search": {"kk": 0}}, "unknown key 'train.search.kk'"),
        ({"search": 3}, "--search (train.search): must be a mapping"),
        ({"bf16": "yes"}, "--bf16 (train.bf16): must be true or false or null"),
    ],
)
def test_errors_are_one_line_and_name_the_flag(data, message):
    with pytest.raises(ConfigError) as e:
        cfg.from_dict(Outer, data, "train")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        cfg.load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lora_r: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        cfg.load_yaml(bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        cfg.load_yaml(notmap)


def test_parse_set():
    assert cfg.parse_set(["train.lora_r=8", "eval.models=[a, b]", "x=hello"]) == {
        "train": {"lora_r": 8}, "eval": {"models": ["a", "b"]}, "x": "hello"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        cfg.parse_set(["nonsense"])


def test_module_doctests():
    for module in (flags, fmt):  # flag_name's example lives in config.flags
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_a_float_written_without_a_dot_is_a_number():
    # YAML 1.1 reads `1e-4` as a string; `--set train.learning_rate=1e-4` must still set 0.0001.
    merged = cfg.merge({"learning_rate": 3e-4}, cfg.parse_set(["learning_rate=1e-4"]))
    assert cfg.from_dict(cfg.TrainConfig, merged).learning_rate == 1e-4
    with pytest.raises(ConfigError, match=r"--learning-rate \(learning_rate\): must be a number, got 'fast'"):
        cfg.from_dict(cfg.TrainConfig, {"learning_rate": "fast"})
