"""The agent loop: think, call the search tool, read the results, answer.

One round is one model turn: render the conversation with the model's chat template,
generate until ``</tool_call>`` or the end of the turn, parse the turn (:mod:`thinksearch.format`),
and if it holds a valid search call, run the search and append the assistant turn (with
``tool_calls``) and the tool turn, then go again; at most ``max_rounds`` turns. An invalid
call gets one corrective tool message; a failing backend is reported to the model, which
then answers without results. Results are untrusted text and reach the model only through
``format.render_results`` (tags and chat-template tokens defused).

Generation is behind a small :class:`~thinksearch.engines.base.Engine` protocol with three
engines (:mod:`thinksearch.engines`): in-process transformers (base + adapter or merged), any
OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp's server) and llama.cpp in-process through
the prebuilt ``xllamacpp`` wheel.

Run as: ``thinksearch ask "今天比特币的价格是多少？"`` (or ``from thinksearch.agent import Agent``).
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from thinksearch import format as fmt
from thinksearch.config import AgentConfig, SearchConfig
from thinksearch.engines import (  # noqa: F401 - the engines are imported from here too
    ENGINES,
    Engine,
    LlamaCppEngine,
    Message,
    OpenAIEngine,
    TransformersEngine,
    gguf_of,
    load_engine,
    pick_engine,
)
from thinksearch.errors import ThinksearchError
from thinksearch.format import build_messages  # noqa: F401 - imported from here too
from thinksearch.generation import Completion, Sampling
from thinksearch.search.base import Result, SearchBackend, SearchError

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.steer import Steering

StopReason = Literal["answer", "length", "max_rounds", "invalid_call", "cancelled", "context_length"]


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
    from thinksearch.search import make_backend

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
    closed_thinking: bool = False
    """The turn hit the token limit inside its thinking and the loop closed it (``close_thinking``)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    first_token_s: float | None = None
    """Time to the first generated piece (streaming only)."""
    decision_shift: float | None = None
    """The shift the turn's decision line was chosen under (:mod:`thinksearch.steer`); None: unshifted."""


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
        self.steering = self._steering()

    def _steering(self) -> "Steering | None":
        """How the first turn's decision is taken: with ``decision_shift``, else with the shift
        calibrated for the adapter (0 included); None without either, or for an explicit 0
        (the model's own first token)."""
        from thinksearch import steer
        from thinksearch.refs import split_adapter

        shift = steer.applied_shift(self.cfg.decision_shift, self.cfg.adapter or split_adapter(self.cfg.model)[1])
        if shift is None:
            return None
        tokenizer = getattr(self.engine, "tokenizer", None)
        if tokenizer is None:
            raise ThinksearchError("a decision shift needs the model's tokenizer, which the chat API does not give: "
                                   "use --endpoint-api completions, or --decision-shift 0")
        return steer.steering(tokenizer, shift)

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

    # -- the decision shift (steer.py)
    def _openings(self, convs: Sequence[_Conv], sampling: Sampling) -> list[str]:
        """With steering, the decision line each conversation about to start its answer opens
        with, chosen from the next-token log-probabilities after the lines' shared words
        (:meth:`steer.Steering.choose`; '' where no steering applies or no line's token was reported)."""
        s, out = self.steering, [""] * len(convs)
        todo = [i for i, c in enumerate(convs) if c.messages[-1].get("role") == "user"]
        if s is not None and todo:
            logps = self.engine.next_logprobs([[*convs[i].messages, {"role": "assistant", "content": s.prefix}] for i in todo],
                                              list(s.tokens.values()))
            rng = random.Random(sampling.seed)
            for i, lp in zip(todo, logps):
                out[i] = s.choose(lp, sampling.temperature, rng)
        return out

    def _opened(self, messages: Sequence[Message], opening: str) -> list[Message]:
        return [*messages, {"role": "assistant", "content": opening}] if opening else list(messages)

    def _after_openings(self, sampling: Sampling, openings: Sequence[str]) -> Sampling:
        """The turn's sampling: a decision line counts against the turn's token limit."""
        if self.steering is None or not any(openings):
            return sampling
        return dataclasses.replace(sampling, max_new_tokens=max(1, sampling.max_new_tokens - self.steering.opening_tokens))

    def open_turn(self, messages: Sequence[Message], sampling: Sampling) -> tuple[str, list[Message], Sampling]:
        """A turn outside the loop (a server that returns tool calls to its client), shifted as
        the loop's are: the decision line it opens with ('' for none), then the messages and the
        sampling to generate the rest with; :meth:`with_opening` puts the line back in front."""
        opening = self._openings([self._begin(messages)], sampling)[0]
        return opening, self._opened(messages, opening), self._after_openings(sampling, [opening])

    def _mark(self, conv: _Conv, opening: str) -> None:
        """Record the shift on the round just taken, when its turn opened with a shifted line."""
        if opening and self.steering is not None:
            conv.result.rounds[-1].decision_shift = self.steering.shift

    def with_opening(self, opening: str, c: Completion) -> Completion:
        if not opening:
            return c
        assert self.steering is not None
        return Completion(opening + c.text, c.finish_reason, c.prompt_tokens,
                          c.completion_tokens + self.steering.opening_tokens, c.seconds)

    # -- closing a thinking cut at the token limit
    def _closing(self, conv: _Conv, c: Completion) -> list[Message] | None:
        """The conversation to go on with when ``c`` stopped inside its thinking and
        ``close_thinking`` is on: the turn so far, closed; None otherwise (or if it cannot fit)."""
        if not (self.cfg.close_thinking and c.finish_reason == "length" and fmt.thinking_unclosed(c.text)):
            return None
        messages = [*conv.messages, {"role": "assistant", "content": fmt.close_thinking(c.text)}]
        limit = min(self.engine.context_length, self.cfg.context_tokens)
        return messages if self.engine.count_tokens(messages) + self.cfg.close_thinking <= limit else None

    @staticmethod
    def _closed(c: Completion, more: Completion) -> Completion:
        """One turn: what came before the limit, the closing tag, and what the model wrote after it."""
        return Completion(fmt.close_thinking(c.text) + more.text, more.finish_reason, c.prompt_tokens,
                          c.completion_tokens + more.completion_tokens, c.seconds + more.seconds)

    def _close_all(self, convs: Sequence[_Conv], comps: list[Completion], sampling: Sampling) -> list[bool]:
        """Close, in one batched generate, every turn of ``comps`` cut inside its thinking
        (replaced in place); which ones were closed."""
        todo = [(i, m) for i, (conv, c) in enumerate(zip(convs, comps)) if (m := self._closing(conv, c)) is not None]
        if todo:
            more = self.engine.generate([m for _, m in todo], dataclasses.replace(sampling, max_new_tokens=self.cfg.close_thinking))
            for (i, _), extra in zip(todo, more):
                comps[i] = self._closed(comps[i], extra)
        closed = {i for i, _ in todo}
        return [i in closed for i in range(len(comps))]

    def _step(self, conv: _Conv, c: Completion, first_token_s: float | None,
              emit: Callable[[Event], None] | None, cancelled: bool = False, closed: bool = False) -> None:
        """Take one generated turn: finish, correct once, or run the searches and go on."""
        text = c.text
        for end in fmt.END_OF_TURN:
            text = text.split(end, 1)[0]
        parsed = fmt.parse(text)
        index = len(conv.result.rounds)
        rnd = Round(index, text, parsed.thinking, parsed.answer, finish_reason=c.finish_reason, closed_thinking=closed,
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
            openings = self._openings(active, sampling)
            comps = self.engine.generate([self._opened(c.messages, o) for c, o in zip(active, openings)],
                                         self._after_openings(sampling, openings))
            comps = [self.with_opening(o, c) for o, c in zip(openings, comps)]
            closed = self._close_all(active, comps, sampling)
            for conv, comp, was_closed, opening in zip(active, comps, closed, openings):
                self._step(conv, comp, None, None, closed=was_closed)
                self._mark(conv, opening)
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
            splitter, t0 = StreamSplitter(), time.perf_counter()
            opening = self._openings([conv], sampling)[0]
            if on_event and opening:
                for kind, text in splitter.feed(opening):
                    on_event(Event(kind, text, index))  # type: ignore[arg-type]
            completion, first = self._stream_turn(self._opened(conv.messages, opening), self._after_openings(sampling, [opening]),
                                                  cancel, splitter, on_event, index, t0)
            completion = self.with_opening(opening, completion)
            closing = None if cancel is not None and cancel.is_set() else self._closing(conv, completion)
            if closing is not None:
                if on_event:
                    for kind, text in splitter.feed(fmt.CLOSING):
                        on_event(Event(kind, text, index))  # type: ignore[arg-type]
                more, _ = self._stream_turn(closing, dataclasses.replace(sampling, max_new_tokens=self.cfg.close_thinking),
                                            cancel, splitter, on_event, index, t0)
                completion = self._closed(completion, more)
            if on_event:
                for kind, text in splitter.close():
                    on_event(Event(kind, text, index))  # type: ignore[arg-type]
            self._step(conv, completion, first, on_event, cancelled=cancel is not None and cancel.is_set(),
                       closed=closing is not None)
            self._mark(conv, opening)
        if not conv.done:
            self._finish(conv, conv.result.stop_reason)
        return conv.result

    def _stream_turn(self, messages: Sequence[Message], sampling: Sampling, cancel: threading.Event | None,
                     splitter: StreamSplitter, on_event: Callable[[Event], None] | None, index: int,
                     t0: float) -> tuple[Completion, float | None]:
        """Stream one generate through ``splitter`` to ``on_event``; its Completion and the time to its first piece."""
        first = None
        for item in self.engine.stream(messages, sampling, cancel):
            if isinstance(item, Completion):
                return item, first
            if first is None:
                first = time.perf_counter() - t0
            if on_event:
                for kind, text in splitter.feed(item):
                    on_event(Event(kind, text, index))  # type: ignore[arg-type]
        raise AssertionError("an engine's stream must end with a Completion")

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
    engine = load_engine(cfg, warn)
    return Agent(engine, open_backend(cfg.search, warn), cfg)

