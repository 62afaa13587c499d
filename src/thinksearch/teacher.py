"""Teachers: the models that write synthesis data, behind one batch protocol.

These backends implement :class:`Teacher`:

- ``openai``: any OpenAI-compatible chat server (vLLM, SGLang, llama.cpp's server, Ollama,
  hosted APIs) through ``AsyncOpenAI``; requests run concurrently up to a bound, each with a
  timeout, and 429 / 5xx / timeouts / dropped connections / malformed replies are retried with
  exponential backoff and full jitter. A request that still fails comes back as a reply with
  ``error`` set (the caller records it); an endpoint that cannot be reached at all, or that
  rejects the key, stops the run with one line naming the URL.
- ``local``: transformers in this process, prompts rendered through the teacher's own chat
  template and generated in left-padded batches (:mod:`thinksearch.generation`).
- ``vllm``: vLLM's offline engine (GPU, optional extra ``vllm``).
- ``llamacpp``: a GGUF teacher on llama.cpp in this process with parallel slots
  (:mod:`thinksearch.teacher_llamacpp`, optional extra ``llamacpp``); ``auto`` picks it for a
  GGUF teacher when xllamacpp is installed, else ``local``.

:func:`thinksearch.teacher_choice.make_teacher` builds the one a config asks for.

Reasoning teachers (DeepSeek-R1 style) write ``reasoning</think>answer``, usually without the
opening ``<think>``; :func:`split_reasoning` separates the two, and a server that returns the
reasoning separately (``reasoning_content``) is read the same way.

Run as: ``thinksearch synth --teacher-backend openai --teacher-base-url http://127.0.0.1:8000/v1``.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence

from thinksearch import format as fmt
from thinksearch.errors import ThinksearchError

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.config import TeacherConfig

R1_OPEN, R1_CLOSE = "<think>", "</think>"


@dataclass
class TeacherRequest:
    """One chat completion to make. ``messages`` go through the teacher's chat template."""

    messages: list[dict[str, Any]]
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    """Sampling seed where the backend honours one (vLLM, local, llamacpp); None: unseeded.
    llamacpp repeats a seeded sample exactly only in the same slot batches: its batched decoding
    is not batch-invariant, so other requests in flight can change a late token."""


@dataclass
class TeacherReply:
    text: str
    """The completion, with an R1-style ``reasoning</think>`` prefix split off into ``reasoning``."""
    reasoning: str | None = None
    finish_reason: Literal["stop", "length", "error"] = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    """Why the request failed after all retries (finish_reason is then "error")."""
    meta: dict[str, Any] = field(default_factory=dict)


class Teacher(Protocol):
    name: str
    """What to record in ``meta.teacher`` (model name and backend)."""

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]:
        """Answer every request, in order. Failures come back as replies with ``error`` set."""
        ...


def split_reasoning(text: str) -> tuple[str | None, str]:
    """Split an R1-style completion at the first ``</think>`` into (reasoning, answer).

    >>> split_reasoning("设边长为a……</think>\\n\\n周长比是2:1。")
    ('设边长为a……', '周长比是2:1。')
    >>> split_reasoning("<think>\\n想一想\\n</think>答案")
    ('想一想', '答案')
    >>> split_reasoning("没有推理的回答")
    (None, '没有推理的回答')
    """
    cut = text.find(R1_CLOSE)
    if cut < 0:
        return None, text.strip()
    reasoning = text[:cut].strip()
    if reasoning.startswith(R1_OPEN):
        reasoning = reasoning[len(R1_OPEN):].strip()
    return reasoning, text[cut + len(R1_CLOSE):].strip()


def _reply(text: str, finish: str, prompt_tokens: int, completion_tokens: int,
           reasoning: str | None = None, **meta: Any) -> TeacherReply:
    if reasoning is None:
        reasoning, text = split_reasoning(text)
    else:
        text = text.strip()
    return TeacherReply(text, reasoning or None, "length" if finish == "length" else "stop",
                        prompt_tokens, completion_tokens, meta=meta)


# ----------------------------------------------------------------------------- openai


def api_key_from_env(var: str | None) -> str | None:
    """The API key held by environment variable ``var`` (None: no key needed)."""
    if var is None:
        return None
    key = os.environ.get(var, "").strip()
    if not key:
        raise ThinksearchError(
            f"environment variable {var} is not set; export it with the teacher's API key "
            "(--teacher-api-key-env names the variable; use null for servers that need no key)"
        )
    return key


class EndpointDown(ThinksearchError):
    """The teacher's server could not be reached at all."""


def _first_line(e: BaseException) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):  # an OpenAI-style error body: {"error": {"message": ...}} or {"message": ...}
        inner = body.get("error", body)
        msg = inner.get("message") if isinstance(inner, dict) else inner
        if isinstance(msg, str) and msg.strip():
            return msg.strip().splitlines()[0]
    for exc in (e.__cause__, e):
        text = str(exc or "").strip()
        if text:
            return text.splitlines()[0]
    return type(e).__name__


class OpenAITeacher:
    """A client of any OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    def __init__(self, cfg: "TeacherConfig"):
        self.cfg = cfg
        self.name = f"openai:{cfg.model}"
        self._key = api_key_from_env(cfg.api_key_env)
        # The client lives on its own event loop in a helper thread, so the synchronous
        # generate() works the same from a script, a signal-handling CLI or a notebook
        # (which already runs a loop of its own in the main thread).
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-teacher", daemon=True)
        self._thread.start()
        self._client: Any = None
        self.concurrency = cfg.concurrency
        self.timeout_s = cfg.timeout_s

    @property
    def url(self) -> str:
        return self.cfg.base_url.rstrip("/")

    def _get_client(self) -> Any:
        if self._client is None:
            from openai import AsyncOpenAI

            # Retries are ours (counted, jittered, recorded), not the client's.
            self._client = AsyncOpenAI(base_url=self.url, api_key=self._key or "none",
                                       timeout=self.timeout_s, max_retries=0)
        return self._client

    def _down(self, why: str) -> EndpointDown:
        return EndpointDown(f"teacher endpoint {self.url} is not reachable ({why}); "
                            "start the server or fix --teacher-base-url")

    def check(self) -> None:
        """Fail fast, with the URL in the message, when the server is down or refuses the key."""
        import openai

        async def probe() -> None:
            try:
                await self._get_client().models.list(timeout=min(self.timeout_s, 15.0))
            except openai.APITimeoutError:
                raise self._down(f"no answer within {min(self.timeout_s, 15.0):g} s") from None
            except openai.APIConnectionError as e:
                raise self._down(_first_line(e)) from None
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                raise self._auth_error(e) from None
            except (openai.APIStatusError, openai.APIResponseValidationError, ValueError, TypeError):
                pass  # some servers have no /models: the first completion will tell

        self._run(probe())

    def _auth_error(self, e: Any) -> ThinksearchError:
        where = f"the key in ${self.cfg.api_key_env}" if self.cfg.api_key_env else "requests without a key (set --teacher-api-key-env)"
        return ThinksearchError(f"teacher endpoint {self.url} rejected {where} (HTTP {e.status_code})")

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]:
        return self._run(self.agenerate(requests))

    async def agenerate(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(req: TeacherRequest) -> TeacherReply:
            async with gate:
                return await self._complete(req)

        out = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
        for r in out:
            if isinstance(r, BaseException):
                raise r
        return list(out)  # type: ignore[arg-type]

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        cap = min(self.cfg.backoff_max_s, self.cfg.backoff_s * 2**attempt)
        wait = random.uniform(0, cap)  # full jitter: retries from many requests spread out
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.cfg.backoff_max_s))
        return wait

    async def _complete(self, req: TeacherRequest) -> TeacherReply:
        import openai

        client = self._get_client()
        errors: list[str] = []
        only_connection = True
        for attempt in range(self.cfg.max_retries + 1):
            retry_after: float | None = None
            try:
                resp = await self._create(client, req)
                return self._parse(resp, attempt + 1)
            except openai.APITimeoutError:
                errors.append(f"timeout after {self.timeout_s:g} s")
                only_connection = False
            except openai.APIConnectionError as e:
                errors.append(f"connection error: {_first_line(e)}")
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                raise self._auth_error(e) from None
            except openai.NotFoundError as e:
                raise ThinksearchError(f"teacher endpoint {self.url} answered 404 for model '{self.cfg.model}' "
                                       f"({_first_line(e)}); check --teacher-model and --teacher-base-url") from None
            except openai.APIStatusError as e:
                only_connection = False
                code = e.status_code
                if code == 429 or code == 408 or code >= 500:
                    errors.append(f"HTTP {code}")
                    header = e.response.headers.get("retry-after") if e.response is not None else None
                    try:
                        retry_after = float(header) if header else None
                    except ValueError:
                        retry_after = None
                else:  # 400 and friends: the same request will fail again
                    return TeacherReply("", finish_reason="error", error=f"HTTP {code}: {_first_line(e)}",
                                        meta={"attempts": attempt + 1})
            except (openai.APIResponseValidationError, _Malformed, ValueError, TypeError, AttributeError,
                    IndexError, KeyError) as e:
                errors.append(f"malformed reply: {_first_line(e)}")
                only_connection = False
            if attempt < self.cfg.max_retries:
                await asyncio.sleep(self._wait(attempt, retry_after))
        if only_connection:
            raise self._down(errors[-1].removeprefix("connection error: "))
        return TeacherReply("", finish_reason="error",
                            error=f"failed after {len(errors)} attempts: {'; '.join(dict.fromkeys(errors))}",
                            meta={"attempts": len(errors)})

    def _sampling(self, req: TeacherRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(model=self.cfg.model, max_tokens=req.max_tokens,
                                      temperature=req.temperature, top_p=req.top_p)
        if req.seed is not None:
            kwargs["seed"] = req.seed
        return kwargs

    async def _create(self, client: Any, req: TeacherRequest) -> Any:
        """One API call for ``req``: the chat API (a subclass may send a rendered prompt instead)."""
        return await client.chat.completions.create(messages=req.messages, **self._sampling(req))

    def _content(self, choice: Any) -> tuple[str | None, str | None]:
        """(text, reasoning) of one choice of a chat completion."""
        msg = choice.message
        content = msg.content
        if content is not None and not isinstance(content, str):
            raise _Malformed("content is not text")
        extra = getattr(msg, "model_extra", None) or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning") or None
        if reasoning is not None and not isinstance(reasoning, str):
            reasoning = None
        return content, reasoning

    def _parse(self, resp: Any, attempts: int) -> TeacherReply:
        choices = getattr(resp, "choices", None)
        if not choices:
            raise _Malformed(f"no choices in {type(resp).__name__}")
        choice = choices[0]
        content, reasoning = self._content(choice)
        usage = getattr(resp, "usage", None)
        return _reply(content or "", choice.finish_reason or "stop",
                      getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0,
                      reasoning=reasoning, attempts=attempts, finish_reason_raw=choice.finish_reason)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._client is not None:
            self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class _Malformed(ValueError):
    """A 200 answer that is not a usable chat completion."""


# ----------------------------------------------------------------------------- local


class LocalTeacher:
    """A transformers model in this process; requests are rendered and generated in batches."""

    def __init__(self, cfg: "TeacherConfig", model: Any = None, tokenizer: Any = None):
        self.cfg = cfg
        self.name = f"local:{cfg.model}"
        if model is None or tokenizer is None:
            from thinksearch.models import load

            model, tokenizer = load(cfg.model, dtype=cfg.dtype, device=cfg.device)
        self.model, self.tokenizer = model, tokenizer

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]:
        from thinksearch.generation import Sampling, generate

        replies: list[TeacherReply | None] = [None] * len(requests)
        # One generate() call per sampling setting (a stage's requests all share one).
        groups: dict[tuple[int, float, float], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.max_tokens, r.temperature, r.top_p), []).append(i)
        for (max_tokens, temperature, top_p), idx in groups.items():
            seed = next((requests[i].seed for i in idx if requests[i].seed is not None), None)
            prompts = [fmt.render(self.tokenizer, requests[i].messages, add_generation_prompt=True) for i in idx]
            sampling = Sampling(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
            done = generate(self.model, self.tokenizer, prompts, sampling, stop=(), batch_size=self.cfg.batch_size)
            for i, c in zip(idx, done):
                replies[i] = _reply(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens)
        return replies  # type: ignore[return-value]


# ----------------------------------------------------------------------------- vllm

VLLM_MISSING = ("the vllm teacher needs a CUDA GPU and the vllm package (pip install 'thinksearch[vllm]' "
                "on a GPU machine); here use --teacher-backend local, or openai against a running server")


class VLLMTeacher:
    """vLLM's offline engine: all of a batch's prompts go to the engine at once."""

    def __init__(self, cfg: "TeacherConfig"):
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ThinksearchError(VLLM_MISSING)
        import torch

        if not torch.cuda.is_available():
            raise ThinksearchError(VLLM_MISSING)
        from vllm import LLM

        from thinksearch.models import resolve

        resolved = resolve(cfg.model)
        if resolved.adapter:
            raise ThinksearchError("the vllm teacher takes no LoRA adapter; merge it first (thinksearch merge)")
        path = os.path.join(resolved.path, resolved.gguf_file) if resolved.gguf_file else resolved.path
        dtype = {"auto": "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(cfg.dtype, cfg.dtype)
        kwargs: dict[str, Any] = dict(model=path, dtype=dtype, gpu_memory_utilization=cfg.gpu_memory_utilization)
        if cfg.max_model_len:
            kwargs["max_model_len"] = cfg.max_model_len
        self.cfg = cfg
        self.name = f"vllm:{cfg.model}"
        self.llm = LLM(**kwargs)

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]:
        from vllm import SamplingParams

        params = [SamplingParams(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, seed=r.seed)
                  for r in requests]
        outs = self.llm.chat([r.messages for r in requests], sampling_params=params, use_tqdm=False)
        replies = []
        for out in outs:
            c = out.outputs[0]
            replies.append(_reply(c.text, c.finish_reason or "stop", len(out.prompt_token_ids or []), len(c.token_ids)))
        return replies
