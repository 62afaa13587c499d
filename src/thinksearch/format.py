"""The one place that knows the tags, the system prompt, and how turns are rendered and parsed.

The contract (DESIGN.md section 2): an assistant turn is ``<thinking>\\n…\\n</thinking>``
followed either by the answer or by Hermes-style tool calls, exactly as Qwen2.5's chat
template renders an assistant message with ``tool_calls``::

    <thinking>
    这个问题需要实时数据……
    </thinking>
    <tool_call>
    {"name": "search", "arguments": {"query": "比特币价格 今日"}}
    </tool_call>

Tool-call JSON is always made by :func:`tool_call_json` (``json.dumps``) and read by
:func:`parse`, which follows vLLM's hermes parser (every ``<tool_call>`` block, an
unterminated last one included) but never raises: it reports what it found and what was
invalid. Text from outside (search results) goes through :func:`neutralize` so it can never
carry a tag or a chat-template token into the prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

SYSTEM_PROMPT = """你是一个智能助手，具有以下能力：
1. 对复杂问题进行深入思考，使用<thinking>标签包围你的思考过程
2. 判断是否需要调用网络搜索工具来获取最新信息
3. 处理网络搜索结果并进行分析

当遇到需要最新信息、实时数据或你不确定的事实时，你应该调用search工具。
格式如下：
<tool_call>
{"name": "search", "arguments": {"query": "搜索关键词"}}
</tool_call>

在回答之前，请在<thinking>标签中进行思考。"""

THINK_OPEN, THINK_CLOSE = "<thinking>", "</thinking>"
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
SEARCH_TOOL = "search"
MAX_QUERY_CHARS = 64
# The search tool as an OpenAI / JSON-schema tool definition: what a client passes as ``tools``
# and what trainer exports put in their tools column (Qwen's template then lists it in <tools>).
SEARCH_TOOL_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": SEARCH_TOOL,
        "description": "搜索网络，获取最新信息、实时数据或不确定的事实",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "搜索关键词（一行，不超过64个字符）"}},
            "required": ["query"],
        },
    },
}
# Tokens that end a turn in Qwen's vocabulary; text after them is not part of the turn.
END_OF_TURN = ("<|im_end|>", "<|endoftext|>")

# Everything that must never appear inside text written by a teacher or returned by a search:
# our own tags, the teacher's R1-style tags, and chat-template control tokens.
TAGS = (
    "<think>", "</think>", THINK_OPEN, THINK_CLOSE, TOOL_OPEN, TOOL_CLOSE,
    "<tool_response>", "</tool_response>", "<tools>", "</tools>",
)
_TAG_RE = re.compile(r"<\s*(/?)\s*(think|thinking|tool_call|tool_response|tools)\s*>", re.IGNORECASE)
_SPECIAL_RE = re.compile(r"<\|([^<>|]{0,64})\|>")

# Model-facing text of tool results (the tool turn), kept here with the rest of the format.
NO_RESULTS = "没有找到相关结果。"
SEARCH_FAILED = "搜索失败：{error}。无法获取最新信息，请如实告诉用户，不要编造搜索结果。"
INVALID_CALL = (
    "工具调用无效：{error}。请严格按以下格式重新调用：\n"
    + TOOL_OPEN + '\n{{"name": "search", "arguments": {{"query": "搜索关键词"}}}}\n' + TOOL_CLOSE
)


# ----------------------------------------------------------------------------- building


def tool_call_json(name: str, arguments: Mapping[str, Any]) -> str:
    """The JSON of one call, byte for byte as Qwen2.5's template renders it.

    >>> tool_call_json("search", {"query": "比特币价格 今日"})
    '{"name": "search", "arguments": {"query": "比特币价格 今日"}}'
    """
    return json.dumps({"name": name, "arguments": dict(arguments)}, ensure_ascii=False)


def search_call(query: str) -> dict[str, Any]:
    """A ``tool_calls`` entry for the search tool, arguments as an object (what the template wants)."""
    return {"type": "function", "function": {"name": SEARCH_TOOL, "arguments": {"query": query}}}


# With synth.decision_line every trained trace opens with one of these lines, so the search
# decision is made at one token (their first own one), where the agent can shift it (steer.py).
DECISION_LINES = {
    "thinking": "这个问题靠推理和已有知识就能回答，不需要搜索。",
    "search": "这个问题要用到会变化的最新信息，需要搜索。",
    # A stable fact the student got wrong when probed (synth.knowledge): nothing about it changes.
    "knowledge": "这个问题问的是一个我没有把握的事实，需要搜索核实。",
}


def build_messages(question: str, history: Sequence[dict[str, Any]] = (), system: str | None = None) -> list[dict[str, Any]]:
    """System prompt (the reference one by default), earlier turns, then the question."""
    return [{"role": "system", "content": system or SYSTEM_PROMPT}, *history, {"role": "user", "content": question}]


def thinking_block(trace: str) -> str:
    return f"{THINK_OPEN}\n{trace}\n{THINK_CLOSE}"


def thinking_messages(question: str, trace: str, answer: str, system: str = SYSTEM_PROMPT) -> list[dict[str, Any]]:
    """A thinking sample: think, then answer."""
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": question},
        {"role": "assistant", "content": f"{thinking_block(trace)}\n\n{answer}"},
    ]


def search_messages(
    question: str, reasoning: str, query: str, results_text: str, answer: str, system: str = SYSTEM_PROMPT
) -> list[dict[str, Any]]:
    """A search sample: think, call the tool, stop; the tool answers; then answer from the results."""
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": question},
        {"role": "assistant", "content": thinking_block(reasoning), "tool_calls": [search_call(query)]},
        {"role": "tool", "name": SEARCH_TOOL, "content": results_text},
        {"role": "assistant", "content": answer},
    ]


def render_assistant(content: str, tool_calls: Sequence[Mapping[str, Any]] = ()) -> str:
    """What an assistant turn reads like between ``<|im_start|>assistant\\n`` and ``<|im_end|>``.

    Mirrors the Qwen2.5 template (a test checks they agree).
    """
    out = content
    for call in tool_calls:
        fn = call.get("function", call)
        out += f"\n{TOOL_OPEN}\n{tool_call_json(fn['name'], fn['arguments'])}\n{TOOL_CLOSE}"
    return out


class ChatTokenizer(Protocol):
    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def render(tokenizer: ChatTokenizer, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> str:
    """Render a conversation through the tokenizer's own chat template (never by hand).

    With ``add_generation_prompt``, a conversation that ends in an assistant turn is a turn to
    go on with (the agent closing a thinking for the model, :func:`close_thinking`): the prompt
    ends inside that turn instead of opening a new one.
    """
    if add_generation_prompt and messages and messages[-1].get("role") == "assistant":
        return tokenizer.apply_chat_template(list(messages), tokenize=False, continue_final_message=True)
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def thinking_unclosed(text: str) -> bool:
    """Whether a turn opened ``<thinking>`` and stopped before closing it or calling a tool.

    >>> thinking_unclosed("<thinking>\\n这个问题要用到会变化的最新信息，需要搜索。\\n谁？谁？谁？")
    True
    >>> thinking_unclosed("<thinking>\\n想一想\\n</thinking>\\n答案")
    False
    """
    start = text.find(THINK_OPEN)
    return start >= 0 and THINK_CLOSE not in text[start:] and TOOL_OPEN not in text[start:]


# What close_thinking appends to a cut turn (a stream that already showed the turn shows this next).
CLOSING = f"\n{THINK_CLOSE}\n"


def close_thinking(text: str) -> str:
    """A turn cut inside its thinking, closed so that the model can go on to decide.

    >>> close_thinking("<thinking>\\n需要搜索。\\n谁？谁？ ")
    '<thinking>\\n需要搜索。\\n谁？谁？\\n</thinking>\\n'
    """
    return text.rstrip() + CLOSING


def prompt_messages(question: str, system: str = SYSTEM_PROMPT) -> list[dict[str, Any]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


# ----------------------------------------------------------------------------- untrusted text


def neutralize(text: str) -> str:
    """Defuse anything in untrusted text that reads as our tags or a chat-template token.

    Angle brackets become ‹ › so the text still reads the same to a model but can't be
    tokenized as ``<tool_call>`` (one token in Qwen's vocabulary) or ``<|im_end|>``.

    >>> neutralize('x <tool_call>{"name": "search"}</tool_call> <|im_end|>')
    'x ‹tool_call›{"name": "search"}‹/tool_call› ‹|im_end|›'
    """
    text = _TAG_RE.sub(lambda m: f"‹{m.group(1)}{m.group(2)}›", text)
    return _SPECIAL_RE.sub(lambda m: f"‹|{m.group(1)}|›", text)


def find_tags(text: str) -> list[str]:
    """The tags and control tokens present in ``text`` (for the synthesis quality gates)."""
    found = [t for t in TAGS if t in text]
    found += sorted({m.group(0) for m in _SPECIAL_RE.finditer(text)})
    return found


def cap(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


class ResultLike(Protocol):
    title: str
    snippet: str
    url: str
    date: str
    source: str


def render_results(results: Sequence[ResultLike], max_result_chars: int = 400, max_total_chars: int = 2000) -> str:
    """The tool turn's text for a list of search results: numbered, neutralised, capped.

    >>> from types import SimpleNamespace as R
    >>> render_results([R(title="标题", snippet="摘要", url="https://e.x/1", date="2025-01-02", source="新闻")])
    '[1] 标题 — 摘要 (新闻, 2025-01-02) https://e.x/1'
    """
    if not results:
        return NO_RESULTS
    lines: list[str] = []
    total = 0
    for i, r in enumerate(results, 1):
        meta = ", ".join(x for x in (r.source, r.date) if x)
        line = f"[{i}] {r.title} — {r.snippet}"
        line = cap(neutralize(" ".join(line.split())), max_result_chars)
        tail = " ".join(x for x in (f"({neutralize(meta)})" if meta else "", neutralize(r.url)) if x)
        line = f"{line} {tail}".rstrip()
        if total + len(line) > max_total_chars and lines:
            break
        lines.append(cap(line, max_total_chars))
        total += len(line) + 1
    return "\n".join(lines)


# ----------------------------------------------------------------------------- parsing


@dataclass
class ToolCall:
    """A well-formed call: JSON object with a string ``name`` and an object ``arguments``."""

    name: str
    arguments: dict[str, Any]
    raw: str
    in_thinking: bool = False
    terminated: bool = True

    @property
    def query(self) -> str | None:
        q = self.arguments.get("query")
        return q if isinstance(q, str) else None

    def as_message_call(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class InvalidCall:
    """A ``<tool_call>`` block that could not be read; ``error`` says why."""

    raw: str
    error: str
    in_thinking: bool = False
    terminated: bool = True


@dataclass
class Parsed:
    """What an assistant turn contained."""

    thinking: str | None = None
    """Text between ``<thinking>`` and ``</thinking>`` (to the end if never closed); None if no tag."""
    thinking_closed: bool = False
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_calls: list[InvalidCall] = field(default_factory=list)
    answer: str = ""
    """Text outside the thinking and the tool-call blocks, stripped."""

    @property
    def has_thinking_tag(self) -> bool:
        return self.thinking is not None

    @property
    def attempted_call(self) -> bool:
        return bool(self.tool_calls or self.invalid_calls)

    def assistant_message(self) -> dict[str, Any]:
        """The turn as a chat message (content + tool_calls) to append to a conversation."""
        content = thinking_block(self.thinking) if self.thinking is not None else ""
        if self.answer:
            content = f"{content}\n\n{self.answer}" if content else self.answer
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if self.tool_calls:
            msg["tool_calls"] = [c.as_message_call() for c in self.tool_calls]
        return msg


_CALL_RE = re.compile(re.escape(TOOL_OPEN) + r"(.*?)" + re.escape(TOOL_CLOSE) + "|" + re.escape(TOOL_OPEN) + r"(.*)", re.DOTALL)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_call(payload: str) -> tuple[str, dict[str, Any]] | str:
    """Read one call's JSON strictly; return (name, arguments) or the reason it is invalid.

    >>> parse_call('{"name": "search", "arguments": {"query": "天气"}}')
    ('search', {'query': '天气'})
    >>> parse_call('{"name": "search", "arguments": {"query": "天气"},}')
    'invalid JSON: Expecting property name enclosed in double quotes: line 1 column 49 (char 48)'
    """
    text = payload.strip()
    if not text:
        return "empty tool call"
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        return f"invalid JSON: {e}"
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return "missing or non-string 'name'"
    args = obj.get("arguments", None)
    if not isinstance(args, dict):
        return "'arguments' must be a JSON object"
    return name, args


def parse(text: str) -> Parsed:
    """Split a model's turn into thinking, tool calls and answer. Never raises.

    >>> p = parse('<thinking>\\n需要实时数据\\n</thinking>\\n<tool_call>\\n{"name": "search", "arguments": {"query": "比特币"}}\\n</tool_call>')
    >>> p.thinking, [c.query for c in p.tool_calls], p.answer
    ('需要实时数据', ['比特币'], '')
    >>> p = parse('<tool_call>{"name": "search", "arguments": {"query": 1,}}</tool_call><tool_call>{"name": "se')
    >>> len(p.tool_calls), [c.terminated for c in p.invalid_calls]
    (0, [True, False])
    """
    if not isinstance(text, str):
        text = str(text)
    for end in END_OF_TURN:
        cut = text.find(end)
        if cut >= 0:
            text = text[:cut]
    out = Parsed()

    # Thinking: the first <thinking> up to the first </thinking> after it.
    t_open = text.find(THINK_OPEN)
    t_start = t_end = -1
    if t_open >= 0:
        t_start = t_open + len(THINK_OPEN)
        t_end = text.find(THINK_CLOSE, t_start)
        out.thinking_closed = t_end >= 0
        body = text[t_start : t_end if t_end >= 0 else len(text)]
        if out.thinking_closed:
            body = body.removeprefix("\n").removesuffix("\n")
        else:
            # An unclosed trace runs to the end; calls inside it are reported, not part of it.
            body = _CALL_RE.sub("", body).removeprefix("\n").rstrip("\n")
        out.thinking = body

    def inside(pos: int) -> bool:
        return t_open >= 0 and pos >= t_start and (t_end < 0 or pos < t_end)

    spans: list[tuple[int, int]] = []
    for m in _CALL_RE.finditer(text):
        terminated = m.group(1) is not None
        payload = m.group(1) if terminated else m.group(2)
        spans.append(m.span())
        got = parse_call(payload)
        if isinstance(got, str):
            out.invalid_calls.append(InvalidCall(payload, got, inside(m.start()), terminated))
        else:
            out.tool_calls.append(ToolCall(got[0], got[1], payload, inside(m.start()), terminated))

    # Answer: what is left once the thinking block and the call blocks are removed.
    if t_open >= 0:
        spans.append((t_open, t_end + len(THINK_CLOSE) if t_end >= 0 else len(text)))
    keep, pos = [], 0
    for a, b in sorted(spans):
        if a > pos:
            keep.append(text[pos:a])
        pos = max(pos, b)
    keep.append(text[pos:])
    out.answer = "".join(keep).strip()
    return out


def validate_query(call: ToolCall) -> str | None:
    """Why a call is not a usable search call, or None if it is.

    >>> validate_query(ToolCall("search", {"query": "北京 天气"}, ""))
    >>> validate_query(ToolCall("search", {"query": "a\\nb"}, ""))
    'query spans several lines'
    """
    if call.name != SEARCH_TOOL:
        return f"unknown tool {call.name!r} (the only tool is {SEARCH_TOOL!r})"
    q = call.query
    if q is None:
        return "missing string argument 'query'"
    return query_problem(q)


def query_problem(query: str) -> str | None:
    """Why a search query is unusable: empty, multi-line, too long, or carrying tags."""
    if not query.strip():
        return "empty query"
    if "\n" in query or "\r" in query:
        return "query spans several lines"
    if len(query) > MAX_QUERY_CHARS:
        return f"query longer than {MAX_QUERY_CHARS} characters"
    if find_tags(query):
        return "query contains tags"
    return None

