"""An OpenAI-compatible HTTP server for a thinksearch model: ``/v1/models``, ``/v1/chat/completions``.

It answers like vLLM with the hermes tool parser and a reasoning parser: the thinking goes
to ``reasoning_content``, a tool call comes back as ``tool_calls`` (arguments as a JSON
string) with ``finish_reason: "tool_calls"``, and the client runs the search and sends the
results back as a ``tool`` message. With ``run_tools`` the server runs the search itself
(the agent loop) and answers with the final text.

Safety by default: binds 127.0.0.1; an optional bearer key read from an environment
variable guards every path; request bodies and ``max_tokens`` are capped; requests wait in
a bounded queue and one worker owns the model, batching the non-streaming requests that
wait together (dynamic batching). Bad input gets an OpenAI-style 4xx error body
(``{"error": {"message", "type", "param", "code"}}``), never a 5xx.

Run as: ``thinksearch serve --model qwen2.5-coder-0.5b-instruct+out/adapter --port 8000``.
"""

import asyncio
import dataclasses
import hmac
import json
import logging
import os
import queue
import re
import socket
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Sequence

from thinksearch import format as fmt
from thinksearch.agent import Agent, Completion, Engine, Event, Message, StreamSplitter
from thinksearch.config import AgentConfig, ServeConfig
from thinksearch.errors import ThinksearchError
from thinksearch.generation import Sampling

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

log = logging.getLogger("thinksearch.serve")
_END = object()
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


# ----------------------------------------------------------------------------- the batcher


@dataclass
class _Job:
    messages: list[Message]
    sampling: Sampling
    future: Future | None = None
    put: Callable[[Any], None] | None = None
    """Streaming jobs: where pieces go (then a Completion, then _END)."""
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def key(self) -> tuple:
        """Requests with equal keys can share a batch: greedy ones ignore seed and top_p."""
        s = self.sampling
        if s.temperature == 0:
            return (s.max_new_tokens, s.repetition_penalty)
        return dataclasses.astuple(s)


class Busy(Exception):
    """The queue is full."""


class Batcher:
    """One worker thread owns the engine; requests wait in a bounded queue.

    Non-streaming requests with the same sampling settings that are waiting together
    (or arrive within ``wait_s``) run as one batched generate, up to ``max_batch``;
    streaming requests run one at a time between batches.
    """

    def __init__(self, engine: Engine, max_batch: int = 8, wait_s: float = 0.005, max_queue: int = 256):
        self.engine, self.max_batch, self.wait_s, self.max_queue = engine, max_batch, wait_s, max_queue
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self._held: deque[_Job] = deque()
        self._waiting = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches: list[int] = []
        """Sizes of the batches run so far (the last 1000), for tests and metrics."""

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="thinksearch-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _enqueue(self, job: _Job) -> None:
        with self._lock:
            if self._waiting >= self.max_queue:
                raise Busy()
            self._waiting += 1
        self._q.put(job)

    def submit(self, messages: list[Message], sampling: Sampling) -> Future:
        """Queue a non-streaming generate; the future gets a Completion."""
        job = _Job(messages, sampling, future=Future())
        self._enqueue(job)
        return job.future  # type: ignore[return-value]

    def submit_stream(self, messages: list[Message], sampling: Sampling, put: Callable[[Any], None],
                      cancel: threading.Event) -> None:
        """Queue a streaming generate: ``put`` receives pieces, a Completion (or an exception), then the end marker."""
        self._enqueue(_Job(messages, sampling, put=put, cancel=cancel))

    def stream(self, messages: list[Message], sampling: Sampling,
               cancel: threading.Event | None = None) -> Iterator[str | Completion]:
        """Queue a streaming generate and iterate it from a plain thread."""
        q: queue.Queue[Any] = queue.Queue()
        inner = threading.Event()  # stops this job; the caller's event is only read
        self.submit_stream(messages, sampling, q.put, inner)
        try:
            while (item := q.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                if cancel is not None and cancel.is_set():
                    inner.set()
                yield item
        finally:
            inner.set()

    def _next(self, timeout: float | None) -> _Job | None:
        if self._held:
            return self._held.popleft()
        return self._q.get(timeout=timeout)

    def _work(self) -> None:
        while True:
            job = self._next(None)
            if job is None:
                return
            if job.put is not None:
                self._run_stream(job)
                continue
            batch = [job]
            deadline = time.monotonic() + self.wait_s
            put_back: list[_Job] = []
            while len(batch) < self.max_batch:
                try:
                    more = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    put_back.append(more)  # type: ignore[arg-type]
                    break
                (batch if more.put is None and more.key == job.key else put_back).append(more)
            self._held.extend(j for j in put_back if j is not None)
            if None in put_back:
                self._q.put(None)
            self._run_batch(batch)

    def _done(self, n: int) -> None:
        with self._lock:
            self._waiting -= n

    def _run_batch(self, batch: list[_Job]) -> None:
        live = [j for j in batch if not j.future.cancelled()]  # type: ignore[union-attr]
        self.batches = (self.batches + [len(live)])[-1000:]
        try:
            if live:
                outs = self.engine.generate([j.messages for j in live], live[0].sampling)
                for j, c in zip(live, outs):
                    j.future.set_result(c)  # type: ignore[union-attr]
        except BaseException as e:  # the requests fail, the worker lives on
            log.exception("generation failed")
            for j in live:
                if not j.future.done():  # type: ignore[union-attr]
                    j.future.set_exception(e)  # type: ignore[union-attr]
        finally:
            self._done(len(batch))

    def _run_stream(self, job: _Job) -> None:
        assert job.put is not None
        try:
            if not job.cancel.is_set():
                for item in self.engine.stream(job.messages, job.sampling, job.cancel):
                    job.put(item)
        except BaseException as e:
            log.exception("streaming generation failed")
            job.put(e)
        finally:
            self._done(1)
            job.put(_END)


class QueuedEngine:
    """The engine as the agent loop sees it inside the server: every generate goes through the batcher,
    so the rounds of concurrent ``run_tools`` requests are batched together too."""

    def __init__(self, engine: Engine, batcher: Batcher):
        self.inner, self.batcher = engine, batcher
        self.name, self.context_length = engine.name, engine.context_length

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return self.inner.count_tokens(messages)

    def generate(self, conversations: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        futures = [self.batcher.submit(list(m), sampling) for m in conversations]
        return [f.result() for f in futures]

    def stream(self, messages: Sequence[Message], sampling: Sampling,
               cancel: threading.Event | None = None) -> Iterator[str | Completion]:
        return self.batcher.stream(list(messages), sampling, cancel)

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- request → messages


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


# ----------------------------------------------------------------------------- the app


def create_app(agent: Agent, cfg: ServeConfig | None = None, key: str | None = None) -> "FastAPI":
    """The FastAPI app serving ``agent`` (its engine, search backend and loop settings)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    cfg = cfg or ServeConfig()
    engine = agent.engine
    batcher = Batcher(engine, cfg.max_batch, cfg.batch_wait_ms / 1000, cfg.max_queue)
    queued = QueuedEngine(engine, batcher)
    context = min(engine.context_length, agent.cfg.context_tokens)
    default_tokens = min(agent.cfg.max_new_tokens, cfg.max_tokens_limit)
    created = int(time.time())

    class SafeJSON(JSONResponse):
        def render(self, content: Any) -> bytes:
            return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")

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
        content: str | list[ContentPart] | None = None
        name: str | None = None
        tool_calls: list[ToolCall] | None = None
        tool_call_id: str | None = None

    class StreamOptions(BaseModel):
        include_usage: bool = False

    class ChatRequest(BaseModel):
        """OpenAI chat completion request; unknown fields (tools, penalties ...) are accepted and ignored."""

        model_config = ConfigDict(extra="allow")
        model: str = Field(examples=[cfg.served_name])
        messages: list[ChatMessage] = Field(min_length=1, examples=[[{"role": "user", "content": "今天比特币的价格是多少？"}]])
        max_tokens: int | None = Field(None, ge=1, le=cfg.max_tokens_limit)
        max_completion_tokens: int | None = Field(None, ge=1, le=cfg.max_tokens_limit)
        temperature: float | None = Field(None, ge=0, le=2)
        top_p: float | None = Field(None, gt=0, le=1)
        n: int = Field(1, ge=1, le=1)
        seed: int | None = Field(None, ge=0, le=2**63 - 1)
        stream: bool = False
        stream_options: StreamOptions | None = None
        stop: str | list[str] | None = None

    error_responses = {s: {"description": d, "content": {"application/json": {}}} for s, d in
                       ((400, "bad request"), (401, "missing or wrong API key"), (404, "unknown model"),
                        (413, "request body too large"), (503, "queue full"))}

    def lifespan(app: Any) -> Any:
        import contextlib

        @contextlib.asynccontextmanager
        async def run(app: Any) -> Any:
            # Every request waiting on the model holds a thread (agent loops, token counting);
            # the default pool of cpu+4 threads would cap concurrency far below max_queue.
            from concurrent.futures import ThreadPoolExecutor

            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=min(cfg.max_queue, 64) + 4))
            batcher.start()
            try:
                yield
            finally:
                batcher.stop()

        return run(app)

    app = FastAPI(title="thinksearch", version="1", default_response_class=SafeJSON,
                  lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.batcher = batcher

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> Any:
        return SafeJSON(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> Any:
        errs = e.errors()
        first = errs[0] if errs else {}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        msg = clean(str(first.get("msg", "invalid request")))
        code = "invalid_json" if first.get("type") == "json_invalid" else "invalid_value"
        return SafeJSON(error_body(f"{loc}: {msg}" if loc else msg, code=code, param=loc or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> Any:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return SafeJSON(error_body(str(e.detail), kind), status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception) -> Any:  # a bug, not bad input: say so, keep serving
        log.exception("internal error")
        return SafeJSON(error_body("internal server error", "server_error"), status_code=500)

    @app.get("/v1/models", responses=error_responses)
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": cfg.served_name, "object": "model", "created": created,
                                            "owned_by": "thinksearch", "max_model_len": context}]}

    @app.get("/health", responses=error_responses)
    async def health() -> dict[str, Any]:
        return {"status": "ok", "engine": engine.name, "run_tools": cfg.run_tools}

    def prepare(req: ChatRequest) -> tuple[list[Message], Sampling]:
        if req.model != cfg.served_name:
            raise ApiError(404, f"the model {clean(req.model)!r} does not exist; this server serves {cfg.served_name!r}",
                           "not_found_error", "model_not_found", "model")
        stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
        if any(s != fmt.TOOL_CLOSE for s in stops):  # generation always stops after a call anyway
            raise ApiError(400, f"custom stop sequences are not supported (only {fmt.TOOL_CLOSE!r})",
                           code="unsupported_parameter", param="stop")
        messages = to_template_messages(req.messages, agent.system_prompt)
        temperature = agent.cfg.temperature if req.temperature is None else req.temperature
        sampling = Sampling(
            max_new_tokens=req.max_tokens or req.max_completion_tokens or default_tokens,
            # below 0.01 sampling is greedy in all but name, and tiny values overflow the softmax
            temperature=temperature if temperature >= 0.01 else 0.0,
            top_p=agent.cfg.top_p if req.top_p is None else req.top_p,
            seed=None if req.seed is None else req.seed % 2**32,
            repetition_penalty=agent.cfg.repetition_penalty,
        )
        try:
            n = engine.count_tokens(messages)
        except ApiError:
            raise
        except Exception as e:  # the chat template refused these messages
            raise ApiError(400, f"the messages cannot be rendered with the model's chat template: "
                                f"{clean(str(e)).splitlines()[0] if str(e) else type(e).__name__}", param="messages") from None
        if n + sampling.max_new_tokens > context:
            raise ApiError(400, f"this model's context is {context} tokens; the messages take {n} and max_tokens "
                                f"{sampling.max_new_tokens} more", code="context_length_exceeded", param="messages")
        return messages, sampling

    def usage(prompt: int, completion: int) -> dict[str, int]:
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def envelope(rid: str, obj: str, choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"id": rid, "object": obj, "created": int(time.time()), "model": cfg.served_name,
                "choices": choices, **(extra or {})}

    def run_agent(messages: list[Message], sampling: Sampling, on_event: Any = None,
                  cancel: threading.Event | None = None) -> Any:
        acfg = dataclasses.replace(agent.cfg, temperature=sampling.temperature, top_p=sampling.top_p,
                                   seed=sampling.seed, max_new_tokens=sampling.max_new_tokens)
        return Agent(queued, agent.backend, acfg).run(messages, on_event=on_event, cancel=cancel)

    def trace(result: Any) -> dict[str, Any]:
        return {"stop_reason": result.stop_reason,
                "searches": [{"query": t.query, "error": t.error, "results": t.results} for t in result.searches]}

    @app.post("/v1/chat/completions", responses=error_responses)
    async def chat_completions(req: ChatRequest) -> Any:
        messages, sampling = await asyncio.to_thread(prepare, req)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(stream_events(rid, messages, sampling, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            if cfg.run_tools:
                result = await asyncio.to_thread(run_agent, messages, sampling)
                msg = {"role": "assistant", "content": result.answer or None, "reasoning_content": result.thinking}
                finish = "length" if result.stop_reason == "length" else "stop"
                return envelope(rid, "chat.completion",
                                [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}],
                                {"usage": usage(result.prompt_tokens, result.completion_tokens), "thinksearch": trace(result)})
            completion = await asyncio.wrap_future(batcher.submit(messages, sampling))
        except Busy:
            raise ApiError(503, "the server is busy (request queue full); retry later", "server_busy", "queue_full") from None
        msg, finish = turn_message(completion.text)
        if completion.finish_reason == "length" and finish != "tool_calls":
            finish = "length"
        return envelope(rid, "chat.completion", [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}],
                        {"usage": usage(completion.prompt_tokens, completion.completion_tokens)})

    async def stream_events(rid: str, messages: list[Message], sampling: Sampling, include_usage: bool) -> Any:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def put(x: Any) -> None:
            loop.call_soon_threadsafe(items.put_nowait, x)

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            body = envelope(rid, "chat.completion.chunk",
                            [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], extra)
            return "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"

        def delta_of(kind: str, text: str) -> dict[str, Any] | None:
            if kind == "thinking":
                return {"reasoning_content": text}
            if kind == "answer":
                return {"content": text}
            return None

        try:
            if cfg.run_tools:
                def on_event(e: Event) -> None:
                    put(e)

                def work() -> None:
                    try:
                        put(run_agent(messages, sampling, on_event, cancel))
                    except BaseException as e:
                        put(e)
                    finally:
                        put(_END)

                threading.Thread(target=work, daemon=True).start()
            else:
                batcher.submit_stream(messages, sampling, put, cancel)
        except Busy:
            yield "data: " + json.dumps(error_body("the server is busy (request queue full); retry later",
                                                   "server_busy", "queue_full")) + "\n\n"
            yield "data: [DONE]\n\n"
            return
        splitter = StreamSplitter()
        yield chunk({"role": "assistant", "content": ""})
        final: Any = None
        try:
            while (item := await items.get()) is not _END:
                if isinstance(item, BaseException):
                    log.error("stream failed: %s", item)
                    yield "data: " + json.dumps(error_body(f"generation failed: {clean(str(item))[:200]}", "server_error")) + "\n\n"
                    break
                if isinstance(item, Event):
                    if item.kind in ("thinking", "answer") and (d := delta_of(item.kind, item.text)):
                        yield chunk(d)
                elif isinstance(item, str):
                    for kind, text in splitter.feed(item):
                        if d := delta_of(kind, text):
                            yield chunk(d)
                else:
                    final = item
            else:
                for kind, text in splitter.close():
                    if d := delta_of(kind, text):
                        yield chunk(d)
                if isinstance(final, Completion):
                    msg, finish = turn_message(final.text)
                    if finish == "tool_calls":
                        yield chunk({"tool_calls": [dict(c, index=i) for i, c in enumerate(msg["tool_calls"])]})
                    elif fmt.parse(final.text).invalid_calls and msg["content"]:
                        yield chunk({"content": msg["content"]})  # unreadable call: it stays text
                    if final.finish_reason == "length" and finish != "tool_calls":
                        finish = "length"
                    yield chunk({}, finish)
                    if include_usage:
                        yield "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                                                     "model": cfg.served_name, "choices": [],
                                                     "usage": usage(final.prompt_tokens, final.completion_tokens)}) + "\n\n"
                elif final is not None:  # an agent result (run_tools)
                    yield chunk({}, "length" if final.stop_reason == "length" else "stop", thinksearch=trace(final))
                    if include_usage:
                        yield "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                                                     "model": cfg.served_name, "choices": [],
                                                     "usage": usage(final.prompt_tokens, final.completion_tokens)}) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:
            cancel.set()  # the client left or the stream ended: stop generating

    return Guard(app, key, cfg.max_body_bytes)  # type: ignore[return-value]


class Guard:
    """ASGI wrapper in front of every path: the bearer key, then the body size limit.

    The body is read here (up to the limit) before the app sees it, so an oversize or
    endless body is refused with 413 however it is sent (with or without Content-Length).
    """

    def __init__(self, app: Any, key: str | None, max_body: int):
        self.app, self.max_body = app, max_body
        self._key = key.encode() if key else None

    def __getattr__(self, name: str) -> Any:  # app.state, app.openapi() ... stay reachable
        return getattr(self.app, name)

    @staticmethod
    async def _reply(send: Any, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers]})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self._key is not None:
            auth = headers.get(b"authorization", b"")
            given = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(given, self._key):
                return await self._reply(send, 401, error_body(
                    "missing or incorrect API key: send it as 'Authorization: Bearer <key>'",
                    "invalid_request_error", "invalid_api_key"), [(b"www-authenticate", b"Bearer")])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                return await self._reply(send, 400, error_body("invalid Content-Length header"))
            if too_big:
                return await self._reply(send, 413, self._too_big())
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                return await self._reply(send, 413, self._too_big())
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _too_big(self) -> dict[str, Any]:
        return error_body(f"request body larger than {self.max_body} bytes", "invalid_request_error", "request_too_large")


# ----------------------------------------------------------------------------- running it

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def server_key(cfg: ServeConfig) -> str | None:
    """The bearer key from the environment variable named in the config (never logged)."""
    if cfg.key_env is None:
        return None
    key = os.environ.get(cfg.key_env, "")
    if not key.strip():
        raise ThinksearchError(f"--key-env: the environment variable {cfg.key_env} is not set or empty; "
                               f"export it with the key clients must send")
    return key.strip()


def check_port(host: str, port: int) -> None:
    """Fail with one line if the address can't be bound (uvicorn would exit with a traceback-ish log)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ThinksearchError(f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port or --host") from None


def serve(agent_cfg: AgentConfig, cfg: ServeConfig, say: Callable[[str], None] = print) -> None:
    """Load the model and serve it until interrupted."""
    import uvicorn

    from thinksearch.agent import load_agent

    key = server_key(cfg)
    check_port(cfg.host, cfg.port)
    if cfg.host not in LOOPBACK and key is None:
        say(f"warning: serving on {cfg.host} without a key: anyone who can reach this address can use the model "
            "(set --key-env)")
    agent = load_agent(agent_cfg, warn=lambda m: say(f"warning: {m}"))
    app = create_app(agent, cfg, key)
    say(f"serving {cfg.served_name!r} ({agent.engine.name}) on http://{cfg.host}:{cfg.port}/v1"
        f" — key {'required' if key else 'not required'}, tools {'run here' if cfg.run_tools else 'returned to the client'}")
    try:
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", timeout_graceful_shutdown=5)
    finally:
        agent.close()
