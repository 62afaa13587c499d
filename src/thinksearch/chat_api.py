"""The OpenAI chat-completions wire format as the server speaks it: the request models, the
error body, and the conversion of messages in (to our chat template) and of a turn out.

Bad input raises :class:`ApiError`, which the server turns into an OpenAI-style 4xx body
(``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from thinksearch import format as fmt
from thinksearch.engines.base import Message

_SURROGATE = re.compile("[\ud800-\udfff]")


class ApiError(Exception):
    """A request the server refuses; becomes an OpenAI-style error body."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# ----------------------------------------------------------------------------- the request


class ContentPart(BaseModel):
    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # Checked even when left out: only an assistant turn (one that calls tools) may have no content.
    content: str | list[ContentPart] | None = Field(None, validate_default=True)
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _content_needed(cls, content: Any, info: ValidationInfo) -> Any:
        role = info.data.get("role")
        if content is None and role not in (None, "assistant"):
            # OpenAI's API answers 400 here too; reading null as "" would hide a client bug.
            raise PydanticCustomError("missing_content", "a {role} message needs content (a string or a list of parts), "
                                      "not null", {"role": role})
        return content


class StreamOptions(BaseModel):
    include_usage: bool = False


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(BaseModel):
    """A tool as a client declares it; checked, then ignored (see :class:`ChatRequest`)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionSpec


class ChatRequest(BaseModel):
    """OpenAI chat completion request. ``tools`` must be well formed and is otherwise ignored
    (the reference system prompt describes the search tool); unknown fields (penalties ...)
    are accepted and ignored."""

    # max_tokens has no upper bound here: the cap is per server (ServeConfig.max_tokens_limit),
    # so serve.prepare checks it and serve.openapi shows it.
    model_config = ConfigDict(extra="allow")
    model: str = Field(examples=["thinksearch"])
    messages: list[ChatMessage] = Field(min_length=1, examples=[[{"role": "user", "content": "今天比特币的价格是多少？"}]])
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    tools: list[ToolSpec] | None = None


# ----------------------------------------------------------------------------- request → messages, turn → message


def clean(text: str) -> str:
    """Lone surrogates (valid in JSON, not in UTF-8) become U+FFFD, so nothing downstream chokes."""
    return _SURROGATE.sub("\ufffd", text)


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return clean(content)
    parts = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise ApiError(400, f"{where}: only text content is supported (got a {clean(part.type)!r} part)",
                           code="unsupported_content", param="messages")
        parts.append(clean(part.text))
    return "".join(parts)


def to_template_messages(messages: Sequence[Any], system_prompt: str) -> list[Message]:
    """OpenAI chat messages → the messages our chat template renders.

    Tool-call arguments arrive as JSON strings and become objects (the template dumps them);
    tool results are untrusted and pass through ``format.neutralize``; without a system
    message the model's reference system prompt is put first.
    """
    out: list[Message] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = "system" if m.role == "developer" else m.role
        msg: Message = {"role": role, "content": _content_text(m.content, where)}
        if role == "assistant" and m.tool_calls:
            calls = []
            for j, c in enumerate(m.tool_calls):
                args = c.function.arguments
                if isinstance(args, str):
                    try:
                        args = json.loads(args)
                    except ValueError:
                        raise ApiError(400, f"{where}.tool_calls[{j}].function.arguments is not valid JSON",
                                       param="messages") from None
                if not isinstance(args, dict):
                    raise ApiError(400, f"{where}.tool_calls[{j}].function.arguments must be a JSON object",
                                   param="messages")
                calls.append({"type": "function", "function": {"name": clean(c.function.name), "arguments": args}})
            msg["tool_calls"] = calls
        if role == "tool":
            msg["content"] = fmt.neutralize(msg["content"])
            msg["name"] = clean(m.name or fmt.SEARCH_TOOL)
        out.append(msg)
    if out[-1]["role"] not in ("user", "tool"):
        raise ApiError(400, "the last message must come from the user or a tool", param="messages")
    if out[0]["role"] != "system":
        out.insert(0, {"role": "system", "content": system_prompt})
    return out


def turn_message(text: str) -> tuple[dict[str, Any], str]:
    """A generated turn as an OpenAI assistant message and its finish reason (before ``length``).

    Like vLLM's hermes parser: valid calls become ``tool_calls`` (arguments as a JSON string),
    the text before them stays ``content``; a turn whose calls can't be read stays text.

    >>> m, why = turn_message('<thinking>\\n要查\\n</thinking>\\n<tool_call>\\n{"name": "search", "arguments": {"query": "天气"}}\\n</tool_call>')
    >>> why, m["reasoning_content"], m["content"], m["tool_calls"][0]["function"]["arguments"]
    ('tool_calls', '要查', None, '{"query": "天气"}')
    """
    parsed = fmt.parse(text)
    msg: dict[str, Any] = {"role": "assistant", "content": parsed.answer or None,
                           "reasoning_content": parsed.thinking}
    if parsed.tool_calls and not parsed.invalid_calls:
        msg["tool_calls"] = [
            {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in parsed.tool_calls
        ]
        return msg, "tool_calls"
    if parsed.invalid_calls:  # unreadable calls: hand back the text as written
        msg["content"] = _text_outside_thinking(text) or None
    return msg, "stop"


def _text_outside_thinking(text: str) -> str:
    for end in fmt.END_OF_TURN:
        text = text.split(end, 1)[0]
    a = text.find(fmt.THINK_OPEN)
    b = text.find(fmt.THINK_CLOSE, a + 1) if a >= 0 else -1
    if a >= 0:
        text = text[:a] + (text[b + len(fmt.THINK_CLOSE):] if b >= 0 else "")
    return text.strip()
