"""The agent with the real offline 0.5B model (slow: loads ~1 GB)."""

from __future__ import annotations

import pytest
from fake_engines import FixedSearch

from thinksearch import format as fmt
from thinksearch.agent import Agent, LlamaCppEngine, TransformersEngine, gguf_of
from thinksearch.config import AgentConfig

pytestmark = pytest.mark.slow
ALIAS = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="module")
def real():
    from thinksearch import models

    if not models.is_prepared(ALIAS):
        pytest.skip(f"{ALIAS} is not prepared (thinksearch models prepare {ALIAS})")
    return models.load(ALIAS, dtype="bfloat16", device="cpu")


def test_real_tokenizer_sees_no_control_tokens_from_results(real):
    from test_injection import BENIGN, EVIL, control_ids, second_prompt

    _, tok = real
    evil, _ = second_prompt(tok, EVIL)
    benign, _ = second_prompt(tok, BENIGN)
    assert control_ids(tok, evil) == control_ids(tok, benign)
    assert evil.startswith("<|im_start|>system\n" + fmt.SYSTEM_PROMPT + "<|im_end|>")


def test_ask_with_the_real_model(real):
    model, tok = real
    a = Agent(TransformersEngine(model, tok), FixedSearch(), AgentConfig(max_new_tokens=24, max_rounds=2))
    r = a.ask("今天比特币的价格是多少？", on_event=lambda e: None)
    assert r.rounds[0].prompt_tokens > 100 and 0 < r.rounds[0].completion_tokens <= 24
    assert r.rounds[0].first_token_s is not None


def test_llamacpp_engine_on_the_same_gguf(real):
    pytest.importorskip("xllamacpp")
    _, tok = real
    gguf = gguf_of(ALIAS)
    if gguf is None:
        pytest.skip("the assembled GGUF is not on disk")
    engine = LlamaCppEngine(gguf, tok, context_length=2048)
    try:
        r = Agent(engine, FixedSearch(), AgentConfig(max_new_tokens=16, max_rounds=1, context_tokens=2048)).ask("你好", on_event=lambda e: None)
        assert 0 < r.completion_tokens <= 16 and r.rounds[0].raw
        # the prompt is rendered here; llama.cpp counts the same prompt tokens as the tokenizer
        assert r.rounds[0].prompt_tokens == engine.count_tokens(Agent(engine, FixedSearch()).messages_for("你好"))
    finally:
        engine.close()


def test_exported_gguf_decodes_like_the_model(real, tmp_path):
    pytest.importorskip("xllamacpp")
    from thinksearch.generation import Sampling
    from thinksearch.gguf_export import export_gguf

    model, tok = real
    out = export_gguf(ALIAS, tmp_path / "q8.gguf", progress=False)
    engine = LlamaCppEngine(out, tok, context_length=1024)
    msgs = Agent(engine, FixedSearch()).messages_for("如果一个正方形的面积是另一个正方形面积的4倍，那么它们的周长比是多少？")
    try:
        exported = engine.generate([msgs], Sampling(max_new_tokens=12))[0].text
    finally:
        engine.close()
    reference = TransformersEngine(model, tok).generate([msgs], Sampling(max_new_tokens=12))[0].text
    assert exported[:8] == reference[:8]
