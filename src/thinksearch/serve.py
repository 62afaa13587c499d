"""An OpenAI-compatible HTTP server for a thinksearch model: ``/v1/models``, ``/v1/chat/completions``.

It answers like vLLM with the hermes tool parser and a reasoning parser: the thinking goes
to ``reasoning_content``, a tool call comes back as ``tool_calls`` (arguments as a JSON
string) with ``finish_reason: "tool_calls"``, and the client runs the search and sends the
results back as a ``tool`` message. With ``run_tools`` the server runs the search itself
(the agent loop) and answers with the final text.

Safety by default: binds 127.0.0.1; an optional bearer key read from an environment
variable guards every path; request bodies and ``max_tokens`` are capped; requests wait in
a bounded queue and one worker owns the model, batching the non-streaming requests that
wait together (dynamic batching, :mod:`thinksearch.batcher`). Bad input gets an OpenAI-style 4xx error
body (``{"error": {"message", "type", "param", "code"}}``, :mod:`thinksearch.chat_api`), never a 5xx.

The routes are module-level handlers; each app keeps what they share in ``app.state.server``.
FastAPI is the ``serve`` extra, imported here at the top, so only ``thinksearch serve`` needs it.

Run as: ``thinksearch serve --model qwen2.5-coder-0.5b-instruct+out/adapter --port 8000``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from thinksearch import format as fmt
from thinksearch.agent import Agent, AgentResult, Event, StreamSplitter
from thinksearch.batcher import END, Batcher, Busy, QueuedEngine
from thinksearch.chat_api import ApiError, ChatRequest, clean, error_body, to_template_messages, turn_message
from thinksearch.config import AgentConfig, ServeConfig
from thinksearch.engines.base import Message
from thinksearch.errors import ThinksearchError
from thinksearch.generation import Completion, Sampling

log = logging.getLogger("thinksearch.serve")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"description": d, "content": {"application/json": {}}} for s, d in
    ((400, "bad request"), (401, "missing or wrong API key"), (404, "unknown model"),
     (413, "request body too large"), (503, "queue full"))}


class SafeJSON(JSONResponse):
    """JSON as UTF-8 text (not \\u escapes); text that can't be encoded is replaced, never a crash."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


@dataclass
class Server:
    """What the handlers of one app share (``app.state.server``)."""

    agent: Agent
    cfg: ServeConfig
    batcher: Batcher
    queued: QueuedEngine
    context: int
    """Tokens a request may use: the engine's context, capped by ``agent.context_tokens``."""
    default_tokens: int
    created: int

    @classmethod
    def of(cls, request: Request) -> "Server":
        return request.app.state.server


# ----------------------------------------------------------------------------- the app


def create_app(agent: Agent, cfg: ServeConfig | None = None, key: str | None = None) -> FastAPI:
    """The FastAPI app serving ``agent`` (its engine, search backend and loop settings)."""
    cfg = cfg or ServeConfig()
    engine = agent.engine
    batcher = Batcher(engine, cfg.max_batch, cfg.batch_wait_ms / 1000, cfg.max_queue)
    server = Server(agent, cfg, batcher, QueuedEngine(engine, batcher),
                    context=min(engine.context_length, agent.cfg.context_tokens),
                    default_tokens=min(agent.cfg.max_new_tokens, cfg.max_tokens_limit), created=int(time.time()))
    app = FastAPI(title="thinksearch", version="1", default_response_class=SafeJSON,
                  lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.server = server
    app.state.batcher = batcher
    app.add_exception_handler(ApiError, on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, on_crash)
    app.include_router(router)
    app.openapi = lambda: openapi(app, cfg)  # type: ignore[method-assign]
    return Guard(app, key, cfg.max_body_bytes)  # type: ignore[return-value]


def openapi(app: FastAPI, cfg: ServeConfig) -> dict[str, Any]:
    """The schema with this server's own model name and ``max_tokens`` cap filled in."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        fields = schema["components"]["schemas"]["ChatRequest"]["properties"]
        fields["model"]["examples"] = [cfg.served_name]
        for name in ("max_tokens", "max_completion_tokens"):
            fields[name]["anyOf"][0]["maximum"] = float(cfg.max_tokens_limit)  # as pydantic writes bounds
    return app.openapi_schema  # type: ignore[return-value]


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    server: Server = app.state.server
    # Every request waiting on the model holds a thread (agent loops, token counting);
    # the default pool of cpu+4 threads would cap concurrency far below max_queue.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=min(server.cfg.max_queue, 64) + 4))
    server.batcher.start()
    try:
        yield
    finally:
        server.batcher.stop()


async def on_api_error(request: Request, e: ApiError) -> Any:
    return SafeJSON(e.body(), status_code=e.status)


async def on_invalid(request: Request, e: RequestValidationError) -> Any:
    errs = e.errors()
    first = errs[0] if errs else {}
    loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    msg = clean(str(first.get("msg", "invalid request")))
    code = "invalid_json" if first.get("type") == "json_invalid" else "invalid_value"
    return SafeJSON(error_body(f"{loc}: {msg}" if loc else msg, code=code, param=loc or None), status_code=400)


async def on_http_error(request: Request, e: StarletteHTTPException) -> Any:
    kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
    return SafeJSON(error_body(str(e.detail), kind), status_code=e.status_code, headers=e.headers)


async def on_crash(request: Request, e: Exception) -> Any:  # a bug, not bad input: say so, keep serving
    log.exception("internal error")
    return SafeJSON(error_body("internal server error", "server_error"), status_code=500)


# ----------------------------------------------------------------------------- the handlers

router = APIRouter()


@router.get("/v1/models", responses=ERROR_RESPONSES)
async def list_models(request: Request) -> dict[str, Any]:
    s = Server.of(request)
    return {"object": "list", "data": [{"id": s.cfg.served_name, "object": "model", "created": s.created,
                                        "owned_by": "thinksearch", "max_model_len": s.context}]}


@router.get("/health", responses=ERROR_RESPONSES)
async def health(request: Request) -> dict[str, Any]:
    s = Server.of(request)
    return {"status": "ok", "engine": s.agent.engine.name, "run_tools": s.cfg.run_tools}


@router.post("/v1/chat/completions", responses=ERROR_RESPONSES)
async def chat_completions(req: ChatRequest, request: Request) -> Any:
    s = Server.of(request)
    messages, sampling = await asyncio.to_thread(prepare, s, req)
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(stream_events(s, rid, messages, sampling, include_usage),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    try:
        if s.cfg.run_tools:
            result = await asyncio.to_thread(run_agent, s, messages, sampling)
            msg = {"role": "assistant", "content": result.answer or None, "reasoning_content": result.thinking}
            finish = "length" if result.stop_reason == "length" else "stop"
            return envelope(s, rid, "chat.completion",
                            [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}],
                            {"usage": usage(result.prompt_tokens, result.completion_tokens), "thinksearch": trace(result)})
        agent = request_agent(s, sampling)
        opening, rest, rest_sampling = await asyncio.to_thread(agent.open_turn, messages, sampling)
        completion = agent.with_opening(opening, await asyncio.wrap_future(s.batcher.submit(rest, rest_sampling)))
    except Busy:
        raise ApiError(503, "the server is busy (request queue full); retry later", "server_busy", "queue_full") from None
    msg, finish = turn_message(completion.text)
    if completion.finish_reason == "length" and finish != "tool_calls":
        finish = "length"
    return envelope(s, rid, "chat.completion", [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}],
                    {"usage": usage(completion.prompt_tokens, completion.completion_tokens)})


def prepare(s: Server, req: ChatRequest) -> tuple[list[Message], Sampling]:
    """The request as template messages and sampling settings; bad requests raise :class:`ApiError`."""
    agent, cfg = s.agent, s.cfg
    for name in ("max_tokens", "max_completion_tokens"):  # worded as the request model words its other bounds
        if (getattr(req, name) or 0) > cfg.max_tokens_limit:
            raise ApiError(400, f"{name}: Input should be less than or equal to {cfg.max_tokens_limit}",
                           code="invalid_value", param=name)
    if req.model != cfg.served_name:
        raise ApiError(404, f"the model {clean(req.model)!r} does not exist; this server serves {cfg.served_name!r}",
                       "not_found_error", "model_not_found", "model")
    stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    if any(stop != fmt.TOOL_CLOSE for stop in stops):  # generation always stops after a call anyway
        raise ApiError(400, f"custom stop sequences are not supported (only {fmt.TOOL_CLOSE!r})",
                       code="unsupported_parameter", param="stop")
    messages = to_template_messages(req.messages, agent.system_prompt)
    temperature = agent.cfg.temperature if req.temperature is None else req.temperature
    sampling = Sampling(
        max_new_tokens=req.max_tokens or req.max_completion_tokens or s.default_tokens,
        # below 0.01 sampling is greedy in all but name, and tiny values overflow the softmax
        temperature=temperature if temperature >= 0.01 else 0.0,
        top_p=agent.cfg.top_p if req.top_p is None else req.top_p,
        seed=None if req.seed is None else req.seed % 2**32,
        repetition_penalty=agent.cfg.repetition_penalty,
    )
    try:
        n = agent.engine.count_tokens(messages)
    except ApiError:
        raise
    except Exception as e:  # the chat template refused these messages
        raise ApiError(400, f"the messages cannot be rendered with the model's chat template: "
                            f"{clean(str(e)).splitlines()[0] if str(e) else type(e).__name__}", param="messages") from None
    if n + sampling.max_new_tokens > s.context:
        raise ApiError(400, f"this model's context is {s.context} tokens; the messages take {n} and max_tokens "
                            f"{sampling.max_new_tokens} more", code="context_length_exceeded", param="messages")
    return messages, sampling


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def envelope(s: Server, rid: str, obj: str, choices: list[dict[str, Any]],
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": rid, "object": obj, "created": int(time.time()), "model": s.cfg.served_name,
            "choices": choices, **(extra or {})}


def request_agent(s: Server, sampling: Sampling) -> Agent:
    """The agent with this request's sampling, its generates batched with the other requests'."""
    acfg = dataclasses.replace(s.agent.cfg, temperature=sampling.temperature, top_p=sampling.top_p,
                               seed=sampling.seed, max_new_tokens=sampling.max_new_tokens)
    return Agent(s.queued, s.agent.backend, acfg)


def run_agent(s: Server, messages: list[Message], sampling: Sampling, on_event: Any = None,
              cancel: threading.Event | None = None) -> AgentResult:
    """The agent loop (``run_tools``) with this request's sampling."""
    return request_agent(s, sampling).run(messages, on_event=on_event, cancel=cancel)


def trace(result: AgentResult) -> dict[str, Any]:
    return {"stop_reason": result.stop_reason,
            "searches": [{"query": t.query, "error": t.error, "results": t.results} for t in result.searches]}


def delta_of(kind: str, text: str) -> dict[str, Any] | None:
    """A streamed piece as an OpenAI delta; a call is not streamed (it comes whole at the end)."""
    if kind == "thinking":
        return {"reasoning_content": text}
    if kind == "answer":
        return {"content": text}
    return None


async def stream_events(s: Server, rid: str, messages: list[Message], sampling: Sampling,
                        include_usage: bool) -> AsyncIterator[str]:
    """The server-sent events of a streamed answer (``run_tools``: of the whole agent loop)."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()

    def put(x: Any) -> None:
        loop.call_soon_threadsafe(items.put_nowait, x)

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = envelope(s, rid, "chat.completion.chunk",
                        [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], extra)
        return "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"

    try:
        if s.cfg.run_tools:
            def on_event(e: Event) -> None:
                put(e)

            def work() -> None:
                try:
                    put(run_agent(s, messages, sampling, on_event, cancel))
                except BaseException as e:
                    put(e)
                finally:
                    put(END)

            threading.Thread(target=work, daemon=True).start()
        else:
            agent = request_agent(s, sampling)
            opening, rest, rest_sampling = await asyncio.to_thread(agent.open_turn, messages, sampling)
            if opening:
                put(opening)
            s.batcher.submit_stream(rest, rest_sampling, lambda x: put(agent.with_opening(opening, x) if isinstance(x, Completion) else x),
                                    cancel)
    except Busy:
        yield "data: " + json.dumps(error_body("the server is busy (request queue full); retry later",
                                               "server_busy", "queue_full")) + "\n\n"
        yield "data: [DONE]\n\n"
        return
    splitter = StreamSplitter()
    yield chunk({"role": "assistant", "content": ""})
    final: Any = None
    try:
        while (item := await items.get()) is not END:
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
                                                 "model": s.cfg.served_name, "choices": [],
                                                 "usage": usage(final.prompt_tokens, final.completion_tokens)}) + "\n\n"
            elif final is not None:  # an agent result (run_tools)
                yield chunk({}, "length" if final.stop_reason == "length" else "stop", thinksearch=trace(final))
                if include_usage:
                    yield "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                                                 "model": s.cfg.served_name, "choices": [],
                                                 "usage": usage(final.prompt_tokens, final.completion_tokens)}) + "\n\n"
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()  # the client left or the stream ended: stop generating


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
