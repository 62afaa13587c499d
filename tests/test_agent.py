"""The agent loop: rounds, the corrective message, failing search, streaming, engines."""

from __future__ import annotations

import json
import random
import re
import threading

import pytest
from fake_engines import FailingSearch, FixedSearch, ScriptedEngine, answer, call

from thinksearch import format as fmt
from thinksearch.agent import (
    Agent,
    StreamSplitter,
    TransformersEngine,
    UnavailableSearch,
    build_messages,
    load_engine,
    open_backend,
    trim_history,
)
from thinksearch.config import AgentConfig, SearchConfig
from thinksearch.errors import ThinksearchError
from thinksearch.search.base import SearchError


def agent(tok, script, backend=None, **cfg):
    return Agent(ScriptedEngine(tok, script), backend or FixedSearch(), AgentConfig(**cfg))


def test_call_search_answer(tiny_tokenizer):
    backend = FixedSearch()
    a = agent(tiny_tokenizer, [call("比特币价格 今日"), answer("约6万美元[1]。")], backend)
    r = a.ask("今天比特币的价格是多少？")
    assert r.stop_reason == "answer" and r.answer == "约6万美元[1]。" and r.thinking == "根据结果回答。"
    assert backend.queries == ["比特币价格 今日"]
    assert [len(x.tool_calls) for x in r.rounds] == [1, 0]
    assert r.rounds[0].thinking == "需要最新数据。" and r.rounds[0].raw == call("比特币价格 今日")
    # The second round saw: system, user, the assistant turn with tool_calls (arguments as objects), the tool turn.
    seen = a.engine.seen[1]
    assert [m["role"] for m in seen] == ["system", "user", "assistant", "tool"]
    assert seen[0]["content"] == fmt.SYSTEM_PROMPT
    assert seen[2]["tool_calls"] == [fmt.search_call("比特币价格 今日")]
    assert seen[3] == {"role": "tool", "name": "search", "content": fmt.render_results(backend.results, 300, 1500)}
    # ... and the rendered prompt holds the call exactly as the template writes it.
    assert a.engine.prompts[1].count(call("比特币价格 今日") + "<|im_end|>") == 1
    d = json.loads(r.to_json())
    assert d["rounds"][0]["tool_calls"][0]["results"][0]["title"] == "比特币价格"
    assert d["prompt_tokens"] == sum(x["prompt_tokens"] for x in d["rounds"]) > 0
    assert d["completion_tokens"] > 0 and d["seconds"] >= 0 and "messages" not in d


def test_plain_answer_needs_no_search(tiny_tokenizer):
    backend = FixedSearch()
    r = agent(tiny_tokenizer, [answer("周长比是2:1。")], backend).ask("周长比？")
    assert (r.stop_reason, r.answer, len(r.rounds), backend.queries) == ("answer", "周长比是2:1。", 1, [])


def test_at_most_max_rounds(tiny_tokenizer):
    backend = FixedSearch()
    r = agent(tiny_tokenizer, [call(f"q{i}") for i in range(10)], backend, max_rounds=3).ask("问题")
    assert r.stop_reason == "max_rounds" and len(r.rounds) == 3
    assert backend.queries == ["q0", "q1"]  # the third turn's call is not run: no turn would read it


@pytest.mark.parametrize("bad, error", [
    ('<tool_call>\n{"name": "search", "arguments": {"query": "a"},}\n</tool_call>', "invalid JSON"),
    ('<tool_call>\n{"name": "calc", "arguments": {"expr": "1+1"}}\n</tool_call>', "unknown tool 'calc'"),
    ('<tool_call>\n{"name": "search", "arguments": {"query": ""}}\n</tool_call>', "empty query"),
])
def test_malformed_call_gets_one_corrective_message(tiny_tokenizer, bad, error):
    backend = FixedSearch()
    a = agent(tiny_tokenizer, [bad, call("比特币"), answer("好。")], backend)
    r = a.ask("问题")
    assert r.stop_reason == "answer" and backend.queries == ["比特币"]
    assert error in r.rounds[0].invalid_calls[0]
    corrective = a.engine.seen[1][-1]
    assert corrective["role"] == "tool" and corrective["content"].startswith("工具调用无效：")
    assert error in corrective["content"]
    assert a.engine.seen[1][-2] == {"role": "assistant", "content": bad}  # its own turn, as written


def test_second_malformed_call_ends_the_loop(tiny_tokenizer):
    bad = '<tool_call>{"name": "search"</tool_call>'
    backend = FixedSearch()
    a = agent(tiny_tokenizer, [bad, bad, answer("x")], backend)
    r = a.ask("问题")
    assert r.stop_reason == "invalid_call" and len(r.rounds) == 2 and backend.queries == []
    assert sum(m["content"].startswith("工具调用无效") for m in a.engine.seen[1] if m["role"] == "tool") == 1


def test_failing_search_is_told_to_the_model(tiny_tokenizer):
    backend = FailingSearch()
    a = agent(tiny_tokenizer, [call("比特币价格"), answer("搜索失败了，我无法提供最新价格。")], backend)
    r = a.ask("今天比特币的价格是多少？")
    run = r.searches[0]
    assert run.error == backend.message and run.results == []
    told = a.engine.seen[1][-1]["content"]
    assert told == fmt.SEARCH_FAILED.format(error=backend.message)
    assert "不要编造" in told and "<tool_response>\n" + told + "\n</tool_response>" in a.engine.prompts[1]
    assert r.stop_reason == "answer" and "无法" in r.answer


def test_unavailable_backend_warns_once_and_fails_each_search(tmp_path):
    warnings = []
    missing = tmp_path / "no-index.sqlite"
    backend = open_backend(AgentConfig(search=SearchConfig(index=str(missing))).search, warn=warnings.append)
    assert isinstance(backend, UnavailableSearch) and backend.reason.startswith(f"index not found: {missing}")
    assert warnings == [f"search unavailable ({backend.reason}); the model will be told its searches failed"]
    for _ in range(2):
        with pytest.raises(SearchError) as e:
            backend.search("x")
        assert str(e.value) == backend.reason
    assert len(warnings) == 1


def test_streaming_matches_batched_and_reports_events(tiny_tokenizer):
    script = [call("天气 北京"), answer("晴。")]
    batched = agent(tiny_tokenizer, list(script)).ask("北京天气？")
    events = []
    streamed = agent(tiny_tokenizer, list(script)).ask("北京天气？", on_event=events.append)
    assert (streamed.answer, streamed.stop_reason, [r.raw for r in streamed.rounds]) == \
        (batched.answer, batched.stop_reason, [r.raw for r in batched.rounds])
    kinds = [e.kind for e in events]
    assert kinds.index("tool_call") < kinds.index("tool_result") < max(i for i, k in enumerate(kinds) if k == "answer")
    assert "".join(e.text for e in events if e.kind == "thinking" and e.round == 0) == "需要最新数据。"
    assert "".join(e.text for e in events if e.kind == "answer") == "晴。"
    assert streamed.rounds[0].first_token_s is not None


def test_cancel_stops_without_running_tools(tiny_tokenizer):
    backend = FixedSearch()
    cancel = threading.Event()
    cancel.set()
    r = agent(tiny_tokenizer, [call("x")], backend).ask("问题", cancel=cancel, on_event=lambda e: None)
    assert r.stop_reason == "cancelled" and backend.queries == []


def test_question_too_long(tiny_tokenizer):
    a = agent(tiny_tokenizer, [], context_tokens=600, max_new_tokens=100)
    with pytest.raises(ThinksearchError, match="the question is too long"):
        a.ask("长" * 2000)
    with pytest.raises(ThinksearchError, match="empty"):
        a.ask("  ")


@pytest.mark.parametrize("seed", range(5))
def test_splitter_agrees_with_parse_whatever_the_pieces(seed):
    rng = random.Random(seed)
    texts = [call("比特币 价格", "想\n想"), answer("答\n案", "a<b"), "直接回答", "<thinking>\n没有关上",
             '<thinking>\nx\n</thinking>\n前言\n<tool_call>\n{"name": "search", "arguments": {"query": "q"}}\n</tool_call>']
    for text in texts:
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 12))))
        s, out = StreamSplitter(), []
        for a, b in zip([0, *cuts], [*cuts, len(text)]):
            out += s.feed(text[a:b])
        out += s.close()
        p = fmt.parse(text)
        assert "".join(t for k, t in out if k == "thinking") == (p.thinking or "")
        # answer pieces around a call may differ from parse() in the whitespace between them
        assert re.sub(r"\s", "", "".join(t for k, t in out if k == "answer")) == re.sub(r"\s", "", p.answer)
        assert [t for k, t in out if k == "call"] == [f"{fmt.TOOL_OPEN}{c.raw}{fmt.TOOL_CLOSE}" for c in p.tool_calls]


def test_trim_history_drops_oldest_exchanges(tiny_tokenizer):
    engine = ScriptedEngine(tiny_tokenizer)
    history = []
    for i in range(6):
        history += [{"role": "user", "content": f"问题{i} " + "字" * 50}, {"role": "assistant", "content": "答" * 50}]
    full = engine.count_tokens([{"role": "system", "content": "s"}, *history])
    kept = trim_history(engine, history, full // 2, "s")
    assert kept == history[-len(kept):] and kept[0]["role"] == "user" and 2 <= len(kept) < len(history)
    assert trim_history(engine, history[-2:], 1, "s") == history[-2:]  # the latest exchange stays


def test_batch_runs_each_round_as_one_generate(tiny_tokenizer):
    engine = ScriptedEngine(tiny_tokenizer, reply=lambda m: call("q") if m[-1]["role"] == "user" and "搜" in m[-1]["content"] else answer("好"))
    a = Agent(engine, FixedSearch(), AgentConfig())
    rs = a.run_batch([build_messages(q) for q in ["搜一下", "不用", "搜搜"]])
    assert [len(r.searches) for r in rs] == [1, 0, 1] and all(r.answer == "好" for r in rs)
    assert engine.batch_sizes == [3, 2]


# ---------------------------------------------------------------- the real engine, tiny model


def test_transformers_engine_end_to_end(tiny):
    model, tok = tiny
    cfg = AgentConfig(max_new_tokens=12, max_rounds=2)
    a = Agent(TransformersEngine(model, tok), FixedSearch(), cfg)
    r = a.ask("今天比特币的价格是多少？")
    assert r.rounds and r.rounds[0].prompt_tokens > 20 and 0 < r.rounds[0].completion_tokens <= 12
    assert r.stop_reason in ("answer", "length", "max_rounds", "invalid_call")
    json.loads(r.to_json())
    s = a.ask("今天比特币的价格是多少？", on_event=lambda e: None)
    assert s.rounds[0].raw == r.rounds[0].raw  # greedy: streaming and batched agree


def test_engine_stream_cancel_and_stop(tiny):
    model, tok = tiny
    from thinksearch.generation import Completion, Sampling

    engine = TransformersEngine(model, tok)
    msgs = build_messages("你好")
    cancel = threading.Event()
    items = []
    for item in engine.stream(msgs, Sampling(max_new_tokens=300), cancel):
        items.append(item)
        cancel.set()
    assert isinstance(items[-1], Completion) and items[-1].completion_tokens < 300
    assert items[-1].text == "".join(items[:-1])


def test_adapter_for_another_base_is_refused(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from tiny import build_model, build_tokenizer

    from thinksearch.models import ADAPTER_META

    base = build_model(build_tokenizer())
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))
    out = tmp_path / "adapter"
    peft_model.save_pretrained(out)
    (out / ADAPTER_META).write_text(json.dumps({"base_model": str(tiny_model_dir),
                                                "base_signature": {"model_type": "qwen2", "hidden_size": 896}}))
    cfg = AgentConfig(model=str(tiny_model_dir), adapter=str(out), engine="transformers", dtype="float32", device="cpu")
    with pytest.raises(ThinksearchError, match=r"was trained on a different base model \(.*hidden_size 896 vs 32"):
        load_engine(cfg)


def test_config_errors_name_the_flag():
    with pytest.raises(ThinksearchError, match="--base-url"):
        AgentConfig(engine="openai")
    with pytest.raises(ThinksearchError, match="--adapter"):
        AgentConfig(engine="llamacpp", adapter="x")
    with pytest.raises(ThinksearchError, match="--max-rounds"):
        AgentConfig(max_rounds=0)
    with pytest.raises(ThinksearchError, match="--max-new-tokens"):
        AgentConfig(max_new_tokens=5000, context_tokens=4096)
