"""``close_thinking``: a turn cut by the token limit inside its thinking is closed by the loop,
and the model goes on in the same turn to decide (search, or answer)."""

from __future__ import annotations

import pytest
from fake_engines import FixedSearch, ScriptedEngine, answer

from thinksearch import format as fmt
from thinksearch.agent import Agent
from thinksearch.config import AgentConfig, EvalConfig
from thinksearch.engines.openai import OpenAIEngine
from thinksearch.errors import ConfigError
from thinksearch.generation import Sampling

# A trace that states its decision and then loops until the limit (seen in tuned models' outputs).
LOOP = "<thinking>\n这个问题要用到会变化的最新信息，需要搜索。\n菲律宾总统：" + "谁？" * 40
CALL = '<tool_call>\n{"name": "search", "arguments": {"query": "菲律宾总统"}}\n</tool_call>'


def reply(messages: list) -> str:
    if messages[-1]["role"] == "assistant":  # the closed turn, handed back to go on with
        return CALL
    if messages[-1]["role"] == "tool":
        return answer("小马科斯。", thinking="查到了。")
    return LOOP


def loop_agent(tok, **cfg) -> Agent:
    return Agent(ScriptedEngine(tok, reply=reply), FixedSearch(), AgentConfig(max_new_tokens=40, **cfg))


@pytest.mark.parametrize("stream", [False, True])
def test_the_closed_turn_goes_on_to_the_search_it_stated(tiny_tokenizer, stream):
    a = loop_agent(tiny_tokenizer, close_thinking=96)
    events = []
    r = a.ask("菲律宾总统是谁？", on_event=events.append) if stream else a.ask("菲律宾总统是谁？")
    cut = fmt.close_thinking(LOOP[:40])
    assert a.backend.queries == ["菲律宾总统"] and r.answer == "小马科斯。"
    assert r.rounds[0].raw == cut + CALL and r.rounds[0].closed_thinking
    assert not r.rounds[1].closed_thinking
    assert r.rounds[0].completion_tokens == 40 + len(CALL)
    # The model was given its own cut turn, closed, as a turn to go on with (not a new turn).
    assert a.engine.prompts[1].endswith("<|im_start|>assistant\n" + cut)
    assert a.engine.seen[1][-1] == {"role": "assistant", "content": cut}
    if stream:
        assert [e.kind for e in events if e.kind in ("call", "tool_call")] == ["call", "tool_call"]
        assert "".join(e.text for e in events if e.kind == "thinking" and e.round == 0) == fmt.parse(cut).thinking


def test_streamed_events_show_the_closing_tag_after_a_cut_that_ends_in_whitespace(tiny_tokenizer):
    cut = "<thinking>\n想一想。\n谁？" + " " * 30
    eng = ScriptedEngine(tiny_tokenizer, reply=lambda m: "答案是2。" if m[-1]["role"] == "assistant" else cut)
    events = []
    r = Agent(eng, FixedSearch(), AgentConfig(max_new_tokens=24, close_thinking=96)).ask("问题？", on_event=events.append)
    assert r.rounds[0].raw == "<thinking>\n想一想。\n谁？\n</thinking>\n答案是2。" and r.answer == "答案是2。"
    assert "".join(e.text for e in events if e.kind == "answer") == "答案是2。"
    assert "".join(e.text for e in events if e.kind == "thinking").strip() == "想一想。\n谁？"


def test_off_by_default_a_cut_thinking_ends_the_question(tiny_tokenizer):
    a = loop_agent(tiny_tokenizer)
    r = a.ask("菲律宾总统是谁？")
    assert (r.stop_reason, len(r.rounds), a.backend.queries) == ("length", 1, [])
    assert not r.rounds[0].closed_thinking and len(a.engine.prompts) == 1


def test_what_follows_the_close_has_its_own_budget(tiny_tokenizer):
    # 10 more tokens (characters here) are not enough for the call: the turn ends cut, once.
    a = loop_agent(tiny_tokenizer, close_thinking=10)
    r = a.ask("菲律宾总统是谁？")
    assert r.rounds[0].raw == fmt.close_thinking(LOOP[:40]) + CALL[:10]
    assert (r.stop_reason, r.rounds[0].finish_reason, len(a.engine.prompts)) == ("length", "length", 2)


def test_only_a_thinking_cut_by_the_limit_is_closed(tiny_tokenizer):
    # An answer cut after </thinking>, and a thinking the model ended itself, are left alone.
    for text in ("<thinking>\n想好了\n</thinking>\n" + "很长的答案" * 20, "<thinking>\n想"):
        a = Agent(ScriptedEngine(tiny_tokenizer, [text]), FixedSearch(), AgentConfig(max_new_tokens=40, close_thinking=64))
        a.ask("问题？")
        assert len(a.engine.prompts) == 1


def test_a_batch_closes_its_cut_turns_in_one_generate(tiny_tokenizer):
    a = loop_agent(tiny_tokenizer, close_thinking=96, max_rounds=2)
    a.engine.reply = lambda m: answer("是2。") if m[1]["content"] == "1+1=?" else reply(m)
    rs = a.run_batch([a.messages_for("菲律宾总统是谁？"), a.messages_for("1+1=?")])
    assert [r.rounds[0].closed_thinking for r in rs] == [True, False]
    assert a.engine.batch_sizes == [2, 1, 1]  # both first turns, the one closing, the answer after the search
    assert rs[1].answer == "是2。"


def test_the_setting_is_checked():
    with pytest.raises(ConfigError, match="close_thinking|close-thinking"):
        AgentConfig(close_thinking=-1)
    with pytest.raises(ConfigError, match="close_thinking|close-thinking"):
        EvalConfig(close_thinking=-1)


def test_the_chat_api_asks_the_endpoint_to_go_on_with_the_turn():
    engine = object.__new__(OpenAIEngine)
    engine.served_model = "m"
    closing = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "<thinking>\n想\n</thinking>\n"}]
    assert engine._chat_params(closing, Sampling())["extra_body"] == {"continue_final_message": True, "add_generation_prompt": False}
    assert "extra_body" not in engine._chat_params(closing[:1], Sampling())
