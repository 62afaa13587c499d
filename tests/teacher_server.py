"""A scripted OpenAI-compatible teacher server on 127.0.0.1, for tests and the quick benchmark.

``POST /v1/chat/completions`` (and ``/v1/completions``, for a prompt rendered by the client)
answers with plausible teacher replies chosen from the prompt
(which synthesis stage it is, and marker words in the question), so the whole pipeline runs
over real HTTP in milliseconds. Fault injection: a seeded share of requests fails on its
first attempt with a 500, a 429, a timeout (the reply comes too late), a 200 with garbage or a
200 with no choices; retries of the same request then succeed. ``delay_s`` adds a fixed
latency to every request, served concurrently: a model of a server that batches.

Markers in a question script the teacher's mistakes (see ``reply_for``):
``[泄漏]`` leaked ``</think>`` in the answer, ``[换行]`` a multi-line query, ``[截断]`` a
truncated reply, ``[循环]`` a repetition loop, ``[无引用]`` an answer citing nothing,
``[照抄]`` an answer that copies a result line, ``[R1]`` an R1-style ``reasoning</think>analysis`` reply, ``[错误]`` a 400 every time.

Run as: ``python tests/teacher_server.py --port 8011 --delay-s 0.5``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Module level on purpose: FastAPI resolves the handlers' annotations from module globals.
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

FAULTS = ("500", "429", "timeout", "garbage", "no_choices")
_QUESTION_RE = re.compile(r"问题：(.*)")


def stage_of(prompt: str) -> str:
    """Which synthesis stage a user prompt belongs to (by the wording synth/prompts.py uses)."""
    if "JSON" in prompt:
        return "query"
    if "搜索结果：" in prompt:
        return "grounded"
    if "思考过程：\n" in prompt:
        return "answer"
    return "analysis"


def reply_for(prompt: str) -> tuple[str, str]:
    """(content, finish_reason) a plausible teacher would give for this prompt."""
    m = _QUESTION_RE.search(prompt)
    q = m.group(1).strip() if m else "问题"
    stage = stage_of(prompt)
    if "[截断]" in q and stage in ("analysis", "query"):
        return "首先，我们需要仔细分析这个问题的每一个条件，然后", "length"
    if "[循环]" in q and stage in ("analysis", "grounded"):
        return "我们需要再算一遍。" * 12, "stop"
    if stage == "analysis":
        if "[R1]" in q:
            return f"嗯，用户问的是“{q}”。我先回忆相关知识，再一步步推理，最后检查。</think>\n\n分析：按条件逐步计算即可。", "stop"
        return f"首先明确问题：{q}。列出已知条件，逐步推理，得到结论后再代入检验。", "stop"
    if stage == "answer":
        if "[泄漏]" in q:
            return "让我整理一下。</think>所以答案是2:1。</think>", "stop"
        return f"根据上面的分析，{q}的答案是：结论成立，理由如上。", "stop"
    if stage == "query":
        query = "价格\n今日" if "[换行]" in q else re.sub(r"[\[\]？?。]", " ", q)[:20].strip()
        reasoning = "这个问题需要最新的实时信息，我需要搜索。" if "[泛泛]" in q else f"“{q}”的答案会随时间变化，我需要搜索最新情况。"
        return json.dumps({"reasoning": reasoning, "query": query}, ensure_ascii=False), "stop"
    if "[无引用]" in q:
        return "根据搜索结果，答案大约是这样。", "stop"
    if "[照抄]" in q:
        first = next((line for line in prompt.splitlines() if line.startswith("[1] ")), "[1]")
        return first, "stop"
    return "根据搜索结果，最新的情况是这样的[1]，另有来源补充[2]。", "stop"


@dataclass
class Server:
    """The app's state: faults to inject, delay, and what happened (for assertions)."""

    fault_percent: int = 0
    delay_s: float = 0.0
    timeout_sleep_s: float = 1.5
    model: str = "scripted-teacher"
    reasoning_field: bool = False
    """Return an R1 reply's reasoning as ``reasoning_content`` (as vLLM's reasoning parser does)."""
    require_key: str | None = None
    """Answer 401 unless the request carries ``Authorization: Bearer <require_key>``."""
    in_flight: int = 0
    max_in_flight: int = 0
    seen: Counter = field(default_factory=Counter)
    injected: Counter = field(default_factory=Counter)
    requests: int = 0
    completion_bodies: list = field(default_factory=list)
    """Every ``/v1/completions`` request body, in arrival order."""
    port: int = 0
    _server: Any = None
    _thread: threading.Thread | None = None

    def app(self) -> Any:
        app = FastAPI()

        def unauthorized(request: Request) -> bool:
            return self.require_key is not None and request.headers.get("authorization") != f"Bearer {self.require_key}"

        @app.get("/v1/models")
        async def models(request: Request) -> Any:
            if unauthorized(request):
                return JSONResponse({"error": {"message": "invalid api key"}}, 401)
            return {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "tests"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await answer(request)
            except ClientDisconnect:  # a client killed mid-request (the crash tests do this on purpose)
                return Response(status_code=499)
            finally:
                self.in_flight -= 1

        @app.post("/v1/completions")
        async def completions(request: Request) -> Any:
            """A server given a rendered prompt (llama.cpp's, as the llamacpp teacher uses it)."""
            body = await request.json()
            self.completion_bodies.append(body)
            prompt = body.get("prompt") or ""
            text, finish = reply_for(prompt)
            return {
                "id": "cmpl-" + hashlib.sha256(prompt.encode()).hexdigest()[:12], "object": "text_completion",
                "created": int(time.time()), "model": self.model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
                "usage": {"prompt_tokens": len(prompt) // 2, "completion_tokens": len(text) // 2,
                          "total_tokens": len(prompt) // 2 + len(text) // 2},
            }

        async def answer(request: Request) -> Any:
            if unauthorized(request):
                return JSONResponse({"error": {"message": "invalid api key"}}, 401)
            body = await request.json()
            self.requests += 1
            messages = body.get("messages") or []
            prompt = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
            digest = hashlib.sha256(json.dumps([messages, body.get("max_tokens")], ensure_ascii=False).encode()).digest()
            key = digest.hex()
            attempt = self.seen[key]
            self.seen[key] += 1
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if "[错误]" in prompt:
                return JSONResponse({"error": {"message": "scripted bad request", "type": "invalid_request_error"}}, 400)
            if attempt == 0 and digest[0] * 100 // 256 < self.fault_percent:
                fault = FAULTS[digest[1] % len(FAULTS)]
                self.injected[fault] += 1
                if fault == "500":
                    return JSONResponse({"error": {"message": "scripted internal error"}}, 500)
                if fault == "429":
                    return JSONResponse({"error": {"message": "slow down"}}, 429, headers={"retry-after": "0"})
                if fault == "timeout":
                    await asyncio.sleep(self.timeout_sleep_s)
                elif fault == "garbage":
                    return Response("<html>upstream hiccup{", media_type="application/json")
                else:
                    return JSONResponse({"id": "x", "object": "chat.completion", "created": 0, "model": self.model, "choices": []})
            content, finish = reply_for(prompt)
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if self.reasoning_field and "</think>" in content:
                reasoning, _, content = content.partition("</think>")
                message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
            return {
                "id": "chatcmpl-" + key[:12], "object": "chat.completion", "created": int(time.time()), "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": len(prompt) // 2, "completion_tokens": len(content) // 2,
                          "total_tokens": len(prompt) // 2 + len(content) // 2},
            }

        return app

    def start(self, port: int = 0) -> "Server":
        import uvicorn

        config = uvicorn.Config(self.app(), host="127.0.0.1", port=port, log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("scripted teacher server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description="scripted OpenAI-compatible teacher for tests")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--delay-s", type=float, default=0.0)
    ap.add_argument("--fault-percent", type=int, default=0)
    args = ap.parse_args()
    srv = Server(fault_percent=args.fault_percent, delay_s=args.delay_s).start(args.port)
    print(srv.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
