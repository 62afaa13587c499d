"""Bad inputs across the stages that the per-module suites leave out: one line each, naming what to fix."""

from __future__ import annotations

import json

import pytest

from thinksearch import config, files, models
from thinksearch import evaluate as ev
from thinksearch import train as tr
from thinksearch.errors import ConfigError, ThinksearchError


def test_a_yaml_section_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c\.yaml: section 'train' must be a mapping$"):
        config.build(config.TrainConfig, path, "train", {})


def test_conflicting_set_overrides():
    with pytest.raises(ConfigError, match=r"^--set: train\.lora_r\.x conflicts with another --set$"):
        config.parse_set(["train.lora_r=8", "train.lora_r.x=1"])


def test_adapter_reference_errors(tmp_path, tiny_model_dir):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}), encoding="utf-8")
    with pytest.raises(ThinksearchError, match=r"two adapters given for .* \(one with '\+', one as a flag\)$"):
        models.resolve(f"{tiny_model_dir}+{adapter}", adapter=str(adapter))
    with pytest.raises(ThinksearchError, match=r"is an adapter; give its base model before the '\+'$"):
        models.resolve(f"{adapter}+{adapter}")


def test_a_directory_where_a_file_belongs(tmp_path):
    with pytest.raises(ThinksearchError, match=r"^eval file .* is a directory, not a file$"):
        files.read_text(tmp_path, "eval file")
    with pytest.raises(ThinksearchError, match=r"^data path .* is a directory; give the JSONL file\(s\) inside it$"):
        tr.read_rows([tmp_path])


def test_train_data_with_no_usable_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("{broken\n[1]\n", encoding="utf-8")
    with pytest.raises(ThinksearchError, match=r"^no usable training rows in .*d\.jsonl \(2 bad rows skipped\)$"):
        tr.read_rows([path], skip_bad=True)


def test_non_utf8_training_data_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n' + "{\"问\": 2}\n".encode("gbk"))
    with pytest.raises(ThinksearchError, match=r"d\.jsonl:2: not valid UTF-8 \(byte 0x[0-9a-f]{2}\); save the file as UTF-8$"):
        tr.read_rows([path])


def test_eval_without_a_model():
    with pytest.raises(ConfigError, match=r"no model to evaluate \(give --model NAME=REF\)"):
        ev.parse_model_specs([])
