"""The engine for any OpenAI-compatible endpoint: vLLM, SGLang, llama.cpp's server."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Sequence

from thinksearch import format as fmt
from thinksearch.config import AgentConfig
from thinksearch.engines.base import STOP, Message
from thinksearch.errors import ThinksearchError
from thinksearch.generation import Completion, Sampling

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase


def _to_openai_messages(messages: Sequence[Message]) -> list[Message]:
    """Chat messages for an OpenAI-style API: tool-call arguments as JSON strings."""
    out = []
    for i, m in enumerate(messages):
        m = dict(m)
        if m.get("tool_calls"):
            calls = []
            for j, c in enumerate(m["tool_calls"]):
                fn = c.get("function", c)
                args = fn["arguments"]
                calls.append({"id": c.get("id") or f"call_{i}_{j}", "type": "function",
                              "function": {"name": fn["name"],
                                           "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)}})
            m["tool_calls"] = calls
        out.append(m)
    # Tool messages answer the call before them; OpenAI APIs want the id.
    last_ids: list[str] = []
    for m in out:
        if m.get("tool_calls"):
            last_ids = [c["id"] for c in m["tool_calls"]]
        elif m["role"] == "tool" and "tool_call_id" not in m:
            m["tool_call_id"] = last_ids.pop(0) if last_ids else "call_0"
    return out


def _top_logprobs(logprobs: Any) -> list[dict[str, Any]]:
    """The first generated token's top log-probabilities, each a dict with ``token`` and
    ``logprob`` (and ``id`` where the endpoint gives it, as llama.cpp does): read from the chat
    API's shape (``content``, which llama.cpp's completions use too) or the legacy completions
    shape (``top_logprobs``, one dict of text to log-probability per token)."""
    if logprobs is None:
        return []
    d = logprobs.model_dump() if hasattr(logprobs, "model_dump") else dict(logprobs)
    if d.get("content"):
        return list(d["content"][0].get("top_logprobs") or [])
    if d.get("top_logprobs"):
        return [{"token": t, "logprob": v} for t, v in (d["top_logprobs"][0] or {}).items()]
    return []


class OpenAIEngine:
    """Any OpenAI-compatible endpoint: vLLM (merged model or adapter), SGLang, llama.cpp's server.

    ``api="completions"`` (default) sends the prompt rendered here with the chat template of
    ``tokenizer``, exactly as in training; the endpoint must not template it again.
    ``api="chat"`` sends messages and lets the endpoint's template render them; either way no
    ``tools`` are sent, since the reference system prompt already describes the tool and
    Qwen's template rewrites the system turn when tools are given. Endpoints drop the stop
    string from their output: a cut ``</tool_call>`` is put back.
    """

    REPETITION_PENALTY = "repetition_penalty"
    """The request field a repetition penalty goes in (vLLM's and SGLang's name)."""
    TOP_LOGPROBS = 20
    """How many of the likeliest next tokens an endpoint is asked for (the OpenAI API's most)."""

    def __init__(self, base_url: str, tokenizer: "PreTrainedTokenizerBase | None" = None,
                 served_model: str | None = None, api: Literal["completions", "chat"] = "completions",
                 api_key: str | None = None, timeout_s: float = 600.0, context_length: int = 4096,
                 name: str | None = None, concurrency: int = 8):
        import openai

        if api == "completions" and tokenizer is None:
            raise ThinksearchError("the completions API needs a tokenizer to render prompts; give --model a local model reference or use --endpoint-api chat")
        self.base_url, self.tokenizer, self.api = base_url.rstrip("/"), tokenizer, api
        self.context_length, self.concurrency = context_length, concurrency
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "none", timeout=timeout_s, max_retries=2)
        self.served_model = served_model or self._first_model()
        self.name = name or f"openai ({self.served_model} at {self.base_url}, {api})"

    @classmethod
    def from_config(cls, cfg: AgentConfig) -> "OpenAIEngine":
        tokenizer = prompt_tokenizer(cfg.model, required=cfg.endpoint_api == "completions")
        return cls(cfg.base_url or "", tokenizer, cfg.served_model, cfg.endpoint_api,
                   os.environ.get(cfg.api_key_env) or None, cfg.timeout_s, cfg.context_tokens)

    def _call(self, fn: Callable[[], Any]) -> Any:
        import openai

        try:
            return fn()
        except openai.APIConnectionError as e:
            raise ThinksearchError(f"cannot reach the endpoint {self.base_url} ({e.__class__.__name__}); is the server running?") from None
        except openai.AuthenticationError:
            raise ThinksearchError(f"the endpoint {self.base_url} refused the API key (401); set the variable named by --api-key-env") from None
        except openai.APIStatusError as e:
            detail = " ".join(str(getattr(e, "message", e)).split())[:300]
            raise ThinksearchError(f"the endpoint {self.base_url} answered {e.status_code}: {detail}") from None

    def _first_model(self) -> str:
        page = self._call(lambda: self.client.models.list())
        ids = [m.id for m in page.data]
        if not ids:
            raise ThinksearchError(f"the endpoint {self.base_url} lists no models; pass --served-model")
        return ids[0]

    def render(self, messages: Sequence[Message]) -> str:
        assert self.tokenizer is not None
        return fmt.render(self.tokenizer, messages, add_generation_prompt=True)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        if self.tokenizer is None:  # chat API without a local tokenizer: a safe overestimate
            return sum(len(str(m.get("content") or "")) + 8 for m in messages)
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def _params(self, sampling: Sampling) -> dict[str, Any]:
        p: dict[str, Any] = {"model": self.served_model, "max_tokens": sampling.max_new_tokens,
                             "temperature": sampling.temperature, "stop": list(STOP)}
        if sampling.temperature > 0:
            p["top_p"] = sampling.top_p
            if sampling.seed is not None:
                p["seed"] = sampling.seed
        if sampling.repetition_penalty != 1:
            # Not an OpenAI API field: vLLM and SGLang read it from the body (sent only when set).
            p["extra_body"] = {self.REPETITION_PENALTY: sampling.repetition_penalty}
        return p

    def _chat_params(self, messages: Sequence[Message], sampling: Sampling) -> dict[str, Any]:
        """The chat API's parameters; a conversation ending in an assistant turn asks the endpoint
        to go on with that turn (vLLM's ``continue_final_message``, sent only then)."""
        p = self._params(sampling)
        if messages and messages[-1].get("role") == "assistant":
            p["extra_body"] = {**p.get("extra_body", {}), "continue_final_message": True, "add_generation_prompt": False}
        return p

    @staticmethod
    def _repair(text: str, finish: str | None) -> tuple[str, Literal["stop", "length"]]:
        if text.count(fmt.TOOL_OPEN) > text.count(fmt.TOOL_CLOSE) and finish != "length":
            text += fmt.TOOL_CLOSE  # the endpoint stopped at </tool_call> and dropped it
        return text, "length" if finish == "length" else "stop"

    def _chat_text(self, msg: Any) -> str:
        extra = getattr(msg, "model_extra", None) or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        text = f"{fmt.thinking_block(reasoning)}\n\n" if reasoning else ""
        text += msg.content or ""
        calls = []
        for c in msg.tool_calls or []:
            try:
                args = json.loads(c.function.arguments)
            except ValueError:
                args = {}
            calls.append({"function": {"name": c.function.name, "arguments": args}})
        return fmt.render_assistant(text, calls)

    def _one(self, messages: Sequence[Message], sampling: Sampling) -> Completion:
        t0 = time.perf_counter()
        if self.api == "completions":
            prompt = self.render(messages)
            r = self._call(lambda: self.client.completions.create(prompt=prompt, **self._params(sampling)))
            text, finish = r.choices[0].text or "", r.choices[0].finish_reason
        else:
            r = self._call(lambda: self.client.chat.completions.create(
                messages=_to_openai_messages(messages), **self._chat_params(messages, sampling)))
            text, finish = self._chat_text(r.choices[0].message), r.choices[0].finish_reason
        text, reason = self._repair(text, finish)
        usage = r.usage
        n_prompt = usage.prompt_tokens if usage else self.count_tokens(messages)
        n_out = usage.completion_tokens if usage else self._count_text(text)
        return Completion(text, reason, n_prompt, n_out, time.perf_counter() - t0)

    def _count_text(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, conversations: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        if len(conversations) == 1:
            return [self._one(conversations[0], sampling)]
        # The endpoint batches concurrent requests itself (vLLM, llama.cpp with --parallel).
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(lambda m: self._one(m, sampling), conversations))

    def _logprob_params(self, tokens: Sequence[int]) -> dict[str, Any]:
        """Extra request fields for reading next-token log-probabilities (none here)."""
        return {}

    def _next_one(self, messages: Sequence[Message], tokens: Sequence[int]) -> dict[int, float]:
        one = Sampling(max_new_tokens=1)
        extra = self._logprob_params(tokens)
        if self.api == "completions":
            prompt = self.render(messages)
            r = self._call(lambda: self.client.completions.create(
                prompt=prompt, logprobs=self.TOP_LOGPROBS, **self._params(one), **extra))
        else:
            r = self._call(lambda: self.client.chat.completions.create(
                messages=_to_openai_messages(messages), logprobs=True, top_logprobs=self.TOP_LOGPROBS,
                **self._chat_params(messages, one), **extra))
        top = _top_logprobs(r.choices[0].logprobs)
        by_id = {t["id"]: float(t["logprob"]) for t in top if isinstance(t.get("id"), int)}
        if by_id:  # llama.cpp names the token ids
            return {t: by_id[t] for t in tokens if t in by_id}
        # Otherwise tokens come as text; the decision lines' tokens decode to distinct text (steer.steering).
        by_text = {t["token"]: float(t["logprob"]) for t in top}
        texts = {t: self.tokenizer.decode([t]) for t in tokens} if self.tokenizer is not None else {}
        return {t: by_text[x] for t, x in texts.items() if x in by_text}

    def next_logprobs(self, conversations: Sequence[Sequence[Message]], tokens: Sequence[int]) -> list[dict[int, float]]:
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(conversations)))) as pool:
            return list(pool.map(lambda m: self._next_one(m, tokens), conversations))

    def stream(self, messages: Sequence[Message], sampling: Sampling,
               cancel: threading.Event | None = None) -> Iterator[str | Completion]:
        t0 = time.perf_counter()
        base = self._params(sampling) if self.api == "completions" else self._chat_params(messages, sampling)
        params = {**base, "stream": True, "stream_options": {"include_usage": True}}
        if self.api == "completions":
            prompt = self.render(messages)
            response = self._call(lambda: self.client.completions.create(prompt=prompt, **params))
        else:
            response = self._call(lambda: self.client.chat.completions.create(messages=_to_openai_messages(messages), **params))
        text, finish, usage = "", None, None
        in_reasoning = False
        try:
            for chunk in response:
                usage = getattr(chunk, "usage", None) or usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish = choice.finish_reason or finish
                if self.api == "completions":
                    piece = choice.text or ""
                else:
                    delta = choice.delta
                    extra = getattr(delta, "model_extra", None) or {}
                    reasoning = extra.get("reasoning_content") or extra.get("reasoning") or ""
                    piece = ""
                    if reasoning and not in_reasoning:
                        piece, in_reasoning = fmt.THINK_OPEN + "\n", True
                    piece += reasoning
                    if (delta.content or delta.tool_calls) and in_reasoning:
                        piece, in_reasoning = piece + "\n" + fmt.THINK_CLOSE + "\n\n", False
                    piece += delta.content or ""
                    for c in delta.tool_calls or []:  # an endpoint with a tool parser; rare here
                        if c.function and c.function.name:
                            piece += f"\n{fmt.TOOL_OPEN}\n"
                        if c.function and c.function.arguments:
                            piece += c.function.arguments
                if piece:
                    text += piece
                    yield piece
                if cancel is not None and cancel.is_set():
                    break
        except Exception as e:  # the stream broke off midway: say where, once
            import openai

            if isinstance(e, openai.OpenAIError):
                raise ThinksearchError(f"the stream from {self.base_url} broke off: {e.__class__.__name__}") from None
            raise
        finally:
            response.close()
        text, reason = self._repair(text, finish)
        n_prompt = usage.prompt_tokens if usage else self.count_tokens(messages)
        n_out = usage.completion_tokens if usage else self._count_text(text)
        yield Completion(text, reason, n_prompt, n_out, time.perf_counter() - t0)

    def close(self) -> None:
        self.client.close()


def prompt_tokenizer(ref: str, required: bool) -> "PreTrainedTokenizerBase | None":
    from thinksearch import models

    try:
        return models.load_tokenizer(models.resolve(ref))
    except ThinksearchError as e:
        if required:
            raise ThinksearchError(f"--model {ref!r} must be a local model whose chat template renders the prompt ({e}); "
                                   "or use --endpoint-api chat") from None
        return None
