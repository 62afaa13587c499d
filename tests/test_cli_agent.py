"""`thinksearch ask` / `chat` from the command line: streaming display, JSON, one-line errors,
and an interactive session driven through a pseudo-terminal (Ctrl-C stops an answer only)."""

from __future__ import annotations

import io
import json
import os
import select
import sys
import time

import pytest
from fake_engines import FailingSearch, FixedSearch, ScriptedEngine, answer, call

from thinksearch import agent as agent_mod
from thinksearch import cli, terminal
from thinksearch.agent import Agent
from thinksearch.config import AgentConfig


@pytest.fixture()
def scripted_cli(monkeypatch, tiny_tokenizer):
    """Make the CLI load a scripted engine and a given search backend."""
    state = {}

    def use(script, backend=None):
        state["engine"] = ScriptedEngine(tiny_tokenizer, script)
        state["backend"] = backend or FixedSearch()
        monkeypatch.setattr(agent_mod, "load_engine", lambda cfg, note=None: state["engine"])
        monkeypatch.setattr(agent_mod, "open_backend", lambda cfg, warn=None: state["backend"])
        return state

    return use


def test_ask_streams_thinking_call_results_answer(scripted_cli, capsys):
    scripted_cli([call("比特币价格 今日", "这个问题需要实时数据。"), answer("约6万美元[1]。", "根据结果。")])
    assert cli.main(["ask", "今天比特币的价格是多少？"]) == 0
    out = capsys.readouterr().out
    order = [out.index(s) for s in ("这个问题需要实时数据。", "比特币价格 今日", "results (1)", "比特币今日约6万美元", "根据结果。", "约6万美元[1]。")]
    assert order == sorted(order)
    assert "<tool_call>" not in out and "<thinking>" not in out
    assert "(2 rounds, 1 search," in out


def test_thinking_is_dimmed_and_panels_are_titled(tiny_tokenizer):
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, color_system="standard", width=80)
    a = Agent(ScriptedEngine(tiny_tokenizer, [call("天气", "想一想"), answer("晴", "好")]), FixedSearch(), AgentConfig())
    terminal.ask(a, "天气？", console)
    out = buf.getvalue()
    assert "\x1b[2m想一想" in out or "\x1b[2m想" in out  # dim
    assert "search" in out and "results (1)" in out and "晴" in out


def test_ask_json(scripted_cli, capsys):
    scripted_cli([call("北京 天气"), answer("晴。")])
    assert cli.main(["ask", "北京天气？", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["answer"] == "晴。" and d["stop_reason"] == "answer" and d["question"] == "北京天气？"
    assert d["rounds"][0]["tool_calls"][0]["query"] == "北京 天气"
    assert {"prompt_tokens", "completion_tokens", "seconds", "first_token_s", "engine"} <= set(d)


def test_ask_json_with_the_tiny_model(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setattr(agent_mod, "open_backend", lambda cfg, warn=None: FixedSearch())
    rc = cli.main(["ask", "你好", "--model", str(tiny_model_dir), "--engine", "transformers", "--dtype", "float32",
                   "--device", "cpu", "--max-new-tokens", "6", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["rounds"][0]["completion_tokens"] <= 6 and d["engine"].startswith("transformers (float32")


def test_failing_search_shown_and_told(scripted_cli, capsys):
    state = scripted_cli([call("比特币价格"), answer("搜索失败，无法给出最新价格。")], FailingSearch())
    assert cli.main(["ask", "今天比特币的价格是多少？"]) == 0
    out = capsys.readouterr().out
    assert "search failed" in out and "搜索失败：searxng at http://127.0.0.1:9 did not answer" in out
    assert "不要编造搜索结果" in state["engine"].seen[1][-1]["content"]


def test_malformed_call_message(scripted_cli, capsys):
    bad = '<tool_call>\n{"name": "search", "arguments": {"query": "a"},}\n</tool_call>'
    scripted_cli([bad, bad])
    assert cli.main(["ask", "问题"]) == 0
    out = capsys.readouterr().out
    assert "[invalid tool call: invalid JSON: Expecting property name enclosed in double quotes" in out
    assert "[the model's tool call stayed invalid]" in out


def test_adapter_for_another_base(tiny_model_dir, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from tiny import build_model, build_tokenizer

    from thinksearch.models import ADAPTER_META

    out = tmp_path / "adapter"
    get_peft_model(build_model(build_tokenizer()), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(out)
    qwen05 = {"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936}
    (out / ADAPTER_META).write_text(json.dumps({"base_model": "qwen2.5-coder-0.5b-instruct", "base_signature": qwen05}))
    rc = cli.main(["ask", "问题", "--model", str(tiny_model_dir), "--adapter", str(out), "--engine", "transformers"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2
    assert err == (f"error: adapter '{out}' was trained on a different base model (hidden_size 896 vs 32, "
                   "num_hidden_layers 24 vs 2, num_attention_heads 14 vs 4, intermediate_size 4864 vs 64, vocab_size 151936 vs 853)")


@pytest.mark.parametrize("argv, message", [
    (["ask", "q", "--engine", "openai"], "error: --base-url (agent.base_url): the openai engine needs the endpoint's URL, e.g. http://127.0.0.1:8000/v1"),
    (["ask", "q", "--engine", "llamacpp", "--adapter", "a"], "error: --adapter (agent.adapter): the llamacpp engine cannot put a LoRA adapter on the model; serve the adapter at the endpoint (vLLM --lora-modules) or use a merged model"),
    (["ask", "   "], "error: the question is empty"),
    (["ask", "q", "--engine", "llamacpp", "--model", "/nonexistent/dir"], "error: the llamacpp engine needs a GGUF model; '/nonexistent/dir' is not a .gguf file or a prepared offline alias (a tuned model: merge it, then convert the merged directory to GGUF)"),
])
def test_one_line_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip() == message


def test_chat_keeps_history_clears_and_quits(tiny_tokenizer):
    from rich.console import Console

    engine = ScriptedEngine(tiny_tokenizer, reply=lambda m: answer(f"第{sum(x['role'] == 'user' for x in m)}问"))
    a = Agent(engine, FixedSearch(), AgentConfig())
    lines = iter(["第一个问题", "第二个问题", "/clear", "", "/nope", "第三个问题", "/quit", "never read"])

    def read(prompt):
        value = next(lines)
        if value == "":
            raise KeyboardInterrupt  # Ctrl-C at the prompt: a hint, not an exit
        return value

    buf = io.StringIO()
    history = terminal.chat(a, Console(file=buf, width=100), read)
    assert [sum(m["role"] == "user" for m in s) for s in engine.seen] == [1, 2, 1]
    assert engine.seen[1][1]["content"] == "第一个问题" and engine.seen[1][2]["content"].endswith("第1问")
    out = buf.getvalue()
    assert "(conversation cleared)" in out and "unknown command /nope" in out and "/quit leaves" in out
    assert [m["content"] for m in history if m["role"] == "user"] == ["第三个问题"]


def test_chat_budget_drops_oldest(tiny_tokenizer):
    from rich.console import Console

    engine = ScriptedEngine(tiny_tokenizer, reply=lambda m: answer("答" * 40))
    a = Agent(engine, FixedSearch(), AgentConfig(history_tokens=400, max_new_tokens=64, context_tokens=4096))
    lines = iter([f"问题{i} " + "字" * 30 for i in range(8)] + ["/quit"])
    terminal.chat(a, Console(file=io.StringIO()), lambda p: next(lines))
    sizes = [sum(m["role"] == "user" for m in s) for s in engine.seen]
    assert sizes[:2] == [1, 2] and max(sizes) < 8 and sizes[-1] < 8  # old exchanges were dropped


def _read_until(fd, needle, timeout, buf):
    deadline = time.monotonic() + timeout
    while needle not in buf[0]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"did not see {needle!r}; output so far:\n{buf[0][-3000:]}")
        r, _, _ = select.select([fd], [], [], min(left, 0.5))
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            buf[0] += data.decode("utf-8", "replace")
    return buf[0]


def test_chat_in_a_terminal_ctrl_c_stops_the_answer_not_the_session(tiny_model_dir, tmp_path):
    import pty

    args = [sys.executable, "-m", "thinksearch", "chat", "--model", str(tiny_model_dir), "--engine", "transformers",
            "--dtype", "float32", "--device", "cpu", "--max-new-tokens", "3000", "--context-tokens", "4000"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "THINKSEARCH_HOME": str(tmp_path), "COLUMNS": "200", "NO_COLOR": "1"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pseudo-terminal is its controlling terminal
        os.execve(sys.executable, args, env)
    buf = [""]
    try:
        _read_until(fd, "> ", 120, buf)
        os.write(fd, "你好\r".encode())
        start = len(buf[0])
        deadline = time.monotonic() + 60
        while len(buf[0]) < start + 40 and time.monotonic() < deadline:  # the answer is streaming
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                buf[0] += os.read(fd, 65536).decode("utf-8", "replace")
        os.write(fd, b"\x03")  # Ctrl-C
        _read_until(fd, "[stopped]", 60, buf)
        _read_until(fd, "> ", 30, buf)
        os.write(fd, b"/quit\r")
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, buf[0][-2000:]
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    buf[0] += os.read(fd, 65536).decode("utf-8", "replace")
                except OSError:
                    pass
        assert os.waitstatus_to_exitcode(status) == 0, buf[0][-2000:]
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
    assert "Traceback" not in buf[0]


def test_yaml_sections_and_flags(tmp_path, monkeypatch, scripted_cli, capsys):
    from thinksearch.config import ServeConfig, build

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("agent:\n  max_rounds: 2\n  search: {k: 3}\nserve:\n  port: 9001\n  run_tools: true\n", encoding="utf-8")
    seen = {}
    state = scripted_cli([answer("好")])
    monkeypatch.setattr(agent_mod, "load_engine", lambda cfg, note=None: (seen.setdefault("cfg", cfg), state["engine"])[1])
    assert cli.main(["ask", "q", "--config", str(cfg_file), "--max-new-tokens", "99", "--json"]) == 0
    cfg = seen["cfg"]
    assert (cfg.max_rounds, cfg.search.k, cfg.max_new_tokens) == (2, 3, 99)
    s = build(ServeConfig, cfg_file, "serve", {})
    assert (s.port, s.run_tools, s.host) == (9001, True, "127.0.0.1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  max_round: 2\n", encoding="utf-8")
    assert cli.main(["ask", "q", "--config", str(bad)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: unknown key 'agent.max_round' (allowed: model, adapter,")
