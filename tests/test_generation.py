"""Batched generation with the tiny model: order kept, stops honoured, batch = one at a time."""

from __future__ import annotations

import threading

from thinksearch import format as fmt
from thinksearch.generation import Sampling, finish, generate, stream


def prompts(tokenizer, questions):
    return [fmt.render(tokenizer, fmt.prompt_messages(q), add_generation_prompt=True) for q in questions]


def test_batched_equals_one_at_a_time_under_greedy(tiny):
    model, tok = tiny
    ps = prompts(tok, ["天气？", "一个很长很长的问题，关于正方形的面积和周长的比例关系？", "价格"])
    s = Sampling(max_new_tokens=12)
    batched = generate(model, tok, ps, s, batch_size=8)
    single = [generate(model, tok, [p], s, batch_size=1)[0] for p in ps]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.completion_tokens <= 12 and c.prompt_tokens > 0 for c in batched)


def test_length_finish_and_sampling_seed(tiny):
    model, tok = tiny
    ps = prompts(tok, ["问题"])
    a = generate(model, tok, ps, Sampling(max_new_tokens=5, temperature=1.0, seed=3), stop=())
    b = generate(model, tok, ps, Sampling(max_new_tokens=5, temperature=1.0, seed=3), stop=())
    assert a[0].text == b[0].text
    if a[0].completion_tokens == 5:
        assert a[0].finish_reason == "length"


def test_finish_cuts_at_stop_and_end_of_turn(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = tok("<thinking>\nx\n</thinking>\n<tool_call>\n{}\n</tool_call>trailing", add_special_tokens=False)["input_ids"]
    text, reason, n = finish(tok, ids, ["</tool_call>"])
    assert text.endswith("</tool_call>") and reason == "stop"
    ids = tok("答案", add_special_tokens=False)["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    text, reason, n = finish(tok, ids, ["</tool_call>"])
    assert (text, reason, n) == ("答案", "stop", len(ids) - 1)
    text, reason, _ = finish(tok, tok("答案", add_special_tokens=False)["input_ids"], [])
    assert reason == "length"


def test_stream_yields_the_same_text_and_can_be_cancelled(tiny):
    model, tok = tiny
    (p,) = prompts(tok, ["你好"])
    s = Sampling(max_new_tokens=10)
    whole = generate(model, tok, [p], s, stop=())[0].text
    assert "".join(stream(model, tok, p, s, stop=())).strip() == whole.replace("<|im_end|>", "").strip()
    cancel = threading.Event()
    cancel.set()
    assert len("".join(stream(model, tok, p, Sampling(max_new_tokens=200), cancel=cancel))) < len(whole) + 50
