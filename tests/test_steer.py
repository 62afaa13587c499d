"""The decision shift (thinksearch.steer): where the decision lines part, the calibration, and the
agent opening a first turn with the line the shifted token starts, in every engine."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter

import pytest
from fake_engines import FixedSearch, ScriptedEngine
from test_gguf_cache import make_adapter

from thinksearch import format as fmt
from thinksearch import steer
from thinksearch.agent import Agent, build_messages
from thinksearch.config import AgentConfig, EvalConfig
from thinksearch.errors import ConfigError, ThinksearchError
from thinksearch.evaluate.evalset import EvalItem
from thinksearch.format import DECISION_LINES


def _items():
    return [EvalItem("s1", "search", "今天比特币的价格是多少？", category="prices"),
            EvalItem("t1", "thinking", "如果一个正方形的面积是另一个正方形面积的4倍，那么它们的周长比是多少？", category="arithmetic"),
            EvalItem("k1", "thinking", "为什么天空是蓝色的？", category="science")]


def opened_with(text: str) -> str | None:
    return next((k for k, line in DECISION_LINES.items() if text.startswith(f"<thinking>\n{line}\n")), None)


def test_the_shared_tokens_end_where_the_lines_part(tiny_tokenizer):
    prompt = fmt.render(tiny_tokenizer, build_messages("北京明天天气怎么样？"), add_generation_prompt=True)
    shared, heads = steer.decision_tokens(tiny_tokenizer, prompt)
    assert set(heads) == set(DECISION_LINES) and len(set(heads.values())) == len(heads)
    for kind, line in DECISION_LINES.items():
        own = tiny_tokenizer(prompt + "<thinking>\n" + line, add_special_tokens=False)["input_ids"]
        assert own[:len(shared) + 1] == shared + [heads[kind]]


def test_padded_batch_scores_each_question_as_it_would_score_alone(tiny):
    import torch

    model, tok = tiny
    items = _items()
    batched = steer.margins(model, tok, items, batch_size=3)  # prompts of three lengths, left-padded
    for it, got in zip(items, batched):
        prompt = fmt.render(tok, build_messages(it.question), add_generation_prompt=True)
        shared, heads = steer.decision_tokens(tok, prompt)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([shared])).logits[0, -1].float(), dim=-1)
        for kind, t in heads.items():
            assert got["logp"][kind] == pytest.approx(float(logp[t]), abs=2e-3)
        summed = math.log(math.exp(got["logp"]["search"]) + math.exp(got["logp"]["knowledge"]))
        assert got["margin"] == pytest.approx(summed - got["logp"]["thinking"], abs=1e-3)


def _logp(s: steer.Steering, **p: float) -> dict[int, float]:
    return {s.tokens[k]: math.log(v) for k, v in p.items()}


def test_steering_sums_the_search_lines_and_opens_with_the_whole_line(tiny_tokenizer):
    s = steer.steering(tiny_tokenizer, 0.0)
    assert s.prefix.startswith("<thinking>\n") and all(f"<thinking>\n{line}".startswith(s.prefix) for line in DECISION_LINES.values())
    prompt = fmt.render(tiny_tokenizer, build_messages("？"), add_generation_prompt=True)
    assert s.tokens == steer.decision_tokens(tiny_tokenizer, prompt)[1]
    # The no-search line is the likeliest single line, but the two search lines together outweigh it.
    split = _logp(s, thinking=0.40, search=0.25, knowledge=0.35)
    assert s.choose(split) == f"<thinking>\n{DECISION_LINES['knowledge']}\n"
    assert steer.margin({"thinking": math.log(0.4), "search": math.log(0.25), "knowledge": math.log(0.35)}) == pytest.approx(math.log(1.5))
    leaning = _logp(s, thinking=0.55, search=0.30, knowledge=0.15)
    assert s.choose(leaning) == f"<thinking>\n{DECISION_LINES['thinking']}\n"
    # The shift is on log-odds of searching: log(0.45/0.55) = -0.2; +0.3 tips it.
    assert dataclasses.replace(s, shift=0.3).choose(leaning) == f"<thinking>\n{DECISION_LINES['search']}\n"
    assert s.choose({}) == ""  # no line's token reported: the turn goes on unsteered
    assert s.choose(_logp(s, search=0.01)) == f"<thinking>\n{DECISION_LINES['search']}\n"


def test_a_sampled_decision_draws_the_lines_with_the_shift():
    import random

    s = steer.Steering(1.0, "<thinking>\n这个问题", {"thinking": 1, "search": 2, "knowledge": 3}, 20)
    rng = random.Random(0)
    drawn = Counter(s.choose(_logp(s, thinking=0.5, search=0.25, knowledge=0.25), 1.0, rng) for _ in range(4000))
    # p(no search) = 0.5 / (0.5 + 0.5e) = 0.27 with a shift of 1
    assert drawn[f"<thinking>\n{DECISION_LINES['thinking']}\n"] / 4000 == pytest.approx(1 / (1 + math.e), abs=0.03)
    assert set(drawn) == {f"<thinking>\n{line}\n" for line in DECISION_LINES.values()}


def test_the_shift_is_the_best_recall_minus_false_searches():
    scored = [("fresh_data", 0.5), ("fresh_data", -0.35), ("fresh_data", -2.0),
              ("reasoning", -3.0), ("reasoning", -0.9), ("knowledge", 0.0)]
    # 0.4 takes the second fresh question; 0.9 would take a reasoning one with the same gain lost.
    assert steer.best_shift(scored) == 0.4
    assert steer.searched(scored, 0.4) == {"fresh_data": (2, 3), "reasoning": (0, 2), "knowledge": (1, 1)}
    # A seed that searches a reasoning question is shifted down, as little as it takes.
    assert steer.best_shift([("fresh_data", 2.0), ("fresh_data", 1.5), ("reasoning", 0.3), ("reasoning", -1.0)]) == -0.3
    with pytest.raises(ThinksearchError, match="needs fresh-data and reasoning questions; got 3 and 0"):
        steer.best_shift([s for s in scored if s[0] != "reasoning"])


def test_a_broken_calibration_file_names_itself(tmp_path):
    assert steer.saved_shift(None) is None and steer.saved_shift(tmp_path) is None
    (tmp_path / "decision.json").write_text('{"shift": 0.7}', encoding="utf-8")
    assert steer.saved_shift(tmp_path) == 0.7
    (tmp_path / "decision.json").write_text('{"margins": []}', encoding="utf-8")
    with pytest.raises(ThinksearchError, match=r"decision.json is not a calibration file .* rerun thinksearch calibrate"):
        steer.saved_shift(tmp_path)


@pytest.mark.parametrize("value", [11, float("nan"), -10.5])
def test_a_shift_out_of_range_names_the_flag(value):
    with pytest.raises(ConfigError, match="decision-shift"):
        AgentConfig(decision_shift=value)
    with pytest.raises(ConfigError, match="decision-shift"):
        EvalConfig(decision_shift=value)


def test_calibration_leaves_out_the_training_questions_and_writes_the_shift(tmp_path, tiny_model_dir):
    pools = [tmp_path / "search.jsonl", tmp_path / "thinking.jsonl"]
    pools[0].write_text("".join(json.dumps({"id": f"s{i}", "type": "search", "question": q, "category": "prices"},
                                           ensure_ascii=False) + "\n"
                                for i, q in enumerate(["黄金价格每克多少钱？", "比特币现在多少钱？", "今天油价多少？"])), encoding="utf-8")
    pools[1].write_text("".join(json.dumps({"id": f"t{i}", "type": "thinking", "question": q, "category": c}, ensure_ascii=False) + "\n"
                                for i, (q, c) in enumerate([("12乘以13等于多少？", "arithmetic"), ("3的平方是多少？", "arithmetic"),
                                                            ("水的化学式是什么？", "science")])), encoding="utf-8")
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"type": "search", "messages": [{"role": "system", "content": "…"},
                                                               {"role": "user", "content": "比特币现在多少钱？"}]},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    items = steer.calibration_items(pools, data, per_kind=1, seed=3)
    assert sorted(it.type for it in items) == ["search", "thinking"]
    items = steer.calibration_items(pools, [data], per_kind=5)
    # the trained question and the knowledge one are left out
    assert {it.question for it in items} == {"黄金价格每克多少钱？", "今天油价多少？", "12乘以13等于多少？", "3的平方是多少？"}
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=3)
    record = steer.calibrate(adapter, str(tiny_model_dir), items, per_kind=5, batch_size=3)
    assert steer.calibrated(adapter, 5) == record and steer.calibrated(adapter, 6) is None
    saved = json.loads((adapter / "decision.json").read_text(encoding="utf-8"))
    assert saved == record and steer.saved_shift(adapter) == record["shift"]
    assert 0 <= record["shift"] <= steer.MAX_SHIFT and record["questions"] == 4
    assert {m["id"] for m in record["margins"]} == {it.id for it in items}
    scored = [(m["kind"], m["margin"]) for m in record["margins"]]
    assert record["shift"] == steer.best_shift(scored)
    assert record["shifted"]["fresh_data"]["k"] == steer.searched(scored, record["shift"])["fresh_data"][0]


def _first_turns(agent: Agent, questions: list[str]) -> list[str]:
    results = agent.run_batch([build_messages(q) for q in questions], max_new_tokens=24)
    return [r.rounds[0].raw for r in results]


SEARCH_LINES = {"search", "knowledge"}
QUESTIONS = ["今天比特币的价格是多少？", "12乘以13等于多少？"]


def test_transformers_opens_with_the_shifted_line(tiny):
    from thinksearch.engines import TransformersEngine

    model, tok = tiny
    agent = Agent(TransformersEngine(model, tok), FixedSearch(), AgentConfig(decision_shift=10.0, max_rounds=1))
    for r in agent.run_batch([build_messages(q) for q in QUESTIONS], max_new_tokens=40):
        assert opened_with(r.rounds[0].raw) in SEARCH_LINES and r.rounds[0].decision_shift == 10.0
        assert r.rounds[0].completion_tokens <= 40  # the line counts against the turn's limit
    agent = Agent(TransformersEngine(model, tok), FixedSearch(), AgentConfig(decision_shift=-10.0, max_rounds=1))
    for r in agent.run_batch([build_messages(q) for q in QUESTIONS], max_new_tokens=40):
        assert opened_with(r.rounds[0].raw) == "thinking" and r.rounds[0].decision_shift == -10.0


def test_llamacpp_opens_with_the_shifted_line(tiny, tmp_path):
    pytest.importorskip("xllamacpp")
    from test_gguf_export import reference_gguf

    from thinksearch.engines import LlamaCppEngine

    model, tok = tiny
    gguf = reference_gguf(model, tok, tmp_path / "tiny.gguf")
    engine = LlamaCppEngine(gguf, tok, context_length=512, parallel=2)
    try:
        agent = Agent(engine, FixedSearch(), AgentConfig(decision_shift=10.0, max_rounds=1))
        assert {opened_with(t) for t in _first_turns(agent, QUESTIONS)} <= SEARCH_LINES
        agent = Agent(engine, FixedSearch(), AgentConfig(decision_shift=-10.0, max_rounds=1))
        assert not {opened_with(t) for t in _first_turns(agent, QUESTIONS)} & SEARCH_LINES
    finally:
        engine.close()


@pytest.mark.parametrize("shift", [0.7, 0.0])
def test_the_adapters_calibrated_shift_steers_ask_and_stream(tiny_tokenizer, tmp_path, shift):
    # A calibration that chose 0 steers too: the decision is still taken on the summed search lines.
    (tmp_path / "decision.json").write_text(json.dumps({"shift": shift}), encoding="utf-8")
    s = steer.steering(tiny_tokenizer, shift)

    def reply(messages):
        last = messages[-1]
        if last["role"] == "tool":  # the second turn is not steered
            return "金价约800元。"
        assert last["role"] == "assistant" and last["content"] == f"<thinking>\n{DECISION_LINES['knowledge']}\n"
        return "金价每天都在变。\n</thinking>\n" + fmt.TOOL_OPEN + '\n{"name": "search", "arguments": {"query": "金价"}}\n' + fmt.TOOL_CLOSE

    asked = []

    def logprobs(messages):
        asked.append(messages[-1])
        return _logp(s, thinking=0.4, search=0.25, knowledge=0.35)

    engine = ScriptedEngine(tiny_tokenizer, reply=reply)
    engine.logprobs = logprobs
    agent = Agent(engine, FixedSearch(), AgentConfig(model=f"qwen+{tmp_path}", max_rounds=2))
    events = []
    result = agent.run(build_messages("今天金价多少？"), on_event=events.append)
    assert result.rounds[0].raw.startswith(f"<thinking>\n{DECISION_LINES['knowledge']}\n金价每天都在变。")
    assert result.rounds[0].decision_shift == shift and result.rounds[0].tool_calls[0].query == "金价"
    shown = "".join(e.text for e in events if e.kind == "thinking")
    assert shown.startswith(DECISION_LINES["knowledge"])
    assert asked == [{"role": "assistant", "content": s.prefix}] and len(engine.prompts) == 2  # one decision, two turns
    assert result.answer == "金价约800元。"
    # --decision-shift 0 turns steering off: the model's own first token.
    assert Agent(engine, FixedSearch(), AgentConfig(model=f"qwen+{tmp_path}", decision_shift=0)).steering is None


def test_the_chat_api_cannot_be_shifted(tmp_path):
    class NoTokenizer(ScriptedEngine):
        tokenizer = None

        def __init__(self):
            pass

    with pytest.raises(ThinksearchError, match="--endpoint-api completions, or --decision-shift 0"):
        Agent(NoTokenizer(), FixedSearch(), AgentConfig(decision_shift=1.0))  # type: ignore[arg-type]


def test_the_eval_takes_each_models_calibrated_shift(tmp_path):
    from thinksearch.evaluate.agentic import model_shift

    (tmp_path / "decision.json").write_text('{"shift": 1.3}', encoding="utf-8")
    assert model_shift(EvalConfig(agent=True), str(tmp_path)) == 1.3
    assert model_shift(EvalConfig(agent=True), None) is None
    assert model_shift(EvalConfig(agent=True, decision_shift=0), str(tmp_path)) is None
    assert model_shift(EvalConfig(agent=False), str(tmp_path)) is None  # the first turn alone is not steered
    # A calibration that chose 0 still steers: the decision is taken on the summed search lines.
    (tmp_path / "decision.json").write_text('{"shift": 0.0}', encoding="utf-8")
    assert model_shift(EvalConfig(agent=True), str(tmp_path)) == 0.0


def test_an_eval_without_the_agent_says_the_calibrated_shift_is_not_applied(tmp_path):
    from thinksearch.evaluate.agentic import unapplied_shift_note

    (tmp_path / "decision.json").write_text('{"shift": -1.1}', encoding="utf-8")
    note = unapplied_shift_note(EvalConfig(agent=False), "tuned", str(tmp_path))
    assert note == ("tuned: its decision shift -1.1 (--decision-shift, or the adapter's decision.json) applies only "
                    "with --agent; this evaluation scores the unshifted first turn")
    assert unapplied_shift_note(EvalConfig(agent=True), "tuned", str(tmp_path)) is None
    assert unapplied_shift_note(EvalConfig(agent=False), "base", None) is None
    assert unapplied_shift_note(EvalConfig(agent=False, decision_shift=0), "tuned", str(tmp_path)) is None
    assert "+2" in unapplied_shift_note(EvalConfig(agent=False, decision_shift=2), "base", None)


def test_a_server_that_returns_tool_calls_shifts_its_turns_too(tiny):
    import openai
    from fake_engines import ServerThread

    from thinksearch.config import ServeConfig
    from thinksearch.engines import TransformersEngine
    from thinksearch.serve import create_app

    model, tok = tiny
    agent = Agent(TransformersEngine(model, tok), FixedSearch(), AgentConfig(decision_shift=10.0, max_new_tokens=24))
    with ServerThread(create_app(agent, ServeConfig(max_tokens_limit=32))) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        messages = [{"role": "user", "content": "今天比特币的价格是多少？"}]
        r = c.chat.completions.create(model="thinksearch", messages=messages, max_tokens=24)
        said = (r.choices[0].message.model_extra or {}).get("reasoning_content") or r.choices[0].message.content or ""
        assert said.lstrip().startswith(DECISION_LINES["search"]) or said.lstrip().startswith(DECISION_LINES["knowledge"])
        assert r.usage.completion_tokens <= 24
        pieces = c.chat.completions.create(model="thinksearch", messages=messages, max_tokens=24, stream=True)
        streamed = "".join((ch.choices[0].delta.model_extra or {}).get("reasoning_content") or ch.choices[0].delta.content or ""
                           for ch in pieces if ch.choices)
        assert streamed.lstrip().startswith(said.lstrip()[:10])
