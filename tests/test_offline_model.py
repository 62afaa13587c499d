"""The real offline Qwen2.5-Coder-0.5B-Instruct: prepared from PyPI packages, loaded with the hub off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from thinksearch import format as fmt
from thinksearch import models
from thinksearch.generation import Sampling, generate

pytestmark = pytest.mark.slow
ALIAS = models.DEFAULT_ALIAS


def test_prepare_then_answer_in_chinese_with_the_hub_off():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "thinksearch", "models", "prepare", ALIAS],
                         capture_output=True, text=True, env=env, timeout=1800)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(models.model_dir(ALIAS))
    again = subprocess.run([sys.executable, "-m", "thinksearch", "models", "prepare", ALIAS],
                           capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and again.stdout == out.stdout

    model, tok = models.load(ALIAS, prepare_alias=False)
    assert tok.convert_tokens_to_ids("<tool_call>") == 151657
    prompt = fmt.render(tok, [{"role": "user", "content": "中国的首都是哪个城市？请用一句中文回答。"}], add_generation_prompt=True)
    (answer,) = generate(model, tok, [prompt], Sampling(max_new_tokens=40))
    assert "北京" in answer.text, answer.text
    assert answer.finish_reason == "stop"
