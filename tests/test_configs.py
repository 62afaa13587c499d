"""Every shipped config loads and validates (recursive glob, so a new file can't be missed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinksearch import config
from thinksearch.pipeline import plan

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_configs_exist():
    assert {p.name for p in CONFIGS} >= {"quickstart.yaml", "reference.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_plans(path):
    cfg = config.from_dict(config.RunConfig, config.load_yaml(path))
    planned, paths = plan(cfg)
    assert planned.train.data == [str(paths.data)]
    assert planned.eval.models == [f"base={cfg.train.model}", f"tuned={cfg.train.model}+{paths.adapter}"]
    # The sections each command reads on its own validate too.
    for section, cls in (("synth", config.SynthConfig), ("train", config.TrainConfig), ("eval", config.EvalConfig),
                         ("agent", config.AgentConfig), ("serve", config.ServeConfig)):
        config.build(cls, path, section, {})


def test_reference_recipe_settings():
    cfg = config.from_dict(config.RunConfig, config.load_yaml(Path(__file__).resolve().parents[1] / "configs" / "reference.yaml"))
    t = cfg.train
    assert (t.model, t.lora_r, t.lora_alpha, t.batch_size, t.grad_accum, t.learning_rate) == (
        "Qwen/Qwen2.5-0.5B-Instruct", 16, 32, 2, 8, 2e-4)
    assert cfg.synth.teacher.model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert (cfg.synth.num_thinking, cfg.synth.num_search) == (200, 200)
    assert cfg.eval.limit_per_type == 30


def test_run_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_dir: x\ntrain:\n  lora_r: 0\n", encoding="utf-8")
    with pytest.raises(config.ConfigError, match=r"--train-lora-r \(train.lora_r\): must be > 0"):
        config.from_dict(config.RunConfig, config.load_yaml(bad))
    with pytest.raises(config.ConfigError, match="unknown key 'synthh'"):
        config.from_dict(config.RunConfig, {"synthh": {}})
    with pytest.raises(config.ConfigError, match="stages"):
        config.from_dict(config.RunConfig, {"stages": ["train", "deploy"]})
