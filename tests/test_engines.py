"""The OpenAI-compatible engine against real HTTP servers on 127.0.0.1: a completions
endpoint that drops the stop string (as vLLM and llama.cpp do), and thinksearch's own server
through the chat API."""

from __future__ import annotations

import json
import math

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fake_engines import FixedSearch, ScriptedEngine, ServerThread, answer, call

from thinksearch import format as fmt
from thinksearch import steer
from thinksearch.agent import Agent, OpenAIEngine, build_messages
from thinksearch.config import AgentConfig, ServeConfig
from thinksearch.errors import ThinksearchError
from thinksearch.format import DECISION_LINES
from thinksearch.generation import Completion, Sampling
from thinksearch.serve import create_app


def completions_app(texts, seen, top_logprobs=None):
    """A minimal completions endpoint: scripted texts, cut before the stop string; asked for
    log-probabilities, it reports ``top_logprobs`` (text to log-probability) in the legacy shape."""

    app = FastAPI()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "served-x", "object": "model", "created": 0, "owned_by": "t"}]}

    @app.post("/v1/completions")
    async def complete(request: Request):
        body = await request.json()
        seen.append(body)
        if body.get("logprobs"):
            first = max(top_logprobs, key=top_logprobs.get)
            logprobs = {"tokens": [first], "token_logprobs": [top_logprobs[first]], "top_logprobs": [top_logprobs], "text_offset": [0]}
            return {"id": "c", "object": "text_completion", "created": 0, "model": body["model"], "usage": None,
                    "choices": [{"index": 0, "text": first, "finish_reason": "length", "logprobs": logprobs}]}
        text = texts.pop(0)
        for s in body.get("stop") or []:
            text = text.split(s, 1)[0]
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        base = {"id": "c", "object": "text_completion", "created": 0, "model": body["model"]}
        if not body.get("stream"):
            return {**base, "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}], "usage": usage}

        def events():
            for i in range(0, len(text), 4):
                yield "data: " + json.dumps({**base, "choices": [{"index": 0, "text": text[i:i + 4], "finish_reason": None}]}) + "\n\n"
            yield "data: " + json.dumps({**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}) + "\n\n"
            yield "data: " + json.dumps({**base, "choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.mark.parametrize("streaming", [False, True])
def test_completions_endpoint_gets_the_rendered_prompt_and_the_stop_is_restored(tiny_tokenizer, streaming):
    seen = []
    with ServerThread(completions_app([call("比特币价格"), answer("约6万美元[1]。")], seen)) as s:
        engine = OpenAIEngine(s.url + "/v1", tiny_tokenizer)
        assert engine.served_model == "served-x"
        backend = FixedSearch()
        a = Agent(engine, backend, AgentConfig(max_new_tokens=64))
        r = a.ask("今天比特币的价格是多少？", **({"on_event": lambda e: None} if streaming else {}))
    assert backend.queries == ["比特币价格"] and r.answer == "约6万美元[1]。"
    assert r.rounds[0].raw.endswith(fmt.TOOL_CLOSE)  # put back after the endpoint dropped it
    assert seen[0]["prompt"] == fmt.render(tiny_tokenizer, build_messages("今天比特币的价格是多少？"), add_generation_prompt=True)
    assert seen[0]["stop"] == [fmt.TOOL_CLOSE] and seen[0]["max_tokens"] == 64 and seen[0]["model"] == "served-x"
    assert "tools" not in seen[0]  # the system prompt describes the tool; tools would rewrite it
    assert r.rounds[0].prompt_tokens == 7 and r.rounds[0].completion_tokens == 3


def test_chat_api_against_thinksearch_serve(tiny_tokenizer):
    inner = ScriptedEngine(tiny_tokenizer, [call("北京 天气", "要查。"), answer("晴[1]。", "看结果。")])
    with ServerThread(create_app(Agent(inner, FixedSearch(), AgentConfig()), ServeConfig())) as s:
        engine = OpenAIEngine(s.url + "/v1", None, api="chat")
        backend = FixedSearch()
        r = Agent(engine, backend, AgentConfig()).ask("北京天气？")
        assert backend.queries == ["北京 天气"] and r.answer == "晴[1]。" and r.thinking == "看结果。"
        assert fmt.parse(r.rounds[0].raw).thinking == "要查。"
        # The endpoint got the call back with its arguments and the results as a tool message.
        second = inner.seen[1]
        assert second[2]["tool_calls"][0]["function"]["arguments"] == {"query": "北京 天气"}
        assert second[3]["role"] == "tool" and second[3]["content"] == fmt.render_results(backend.results, 300, 1500)
        pieces = list(engine.stream(build_messages("再问"), Sampling(max_new_tokens=50)))
        assert isinstance(pieces[-1], Completion) and pieces[-1].text == "".join(pieces[:-1])


def test_endpoint_errors_are_one_line(tiny_tokenizer):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ThinksearchError, match=rf"^cannot reach the endpoint http://127.0.0.1:{port}/v1 .*is the server running\?$"):
        OpenAIEngine(f"http://127.0.0.1:{port}/v1", tiny_tokenizer)
    agent = Agent(ScriptedEngine(tiny_tokenizer), FixedSearch(), AgentConfig())
    with ServerThread(create_app(agent, ServeConfig(), key="k-test")) as s:
        with pytest.raises(ThinksearchError, match="refused the API key"):
            OpenAIEngine(s.url + "/v1", tiny_tokenizer)
        engine = OpenAIEngine(s.url + "/v1", None, api="chat", api_key="k-test", served_model="nope")
        with pytest.raises(ThinksearchError, match="answered 404: .*'nope' does not exist"):
            engine.generate([build_messages("x")], Sampling())
    with pytest.raises(ThinksearchError, match="needs a tokenizer"):
        OpenAIEngine("http://127.0.0.1:1/v1", None)


@pytest.mark.parametrize(("penalty", "body"), [(1.0, None), (1.1, {"repetition_penalty": 1.1})])
def test_repetition_penalty_reaches_the_endpoint_only_when_set(tiny_tokenizer, penalty, body):
    seen = []
    with ServerThread(completions_app([answer("好。")], seen)) as s:
        engine = OpenAIEngine(s.url + "/v1", tiny_tokenizer)
        Agent(engine, FixedSearch(), AgentConfig(max_new_tokens=16, repetition_penalty=penalty)).ask("你好")
    got = {k: v for k, v in seen[0].items() if "penalty" in k}
    assert got == (body or {})


def test_llamacpp_names_the_penalty_its_own_way():
    # llama.cpp's server reads repeat_penalty (and ignores repetition_penalty).
    from thinksearch.engines.llamacpp import LlamaCppEngine

    engine = object.__new__(LlamaCppEngine)
    engine.served_model = "m"
    assert engine._params(Sampling(repetition_penalty=1.1))["extra_body"] == {"repeat_penalty": 1.1}
    assert "extra_body" not in engine._params(Sampling())


def test_the_decision_is_read_from_an_endpoints_top_logprobs(tiny_tokenizer):
    s = steer.steering(tiny_tokenizer, 0.0)
    texts = {k: tiny_tokenizer.decode([t]) for k, t in s.tokens.items()}
    # The no-search line is the likeliest single token; the two search lines together outweigh it.
    top = {texts["thinking"]: math.log(0.35), texts["search"]: math.log(0.3), texts["knowledge"]: math.log(0.25), "嗯": math.log(0.1)}
    seen = []
    with ServerThread(completions_app([call("金价")], seen, top)) as srv:
        engine = OpenAIEngine(srv.url + "/v1", tiny_tokenizer)
        got = engine.next_logprobs([build_messages("金价？")], list(s.tokens.values()))
        assert got == [{s.tokens[k]: pytest.approx(top[texts[k]]) for k in texts}]
        assert seen[0]["max_tokens"] == 1 and seen[0]["logprobs"] == OpenAIEngine.TOP_LOGPROBS
        r = Agent(engine, FixedSearch(), AgentConfig(decision_shift=0.1, max_new_tokens=64, max_rounds=1)).ask("今天金价多少？")
    assert r.rounds[0].raw.startswith(f"<thinking>\n{DECISION_LINES['search']}\n") and r.rounds[0].decision_shift == 0.1
    assert seen[-1]["prompt"].endswith(f"<thinking>\n{DECISION_LINES['search']}\n")


def test_llamacpps_logprobs_name_their_token_ids():
    from thinksearch.engines.openai import _top_logprobs

    reported = {"content": [{"id": 7, "token": "靠", "logprob": -0.5,
                             "top_logprobs": [{"id": 7, "token": "靠", "logprob": -0.5}, {"id": 9, "token": "要", "logprob": -1.5}]}]}
    assert _top_logprobs(reported) == reported["content"][0]["top_logprobs"]
    assert _top_logprobs(None) == [] and _top_logprobs({"content": None, "top_logprobs": None}) == []
