"""Teacher backends: the OpenAI-compatible client over real HTTP (faults, retries, bounds,
keys), the local transformers backend with the tiny model, and vLLM's absence."""

from __future__ import annotations

import doctest
import socket

import pytest

from teacher_server import Server
from thinksearch import teacher as teacher_mod
from thinksearch.config import TeacherConfig
from thinksearch.errors import ThinksearchError
from thinksearch.teacher import LocalTeacher, OpenAITeacher, TeacherRequest, split_reasoning
from thinksearch.teacher_choice import make_teacher


def test_module_doctests():
    assert doctest.testmod(teacher_mod).failed == 0


def _cfg(server: Server | None = None, **kw) -> TeacherConfig:
    base = dict(backend="openai", model="scripted", base_url=server.base_url if server else "http://127.0.0.1:9/v1",
                timeout_s=1.0, backoff_s=0.01, backoff_max_s=0.05)
    return TeacherConfig(**{**base, **kw})


def _req(question: str, stage: str = "analysis") -> TeacherRequest:
    prompt = {"analysis": f"请写出思考过程。\n\n问题：{question}", "answer": f"问题：{question}\n\n思考过程：\nx\n\n请回答"}[stage]
    return TeacherRequest([{"role": "user", "content": prompt}], max_tokens=64)


@pytest.fixture()
def server():
    srv = Server(fault_percent=60, timeout_sleep_s=1.5).start()
    yield srv
    srv.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_split_reasoning_variants():
    assert split_reasoning("a</think>b</think>c") == ("a", "b</think>c")  # the leak stays visible to the gates
    assert split_reasoning("  <think>x</think>  ") == ("x", "")
    assert split_reasoning("<think>unclosed") == (None, "<think>unclosed")


def test_faults_are_retried_and_nothing_is_lost(server):
    t = OpenAITeacher(_cfg(server, concurrency=8, max_retries=3))
    try:
        questions = [f"第{i}题：为什么？" for i in range(24)]
        replies = t.generate([_req(q) for q in questions])
    finally:
        t.close()
    assert set(server.injected) == {"500", "429", "timeout", "garbage", "no_choices"}, server.injected
    assert all(r.error is None and r.finish_reason == "stop" for r in replies)
    # Order is kept: each reply is about its own question.
    assert all(q in r.text for q, r in zip(questions, replies))
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in replies)
    assert sum(r.meta["attempts"] for r in replies) == 24 + sum(server.injected.values())


def test_exhausted_retries_come_back_as_an_error_reply(server):
    server.fault_percent = 100
    t = OpenAITeacher(_cfg(server, max_retries=0))
    try:
        (r,) = t.generate([_req("重试用完")])
    finally:
        t.close()
    assert r.finish_reason == "error" and r.error.startswith("failed after 1 attempts: ")


def test_bad_request_is_not_retried(server):
    server.fault_percent = 0
    t = OpenAITeacher(_cfg(server, max_retries=5))
    try:
        (r,) = t.generate([_req("[错误] 一个坏请求")])
    finally:
        t.close()
    assert r.finish_reason == "error" and r.error == "HTTP 400: scripted bad request"
    assert server.requests == 1


def test_concurrency_is_bounded():
    srv = Server(delay_s=0.2).start()
    t = OpenAITeacher(_cfg(srv, concurrency=3))
    try:
        t.generate([_req(f"题{i}") for i in range(9)])
    finally:
        t.close()
        srv.stop()
    assert srv.max_in_flight == 3


def test_reasoning_content_from_the_server_is_used(monkeypatch):
    srv = Server(reasoning_field=True).start()
    t = OpenAITeacher(_cfg(srv))
    try:
        (r,) = t.generate([_req("[R1] 推理题")])
    finally:
        t.close()
        srv.stop()
    assert r.reasoning.startswith("嗯，用户问的是") and r.text == "分析：按条件逐步计算即可。"


def test_api_key_comes_from_the_named_variable_and_is_sent(monkeypatch):
    srv = Server(require_key="sk-test-123").start()
    try:
        monkeypatch.setenv("THINKSEARCH_TEST_KEY", "sk-test-123")
        t = OpenAITeacher(_cfg(srv, api_key_env="THINKSEARCH_TEST_KEY"))
        t.check()
        (r,) = t.generate([_req("有钥匙")])
        t.close()
        assert r.error is None
        monkeypatch.setenv("THINKSEARCH_TEST_KEY", "wrong")
        t = OpenAITeacher(_cfg(srv, api_key_env="THINKSEARCH_TEST_KEY"))
        with pytest.raises(ThinksearchError) as e:
            t.check()
        t.close()
    finally:
        srv.stop()
    assert str(e.value) == f"teacher endpoint {srv.base_url} rejected the key in $THINKSEARCH_TEST_KEY (HTTP 401)"
    assert "wrong" not in str(e.value)


def test_missing_api_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("THINKSEARCH_NO_SUCH_KEY", raising=False)
    with pytest.raises(ThinksearchError) as e:
        make_teacher(_cfg(api_key_env="THINKSEARCH_NO_SUCH_KEY"))
    assert str(e.value).startswith("environment variable THINKSEARCH_NO_SUCH_KEY is not set;")


def test_endpoint_down_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    t = OpenAITeacher(_cfg(base_url=url, max_retries=1))
    try:
        with pytest.raises(ThinksearchError) as e:
            t.check()
        assert str(e.value).startswith(f"teacher endpoint {url} is not reachable (")
        # A server that dies mid-run: requests give up the same way instead of failing row by row.
        with pytest.raises(ThinksearchError) as e:
            t.generate([_req("x")])
        assert str(e.value).startswith(f"teacher endpoint {url} is not reachable (")
    finally:
        t.close()


def test_vllm_absent_is_one_clear_message():
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(ThinksearchError) as e:
        make_teacher(TeacherConfig(backend="vllm"))
    assert str(e.value) == teacher_mod.VLLM_MISSING


def test_local_teacher_batches_through_the_chat_template(tiny):
    model, tok = tiny
    t = LocalTeacher(TeacherConfig(model="tiny", batch_size=4), model=model, tokenizer=tok)
    reqs = [TeacherRequest([{"role": "user", "content": q}], max_tokens=6, temperature=0.0)
            for q in ["天气？", "一个很长很长的问题，关于正方形的面积和周长？", "价格"]]
    batched = t.generate(reqs)
    one_by_one = [t.generate([r])[0] for r in reqs]
    assert [r.text for r in batched] == [r.text for r in one_by_one]
    from thinksearch import format as fmt

    for r, req in zip(batched, reqs):
        prompt = fmt.render(tok, req.messages, add_generation_prompt=True)
        assert r.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
        assert 0 < r.completion_tokens <= 6 and r.finish_reason in ("stop", "length")
    assert t.name == "local:tiny"


def test_config_errors_name_the_flag():
    with pytest.raises(ThinksearchError, match=r"--base-url \(base_url\): must start with http"):
        TeacherConfig(backend="openai", base_url="localhost:8000")
    with pytest.raises(ThinksearchError, match=r"--concurrency \(concurrency\): must be > 0"):
        TeacherConfig(concurrency=0)


def test_generate_works_inside_a_running_event_loop(server):
    """Notebooks run an event loop in the main thread; the teacher's own loop lives elsewhere."""
    import asyncio

    server.fault_percent = 0
    t = OpenAITeacher(_cfg(server))

    async def notebook_cell():
        return t.generate([_req("在笔记本里")])

    try:
        (r,) = asyncio.run(notebook_cell())
    finally:
        t.close()
    assert r.error is None and "在笔记本里" in r.text
