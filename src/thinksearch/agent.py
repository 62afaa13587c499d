"""The agent loop: think, call the search tool, read the results, answer.

One round is one model turn: render the conversation with the model's chat template,
generate until ``</tool_call>`` or the end of the turn, parse the turn (:mod:`thinksearch.format`),
and if it holds a valid search call, run the search and append the assistant turn (with
``tool_calls``) and the tool turn, then go again; at most ``max_rounds`` turns. An invalid
call gets one corrective tool message; a failing backend is reported to the model, which
then answers without results. Results are untrusted text and reach the model only through
``format.render_results`` (tags and chat-template tokens defused).

Generation is behind a small :class:`Engine` protocol with three engines: in-process
transformers (base + adapter or merged), any OpenAI-compatible endpoint (vLLM, SGLang,
llama.cpp's server) and llama.cpp in-process through the prebuilt ``xllamacpp`` wheel.

Run as: ``thinksearch ask "今天比特币的价格是多少？"`` (or ``from thinksearch.agent import Agent``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Protocol, Sequence

from thinksearch import format as fmt
from thinksearch.config import AgentConfig, SearchConfig
from thinksearch.errors import ThinksearchError
from thinksearch.generation import Completion, Sampling
from thinksearch.search.base import Result, SearchBackend, SearchError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Message = dict[str, Any]
StopReason = Literal["answer", "length", "max_rounds", "invalid_call", "cancelled", "context_length"]
STOP = (fmt.TOOL_CLOSE,)


def sampling_of(cfg: AgentConfig, max_new_tokens: int | None = None) -> Sampling:
    return Sampling(
        max_new_tokens=max_new_tokens or cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed,
        repetition_penalty=cfg.repetition_penalty,
    )


# ----------------------------------------------------------------------------- streaming


class StreamSplitter:
    """Split streamed model text into ``thinking``, ``answer`` and ``call`` pieces as it arrives.

    Tags may arrive cut across pieces, so a tail that could begin a tag is held back until
    the next piece decides it. Whitespace around the blocks is dropped the way
    :func:`format.parse` strips it.

    >>> s = StreamSplitter()
    >>> s.feed("<think") + s.feed("ing>\\n想一想\\n</thin") + s.feed("king>\\n\\n答案") + s.close()
    [('thinking', '想一想'), ('answer', '答案')]
    """

    def __init__(self) -> None:
        self.mode: Literal["answer", "thinking", "call"] = "answer"
        self._return: Literal["answer", "thinking"] = "answer"
        self._buf = ""
        self._call = ""
        self._lead = True  # at the start of a segment: leading whitespace is dropped
        self._seen_thinking = False

    def _tags(self) -> tuple[str, ...]:
        if self.mode == "call":
            return (fmt.TOOL_CLOSE,)
        if self.mode == "thinking":
            return ("\n" + fmt.THINK_CLOSE, fmt.THINK_CLOSE, fmt.TOOL_OPEN)
        return (fmt.TOOL_OPEN,) if self._seen_thinking else (fmt.THINK_OPEN, fmt.TOOL_OPEN)

    def _emit(self, out: list[tuple[str, str]], text: str) -> None:
        if self.mode == "call":
            self._call += text
            return
        if self._lead:
            text = text.lstrip("\n") if self.mode == "thinking" else text.lstrip()
        if text:
            self._lead = False
            out.append((self.mode, text))

    def _switch(self, tag: str, out: list[tuple[str, str]]) -> None:
        if tag == fmt.THINK_OPEN:
            self.mode, self._seen_thinking = "thinking", True
        elif tag.endswith(fmt.THINK_CLOSE):
            self.mode = "answer"
        elif tag == fmt.TOOL_OPEN:
            self._return, self.mode, self._call = self.mode, "call", tag  # type: ignore[assignment]
            return
        else:  # the call closed
            out.append(("call", self._call + tag))
            self.mode = self._return
        self._lead = True

    def feed(self, piece: str) -> list[tuple[str, str]]:
        self._buf += piece
        out: list[tuple[str, str]] = []
        while True:
            hits = [(self._buf.find(t), -len(t), t) for t in self._tags() if t in self._buf]
            if not hits:
                break
            pos, _, tag = min(hits)
            before = self._buf[:pos]
            self._emit(out, before.rstrip() if self.mode == "answer" else before)
            self._buf = self._buf[pos + len(tag):]
            self._switch(tag, out)
        keep = len(self._buf)
        for tag in self._tags():  # the longest tail that could start a tag stays back
            for k in range(min(len(tag) - 1, len(self._buf)), 0, -1):
                if self._buf.endswith(tag[:k]):
                    keep = min(keep, len(self._buf) - k)
                    break
        if self.mode != "call":  # trailing whitespace waits: it may sit before a tag or the end
            while keep > 0 and self._buf[keep - 1].isspace():
                keep -= 1
        self._emit(out, self._buf[:keep])
        self._buf = self._buf[keep:]
        return out

    def close(self) -> list[tuple[str, str]]:
        """Flush what is held back (an unterminated call comes out as a ``call`` piece)."""
        out: list[tuple[str, str]] = []
        if self.mode == "call":
            out.append(("call", self._call + self._buf))
        else:
            self._emit(out, self._buf.rstrip())
        self._buf, self._call = "", ""
        return out


# ----------------------------------------------------------------------------- engines


class Engine(Protocol):
    """What the agent needs from a model: render, count, generate (batched), stream."""

    name: str
    context_length: int
    """Tokens the model can attend to (prompt + completion)."""

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens of the prompt these messages render to (generation prompt included)."""
        ...

    def generate(self, conversations: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        """The next assistant turn of each conversation, stopping after ``</tool_call>``."""
        ...

    def stream(
        self, messages: Sequence[Message], sampling: Sampling, cancel: threading.Event | None = None
    ) -> Iterator[str | Completion]:
        """Text pieces as they are generated, then one :class:`Completion` for the whole turn.

        Setting ``cancel`` ends generation early; the final Completion still comes.
        """
        ...

    def close(self) -> None: ...


def _cut_at_stop(text: str) -> tuple[str, bool]:
    cut = text.find(fmt.TOOL_CLOSE)
    return (text[: cut + len(fmt.TOOL_CLOSE)], True) if cut >= 0 else (text, False)


class _CountingModel:
    """The model as ``generation.stream`` sees it, recording the token ids it generates
    (re-tokenizing the streamed text would not give the same count)."""

    def __init__(self, model: Any):
        self._model, self.ids = model, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, *args: Any, streamer: Any = None, **kwargs: Any) -> Any:
        put, seen_prompt = streamer.put, [False]

        def counting_put(value: Any) -> None:
            if seen_prompt[0]:  # the streamer's first call carries the prompt
                self.ids.extend(value.reshape(-1).tolist())
            seen_prompt[0] = True
            put(value)

        streamer.put = counting_put
        return self._model.generate(*args, streamer=streamer, **kwargs)


class TransformersEngine:
    """In-process transformers model (CPU or GPU); base + LoRA adapter or a merged directory."""

    def __init__(self, model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", name: str = "transformers",
                 batch_size: int = 8, context_length: int | None = None):
        self.model, self.tokenizer, self.name, self.batch_size = model, tokenizer, name, batch_size
        limit = getattr(model.config, "max_position_embeddings", None) or 4096
        self.context_length = min(limit, context_length or limit)
        # One generate at a time: a model's forward pass is not safe to share between threads.
        self._lock = threading.RLock()

    @classmethod
    def from_config(cls, cfg: AgentConfig) -> "TransformersEngine":
        from thinksearch import models

        model, tokenizer = models.load(cfg.model, cfg.adapter, dtype=cfg.dtype, device=cfg.device)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        return cls(model, tokenizer, name=f"transformers ({dtype}, {next(model.parameters()).device})",
                   context_length=cfg.context_tokens)

    def render(self, messages: Sequence[Message]) -> str:
        return fmt.render(self.tokenizer, messages, add_generation_prompt=True)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def generate(self, conversations: Sequence[Sequence[Message]], sampling: Sampling) -> list[Completion]:
        from thinksearch import generation

        prompts = [self.render(m) for m in conversations]
        with self._lock:
            return generation.generate(self.model, self.tokenizer, prompts, sampling, stop=STOP, batch_size=self.batch_size)

    def stream(self, messages: Sequence[Message], sampling: Sampling,
               cancel: threading.Event | None = None) -> Iterator[str | Completion]:
        from thinksearch import generation

        prompt = self.render(messages)
        n_prompt = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        # generation.stream sets its event when it finishes; the caller's stays theirs.
        inner = threading.Event()
        counted = _CountingModel(self.model)
        text, stopped = "", False
        t0 = time.perf_counter()
        with self._lock:
            pieces = generation.stream(counted, self.tokenizer, prompt, sampling, stop=STOP, cancel=inner)  # type: ignore[arg-type]
            try:
                for piece in pieces:
                    before = len(text)
                    text, stopped = _cut_at_stop(text + piece)
                    if len(text) > before:
                        yield text[before:]
                    if stopped or (cancel is not None and cancel.is_set()):
                        break
            finally:
                inner.set()
                pieces.close()
        n = len(counted.ids)
        eos = set(generation.eos_ids(self.tokenizer))
        ended = stopped or bool(counted.ids and counted.ids[-1] in eos) or n < sampling.max_new_tokens
        yield Completion(text, "stop" if ended else "length", n_prompt, n, time.perf_counter() - t0)

    def close(self) -> None:
        pass


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


class OpenAIEngine:
    """Any OpenAI-compatible endpoint: vLLM (merged model or adapter), SGLang, llama.cpp's server.

    ``api="completions"`` (default) sends the prompt rendered here with the chat template of
    ``tokenizer``, exactly as in training; the endpoint must not template it again.
    ``api="chat"`` sends messages and lets the endpoint's template render them; either way no
    ``tools`` are sent, since the reference system prompt already describes the tool and
    Qwen's template rewrites the system turn when tools are given. Endpoints drop the stop
    string from their output: a cut ``</tool_call>`` is put back.
    """

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
        tokenizer = _try_tokenizer(cfg.model, required=cfg.endpoint_api == "completions")
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
                messages=_to_openai_messages(messages), **self._params(sampling)))
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

    def stream(self, messages: Sequence[Message], sampling: Sampling,
               cancel: threading.Event | None = None) -> Iterator[str | Completion]:
        t0 = time.perf_counter()
        params = {**self._params(sampling), "stream": True, "stream_options": {"include_usage": True}}
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


def _try_tokenizer(ref: str, required: bool) -> "PreTrainedTokenizerBase | None":
    from thinksearch import models

    try:
        return models.load_tokenizer(models.resolve(ref))
    except ThinksearchError as e:
        if required:
            raise ThinksearchError(f"--model {ref!r} must be a local model whose chat template renders the prompt ({e}); "
                                   "or use --endpoint-api chat") from None
        return None


def gguf_of(ref: str) -> Path | None:
    """The GGUF file behind a model reference (a .gguf path, or an offline alias's assembled file)."""
    from thinksearch import models

    p = Path(ref).expanduser()
    if p.suffix == ".gguf" and p.is_file():
        return p
    if ref in models.OFFLINE_MODELS:
        return models.gguf_path(ref)
    return None


class LlamaCppEngine(OpenAIEngine):
    """llama.cpp in this process (the prebuilt ``xllamacpp`` wheel), spoken to over its own
    OpenAI-compatible server on 127.0.0.1 with the completions API.

    Only GGUF models: a tuned model gets here as a GGUF of the merged model (see README).
    """

    def __init__(self, gguf: Path, tokenizer: "PreTrainedTokenizerBase", threads: int | None = None,
                 context_length: int = 4096, parallel: int = 1, cache_prompt: bool = True):
        try:
            import xllamacpp
        except ImportError:
            raise ThinksearchError("the llamacpp engine needs xllamacpp: pip install 'thinksearch[llamacpp]'") from None
        p = xllamacpp.CommonParams()
        p.model.path = str(gguf)
        p.n_ctx = context_length * parallel  # llama.cpp splits the context between its slots
        p.n_parallel = parallel
        p.cpuparams.n_threads = threads or os.cpu_count() or 1
        p.cpuparams_batch.n_threads = threads or os.cpu_count() or 1
        p.hostnames = ["127.0.0.1"]
        p.port = 0
        p.verbosity = 0
        # Reusing the KV cache of a shared prefix makes each round of the agent loop cheap
        # (the next prompt extends the last); benchmarks turn it off to time real prefills.
        p.cache_prompt = cache_prompt
        try:
            self._server = xllamacpp.Server(p)
        except RuntimeError as e:
            raise ThinksearchError(f"llama.cpp could not load {gguf}: {e} (is it a complete GGUF of a model llama.cpp supports?)") from None
        super().__init__(self._server.listening_address + "/v1", tokenizer, api="completions",
                         context_length=context_length, concurrency=parallel)
        self.name = f"llamacpp ({gguf.name})"

    @classmethod
    def from_config(cls, cfg: AgentConfig) -> "LlamaCppEngine":
        gguf = gguf_of(cfg.model)
        if gguf is None:
            raise ThinksearchError(f"the llamacpp engine needs a GGUF model; {cfg.model!r} is not a .gguf file "
                                   "or a prepared offline alias (a tuned model: merge it, then convert the merged directory to GGUF)")
        tokenizer = _try_tokenizer(cfg.model, required=True)
        return cls(gguf, tokenizer, cfg.threads, cfg.context_tokens)  # type: ignore[arg-type]

    def close(self) -> None:
        super().close()
        self._server = None


ENGINES: dict[str, Any] = {"transformers": TransformersEngine, "openai": OpenAIEngine, "llamacpp": LlamaCppEngine}


def pick_engine(cfg: AgentConfig) -> str:
    """``auto``: llama.cpp where it can run the model (a GGUF, no adapter, xllamacpp installed),
    since it decodes several times faster on CPU (bench/results/infer.json); else transformers."""
    if cfg.engine != "auto":
        return cfg.engine
    if cfg.adapter is None and importlib.util.find_spec("xllamacpp") is not None:
        try:
            from thinksearch import models

            if "+" not in cfg.model and gguf_of(cfg.model) is not None and (
                    cfg.model not in models.OFFLINE_MODELS or models.is_prepared(cfg.model)):
                return "llamacpp"
        except ThinksearchError:
            pass
    return "transformers"


def load_engine(cfg: AgentConfig) -> Engine:
    """The engine ``cfg`` asks for, loaded and ready."""
    return ENGINES[pick_engine(cfg)].from_config(cfg)


# ----------------------------------------------------------------------------- search


class UnavailableSearch:
    """Stands in when no backend could be opened: every search fails with the reason."""

    name = "unavailable"

    def __init__(self, reason: str):
        self.reason = reason

    def search(self, query: str, k: int = 5) -> list[Result]:
        raise SearchError(self.reason)


def open_backend(cfg: SearchConfig, warn: Callable[[str], None] | None = None) -> SearchBackend:
    """The configured search backend; if it cannot be opened, one that reports why on each call
    (the model is then told the search failed, and ``warn`` hears it once)."""
    try:
        from thinksearch.search import make_backend  # type: ignore[attr-defined]
    except ImportError:
        reason = "no search backends are installed in this build"
    else:
        try:
            return make_backend(cfg)
        except ThinksearchError as e:
            reason = str(e)
    if warn:
        warn(f"search unavailable ({reason}); the model will be told its searches failed")
    return UnavailableSearch(reason)


# ----------------------------------------------------------------------------- results


@dataclass
class ToolRun:
    """One search the agent ran for the model."""

    query: str
    results: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""
    """The tool turn exactly as the model read it."""
    error: str | None = None
    """Why the search failed (the model was told), or None."""
    seconds: float = 0.0


@dataclass
class Round:
    """One model turn."""

    index: int
    raw: str
    """The generated text, as produced (cut after ``</tool_call>``)."""
    thinking: str | None
    answer: str
    tool_calls: list[ToolRun] = field(default_factory=list)
    invalid_calls: list[str] = field(default_factory=list)
    """Why each malformed call was rejected."""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    first_token_s: float | None = None
    """Time to the first generated piece (streaming only)."""


@dataclass
class AgentResult:
    """Everything about one question: printable as JSON (:meth:`to_json`)."""

    question: str
    answer: str = ""
    thinking: str | None = None
    """The final turn's thinking."""
    stop_reason: StopReason = "answer"
    rounds: list[Round] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    engine: str = ""
    messages: list[Message] = field(default_factory=list, repr=False)
    """The conversation at the end (system, user, assistant and tool turns)."""

    @property
    def searches(self) -> list[ToolRun]:
        return [t for r in self.rounds for t in r.tool_calls]

    @property
    def first_token_s(self) -> float | None:
        return self.rounds[0].first_token_s if self.rounds else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("messages")
        d["first_token_s"] = self.first_token_s
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)


@dataclass
class Event:
    """What the streaming loop reports as it goes (for ``ask``/``chat`` display and the server)."""

    kind: Literal["round", "thinking", "answer", "call", "tool_call", "tool_result", "invalid_call"]
    text: str = ""
    round: int = 0
    tool: ToolRun | None = None


# ----------------------------------------------------------------------------- the loop


def build_messages(question: str, history: Sequence[Message] = (), system: str | None = None) -> list[Message]:
    """System prompt (the reference one by default), earlier turns, then the question."""
    return [{"role": "system", "content": system or fmt.SYSTEM_PROMPT}, *history, {"role": "user", "content": question}]


def _error_line(e: BaseException, limit: int = 200) -> str:
    return fmt.cap(" ".join(str(e).split()) or e.__class__.__name__, limit)


@dataclass
class _Conv:
    result: AgentResult
    messages: list[Message]
    corrected: bool = False
    done: bool = False
    t0: float = field(default_factory=time.perf_counter)


class Agent:
    """An engine, a search backend and the loop's settings."""

    def __init__(self, engine: Engine, backend: SearchBackend, cfg: AgentConfig | None = None):
        self.engine, self.backend, self.cfg = engine, backend, cfg or AgentConfig()

    @property
    def system_prompt(self) -> str:
        return self.cfg.system_prompt or fmt.SYSTEM_PROMPT

    def messages_for(self, question: str, history: Sequence[Message] = ()) -> list[Message]:
        return build_messages(question, history, self.system_prompt)

    # -- one step of the loop, shared by the batched and the streaming paths
    def _begin(self, messages: Sequence[Message]) -> _Conv:
        question = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        return _Conv(AgentResult(question, engine=self.engine.name), list(messages))

    def _fits(self, conv: _Conv, sampling: Sampling) -> bool:
        n = self.engine.count_tokens(conv.messages)
        if n + sampling.max_new_tokens > min(self.engine.context_length, self.cfg.context_tokens):
            self._finish(conv, "context_length")
            return False
        return True

    def _finish(self, conv: _Conv, reason: StopReason, parsed: fmt.Parsed | None = None) -> None:
        r = conv.result
        r.stop_reason = reason
        if parsed is not None:
            r.answer, r.thinking = parsed.answer, parsed.thinking
            if reason in ("answer", "length"):
                conv.messages.append(parsed.assistant_message())
        r.messages = conv.messages
        r.seconds = time.perf_counter() - conv.t0
        conv.done = True

    def _search(self, query: str) -> ToolRun:
        t0 = time.perf_counter()
        s = self.cfg.search
        try:
            results = self.backend.search(query, s.k)
        except SearchError as e:
            error = _error_line(e)
            return ToolRun(query, [], fmt.SEARCH_FAILED.format(error=fmt.neutralize(error)), error, time.perf_counter() - t0)
        text = fmt.render_results(results, s.max_result_chars, s.max_total_chars)
        return ToolRun(query, [r.to_dict() if hasattr(r, "to_dict") else dict(vars(r)) for r in results], text,
                       None, time.perf_counter() - t0)

    def _step(self, conv: _Conv, c: Completion, first_token_s: float | None,
              emit: Callable[[Event], None] | None, cancelled: bool = False) -> None:
        """Take one generated turn: finish, correct once, or run the searches and go on."""
        text = c.text
        for end in fmt.END_OF_TURN:
            text = text.split(end, 1)[0]
        parsed = fmt.parse(text)
        index = len(conv.result.rounds)
        rnd = Round(index, text, parsed.thinking, parsed.answer, finish_reason=c.finish_reason,
                    prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                    seconds=c.seconds, first_token_s=first_token_s)
        res = conv.result
        res.rounds.append(rnd)
        res.prompt_tokens += c.prompt_tokens
        res.completion_tokens += c.completion_tokens
        if cancelled:
            return self._finish(conv, "cancelled", parsed)
        if not parsed.attempted_call:
            return self._finish(conv, "length" if c.finish_reason == "length" else "answer", parsed)
        problems = [i.error for i in parsed.invalid_calls]
        problems += [p for p in map(fmt.validate_query, parsed.tool_calls) if p]
        if problems:
            rnd.invalid_calls = problems
            if emit:
                emit(Event("invalid_call", problems[0], index))
            if conv.corrected or index + 1 >= self.cfg.max_rounds:
                return self._finish(conv, "invalid_call", parsed)
            conv.corrected = True
            # The model sees its own malformed turn, then one message saying what to fix.
            conv.messages.append({"role": "assistant", "content": text})
            conv.messages.append({"role": "tool", "name": fmt.SEARCH_TOOL,
                                  "content": fmt.INVALID_CALL.format(error=fmt.neutralize(problems[0]))})
            return None
        if index + 1 >= self.cfg.max_rounds:
            return self._finish(conv, "max_rounds", parsed)
        conv.messages.append(parsed.assistant_message())
        for call in parsed.tool_calls:
            if emit:
                emit(Event("tool_call", call.query or "", index, ToolRun(call.query or "")))
            run = self._search(call.query or "")
            rnd.tool_calls.append(run)
            if emit:
                emit(Event("tool_result", run.text, index, run))
            conv.messages.append({"role": "tool", "name": fmt.SEARCH_TOOL, "content": run.text})
        return None

    def run_batch(self, conversations: Sequence[Sequence[Message]], max_new_tokens: int | None = None) -> list[AgentResult]:
        """Run the loop for several conversations at once: each round is one batched generate."""
        sampling = sampling_of(self.cfg, max_new_tokens)
        convs = [self._begin(m) for m in conversations]
        for _ in range(self.cfg.max_rounds):
            active = [c for c in convs if not c.done and self._fits(c, sampling)]
            if not active:
                break
            for conv, comp in zip(active, self.engine.generate([c.messages for c in active], sampling)):
                self._step(conv, comp, None, None)
        for c in convs:
            if not c.done:  # pragma: no cover - the loop finishes every conversation by max_rounds
                self._finish(c, "max_rounds")
        return [c.result for c in convs]

    def run(self, messages: Sequence[Message], on_event: Callable[[Event], None] | None = None,
            cancel: threading.Event | None = None, max_new_tokens: int | None = None) -> AgentResult:
        """Run the loop for one conversation; with ``on_event``, stream every piece as it comes."""
        if on_event is None and cancel is None:
            return self.run_batch([messages], max_new_tokens)[0]
        sampling = sampling_of(self.cfg, max_new_tokens)
        conv = self._begin(messages)
        while not conv.done and self._fits(conv, sampling):
            index = len(conv.result.rounds)
            if on_event:
                on_event(Event("round", "", index))
            splitter, t0, first, completion = StreamSplitter(), time.perf_counter(), None, None
            for item in self.engine.stream(conv.messages, sampling, cancel):
                if isinstance(item, Completion):
                    completion = item
                    break
                if first is None:
                    first = time.perf_counter() - t0
                if on_event:
                    for kind, text in splitter.feed(item):
                        on_event(Event(kind, text, index))  # type: ignore[arg-type]
            if on_event:
                for kind, text in splitter.close():
                    on_event(Event(kind, text, index))  # type: ignore[arg-type]
            assert completion is not None, "an engine's stream must end with a Completion"
            self._step(conv, completion, first, on_event, cancelled=cancel is not None and cancel.is_set())
        if not conv.done:
            self._finish(conv, conv.result.stop_reason)
        return conv.result

    def ask(self, question: str, history: Sequence[Message] = (), **kw: Any) -> AgentResult:
        """One question (after ``history``), answered through the loop."""
        if not question.strip():
            raise ThinksearchError("the question is empty")
        messages = self.messages_for(question, history)
        n = self.engine.count_tokens(messages)
        limit = min(self.engine.context_length, self.cfg.context_tokens) - self.cfg.max_new_tokens
        if n > limit:
            raise ThinksearchError(f"the question is too long: {n} prompt tokens, the limit is {limit} "
                                   f"(--context-tokens {self.cfg.context_tokens} minus --max-new-tokens {self.cfg.max_new_tokens})")
        return self.run(messages, **kw)

    def close(self) -> None:
        self.engine.close()


def trim_history(engine: Engine, history: list[Message], budget: int, system: str) -> list[Message]:
    """Drop the oldest exchanges (a user turn and everything up to the next) until the
    conversation fits in ``budget`` tokens; the latest exchange is always kept."""
    starts = [i for i, m in enumerate(history) if m.get("role") == "user"]
    while len(starts) > 1 and engine.count_tokens([{"role": "system", "content": system}, *history]) > budget:
        cut = starts[1]
        history = history[cut:]
        starts = [i - cut for i in starts[1:]]
    return history


def load_agent(cfg: AgentConfig, warn: Callable[[str], None] | None = None) -> Agent:
    """Engine and search backend from a config: what ``ask``, ``chat`` and ``serve`` start with."""
    engine = load_engine(cfg)
    return Agent(engine, open_backend(cfg.search, warn), cfg)

