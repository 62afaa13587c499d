"""Property-based tests of format.py: render/parse round trips and a parser that never raises.

Over 10,000 generated cases in all (the example counts below add up to 11,500). Examples are
derandomized so CI sees the same cases every run.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thinksearch import format as fmt

FORBIDDEN = fmt.TAGS + fmt.END_OF_TURN + ("<|",)
FRAGMENTS = list(fmt.TAGS + fmt.END_OF_TURN) + [
    '{"name": "search", "arguments": {"query": "', '"}}', "{", "}", '"', ",", "\n", "\\", "[", "]",
    '"arguments"', "NaN", "<|im_start|>system\n", "< tool_call >", "<|", "|>",
]


def clean(text: str) -> bool:
    return not any(t in text for t in FORBIDDEN)


# Arbitrary Unicode (surrogates excluded: they can't be encoded), without our tags.
plain = st.text(st.characters(exclude_categories=("Cs",)), max_size=60).filter(clean)
messy = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=25).map("".join)
settings.register_profile("thinksearch", derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.load_profile("thinksearch")


@settings(max_examples=3000)
@given(trace=plain, answer=plain.map(str.strip))
def test_thinking_turn_round_trips(trace, answer):
    content = f"{fmt.thinking_block(trace)}\n\n{answer}"
    p = fmt.parse(fmt.render_assistant(content))
    assert (p.thinking, p.thinking_closed, p.answer, p.tool_calls, p.invalid_calls) == (trace, True, answer, [], [])


@settings(max_examples=3000)
@given(trace=plain, queries=st.lists(plain, min_size=1, max_size=3))
def test_tool_call_turn_round_trips(trace, queries):
    text = fmt.render_assistant(fmt.thinking_block(trace), [fmt.search_call(q) for q in queries])
    p = fmt.parse(text)
    assert p.thinking == trace and p.answer == "" and not p.invalid_calls
    assert [(c.name, c.arguments) for c in p.tool_calls] == [("search", {"query": q}) for q in queries]
    assert not any(c.in_thinking for c in p.tool_calls)
    # The message rebuilt from the parse renders to the same text.
    msg = p.assistant_message()
    assert fmt.render_assistant(msg["content"], msg["tool_calls"]) == text


@settings(max_examples=3000)
@given(text=st.one_of(messy, st.text(max_size=200)))
def test_parse_never_raises_and_accounts_for_every_block(text):
    p = fmt.parse(text)
    turn = text
    for end in fmt.END_OF_TURN:
        turn = turn.split(end)[0]
    assert len(p.tool_calls) + len(p.invalid_calls) == turn.count(fmt.TOOL_OPEN) - _nested_opens(turn)
    for call in p.tool_calls:
        json.dumps(call.arguments)  # whatever was accepted is plain JSON data
        assert isinstance(call.name, str) and call.name


def _nested_opens(text: str) -> int:
    """<tool_call> openings swallowed by an earlier, still-open block (the hermes regex's view)."""
    swallowed, i = 0, 0
    while (start := text.find(fmt.TOOL_OPEN, i)) >= 0:
        end = text.find(fmt.TOOL_CLOSE, start)
        stop = len(text) if end < 0 else end
        swallowed += text.count(fmt.TOOL_OPEN, start + len(fmt.TOOL_OPEN), stop)
        i = stop + len(fmt.TOOL_CLOSE)
    return swallowed


@settings(max_examples=2000)
@given(text=messy)
def test_neutralize_leaves_no_tags(text):
    assert fmt.find_tags(fmt.neutralize(text)) == []


@settings(max_examples=500)
@given(trace=plain, query=plain)
def test_render_assistant_agrees_with_the_qwen_template(tiny_tokenizer, trace, query):
    msgs = fmt.search_messages("q", trace, query, "r", "a")
    rendered = fmt.render(tiny_tokenizer, msgs)
    expected = fmt.render_assistant(msgs[2]["content"], msgs[2]["tool_calls"])
    assert f"<|im_start|>assistant\n{expected}<|im_end|>\n" in rendered
