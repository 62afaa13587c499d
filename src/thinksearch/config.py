"""Configuration: one dataclass per stage, the same fields in YAML, CLI flags on top.

Every stage's settings are a dataclass whose fields carry a docstring (the string literal
right after the field). A YAML file holds one section per stage (``synth:``, ``train:``,
``eval:`` ...) with the same field names; YAML anchors share a block (a search backend, say)
between sections. Flags override the YAML: field ``lora_r`` is ``--lora-r``, a nested field
``teacher.base_url`` is ``--teacher-base-url``. Unknown keys and bad values raise
:class:`ConfigError` with one line naming the flag, the YAML key and what is allowed.

The stage dataclasses live beside the code that uses them; this module holds the machinery
and the configs shared by several stages.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar

from thinksearch.errors import ConfigError
from thinksearch.refs import has_adapter, parse_model_specs

T = TypeVar("T")


def flag_name(path: str) -> str:
    """The CLI flag for a (possibly dotted) field path.

    >>> flag_name("teacher.base_url")
    '--teacher-base-url'
    """
    return "--" + path.replace(".", "-").replace("_", "-")


class FieldError(ConfigError):
    """A bad value for one field; ``from_dict`` adds where the field sits."""

    def __init__(self, field: str, message: str, section: str = ""):
        self.field, self.message, self.section = field, message, section
        key = f"{section}.{field}" if section else field
        super().__init__(f"{flag_name(field)} ({key}): {message}")


def invalid(field: str, message: str) -> FieldError:
    """Build the error a ``__post_init__`` raises for a bad value of ``field``."""
    return FieldError(field, message)


def check_choice(field: str, value: Any, allowed: typing.Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise invalid(field, f"{value!r} is not allowed (allowed: {', '.join(map(str, allowed))})")


def check_positive(obj: Any, *fields: str, allow_zero: bool = False) -> None:
    """Raise for each named numeric field of ``obj`` that is not > 0 (or >= 0)."""
    for name in fields:
        value = getattr(obj, name)
        if value is None:
            continue
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise invalid(name, f"must be {bound}, got {value!r}")


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass ``cls`` to the docstring written under it."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # no source available (frozen app)
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _describe(tp: Any) -> str:
    tp, optional = _strip_optional(tp)
    if typing.get_origin(tp) is Literal:
        text = "one of " + ", ".join(map(str, typing.get_args(tp)))
    elif typing.get_origin(tp) is list:
        text = "a list of " + _describe(typing.get_args(tp)[0]) + "s"
    else:
        text = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
            tp, getattr(tp, "__name__", str(tp))
        )
    return text + (" or null" if optional else "")


def _coerce(tp: Any, value: Any, key: str, section: str) -> Any:
    """Check ``value`` against type ``tp``; return it (lists and numbers normalised).

    ``key`` is the dotted field path within the stage, ``section`` the stage's YAML section.
    """
    base, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise FieldError(key, f"must be {_describe(tp)}, got null", section)
    origin = typing.get_origin(base)
    bad = FieldError(key, f"must be {_describe(tp)}, got {value!r}", section)
    if origin is Literal:
        allowed = typing.get_args(base)
        if value not in allowed:
            raise FieldError(
                key, f"{value!r} is not allowed (allowed: {', '.join(map(str, allowed))})", section
            )
        return value
    if origin is list:
        (item,) = typing.get_args(base)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(item, v, key, section) for v in value]
    if base is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if base is str:
        if isinstance(value, Path):
            return str(value)
        if not isinstance(value, str):
            raise bad
        return value
    if dataclasses.is_dataclass(base):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, Mapping):
            raise FieldError(key, f"must be a mapping of {base.__name__} fields", section)
        return from_dict(base, value, section, prefix=f"{key}.")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, section: str = "", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking keys, types and values.

    ``section`` is the YAML section (stage) and ``prefix`` the dotted path of ``cls`` inside
    it; both only shape error messages.
    """
    data = dict(data or {})
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            where = ".".join(x for x in (section, prefix + str(key)) if x)
            raise ConfigError(f"unknown key '{where}' (allowed: {', '.join(names)})")
    kwargs = {k: _coerce(hints[k], v, prefix + k, section) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except FieldError as e:
        if e.section or not (section or prefix):
            raise
        raise FieldError(prefix + e.field, e.message, section) from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain dict of a config (for saving beside a run's outputs)."""
    return dataclasses.asdict(obj)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with one-line errors."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- flags


def _parse_optional(conv: typing.Callable[[str], Any]) -> typing.Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else conv(text)

    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def add_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of ``cls`` (recursing into nested dataclasses).

    Flags default to ``argparse.SUPPRESS`` so that only what the user typed overrides the YAML.
    The flag's help is the field's docstring.
    """
    docs = field_docs(cls)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        path = f"{prefix}{f.name}"
        tp, optional = _strip_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):
            add_flags(parser, tp, prefix=f"{path}.")
            continue
        kwargs: dict[str, Any] = {"dest": path, "default": argparse.SUPPRESS, "help": docs.get(f.name, "")}
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs["choices"] = list(typing.get_args(tp))
            kwargs["metavar"] = "{" + ",".join(map(str, typing.get_args(tp))) + "}"
        elif origin is list:
            kwargs["nargs"] = "+"
            kwargs["type"] = typing.get_args(tp)[0]
        else:
            conv = tp if tp in (int, float, str) else str
            kwargs["type"] = _parse_optional(conv) if optional else conv
            kwargs["metavar"] = {int: "N", float: "X", str: "TEXT"}.get(tp, "VALUE")
        parser.add_argument(flag_name(path), **kwargs)


def overrides_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The nested dict of the fields of ``cls`` that were given as flags (see :func:`add_flags`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        parts = dest.split(".")
        if parts[0] not in names:
            continue  # a flag of the command itself (config path, output format ...)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``over`` wins; nested mappings merge."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def build(cls: type[T], config_path: str | Path | None, section: str, overrides: Mapping[str, Any]) -> T:
    """The config of one stage: YAML section (if a file is given), then flag overrides."""
    data: dict[str, Any] = {}
    if config_path is not None:
        whole = load_yaml(config_path)
        data = whole.get(section) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{config_path}: section '{section}' must be a mapping")
    return from_dict(cls, merge(data, overrides), section)


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["train.lora_r=8", "eval.models=[a,b]"]`` → nested dict; values parsed as YAML."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set: {key} conflicts with another --set")
        node[parts[-1]] = value
    return out


# ============================================================================ stage configs
# One block per stage, in pipeline order. Fields carry a docstring (shown by --help).

# ---- search (shared by synth and the agent) ------------------------------------------


@dataclasses.dataclass
class SearchConfig:
    """Which search backend answers tool calls, during synthesis and at inference."""

    backend: Literal["local", "searxng", "wikipedia", "simulated"] = "local"
    """local: SQLite FTS5 index; searxng / wikipedia: HTTP APIs; simulated: a model writes results (labelled)."""
    k: int = 5
    """Results per query."""
    index: str = "index.sqlite"
    """local: path of the index built by `thinksearch index build`."""
    tokenizer: Literal["auto", "jieba", "bigram"] = "auto"
    """local, index build: how text is split into words: jieba (needs thinksearch[jieba]), character bigrams, or auto (jieba if installed; an existing index keeps its own)."""
    passage_chars: int | None = None
    """local, index build: cut longer documents into passages of at most this many characters (null: 800, or what an existing index uses)."""
    url: str | None = None
    """searxng: base URL (default $THINKSEARCH_SEARXNG_URL); wikipedia: api.php URL or site root (default the language's wikipedia.org)."""
    language: str = "zh"
    """searxng / wikipedia: result language (wikipedia: which language edition, e.g. zh, en)."""
    timeout_s: float = 10.0
    """HTTP backends: seconds one search may take, retries included."""
    retries: int = 2
    """HTTP backends: extra tries after a connection error, timeout, HTTP 429 or 5xx (with backoff)."""
    cache: str | None = None
    """SQLite cache of results keyed by (backend, what decides its results, query, k); null disables it."""
    max_result_chars: int = 300
    """Each result is cut to this many characters before a model sees it."""
    max_total_chars: int = 1500
    """The whole tool turn is cut to this many characters."""

    def __post_init__(self) -> None:
        check_positive(self, "k", "timeout_s", "max_result_chars", "max_total_chars", "passage_chars")
        check_positive(self, "retries", allow_zero=True)
        if self.passage_chars is not None and self.passage_chars < 50:
            raise invalid("passage_chars", f"must be at least 50, got {self.passage_chars}")
        if not self.language.strip():
            raise invalid("language", "must not be empty (e.g. zh, en)")


# ---- teacher + synth -----------------------------------------------------------------


@dataclasses.dataclass
class TeacherConfig:
    """The model that writes synthesis data, and how to reach it."""

    backend: Literal["local", "openai", "vllm"] = "local"
    """local: transformers in this process (CPU or GPU); openai: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama, hosted APIs); vllm: vLLM's offline engine (GPU, extra 'vllm')."""
    model: str = "qwen2.5-coder-0.5b-instruct"
    """local / vllm: a model reference (offline alias, HF directory, .gguf, hub id); openai: the model name the server serves."""
    base_url: str = "http://127.0.0.1:8000/v1"
    """openai: the server's OpenAI-compatible base URL (ends in /v1)."""
    api_key_env: str | None = None
    """openai: name of the environment variable holding the API key (e.g. OPENAI_API_KEY); null for local servers that need none. The key itself is never written anywhere."""
    concurrency: int = 8
    """openai: requests in flight at once (a batching server answers them together)."""
    timeout_s: float = 120.0
    """openai: seconds before one request is abandoned (and retried)."""
    max_retries: int = 4
    """openai: retries of a request after a 429, 5xx, timeout, connection error or malformed reply."""
    backoff_s: float = 1.0
    """openai: first retry waits up to this many seconds (full jitter), doubling each retry."""
    backoff_max_s: float = 30.0
    """openai: upper bound of one wait between retries."""
    batch_size: int = 8
    """local: prompts generated together (left-padded); the main speed lever on CPU."""
    dtype: str = "auto"
    """local / vllm: auto (bf16 where the hardware has it, else fp32), float32, bfloat16, float16."""
    device: str = "auto"
    """local: auto (cuda if available, else cpu), cpu, cuda, cuda:1 ..."""
    gpu_memory_utilization: float = 0.85
    """vllm: share of GPU memory the engine may take."""
    max_model_len: int | None = None
    """vllm: context length to reserve (null: the model's own)."""

    def __post_init__(self) -> None:
        check_positive(self, "concurrency", "timeout_s", "batch_size", "backoff_max_s", "gpu_memory_utilization")
        check_positive(self, "max_retries", "backoff_s", allow_zero=True)
        check_positive(self, "max_model_len")
        if not self.model.strip():
            raise invalid("model", "must not be empty")
        if self.backend == "openai" and not self.base_url.startswith(("http://", "https://")):
            raise invalid("base_url", f"must start with http:// or https://, got {self.base_url!r}")
        if self.api_key_env is not None and not self.api_key_env.strip():
            raise invalid("api_key_env", "must name an environment variable (or be null)")
        if self.gpu_memory_utilization > 1:
            raise invalid("gpu_memory_utilization", f"must be at most 1, got {self.gpu_memory_utilization!r}")


@dataclasses.dataclass
class SynthConfig:
    """Stage 1: question pools → teacher → gated SFT rows (DESIGN.md sections 2, 3)."""

    thinking_questions: str = "data/questions/thinking.jsonl"
    """Pool of questions that need reasoning, not fresh facts (.jsonl rows with 'question' and optional 'category'
    and gold 'answers'/'match', or .txt one per line)."""
    search_questions: str = "data/questions/search.jsonl"
    """Pool of questions that need fresh or changing information (.jsonl or .txt)."""
    eval_questions: str | None = "data/eval/test.jsonl"
    """Held-out eval questions: any pool question that is a near duplicate of one is dropped (null: no decontamination)."""
    output: str = "synthetic_data.jsonl"
    """Rows are appended here, one JSON object per line; rerunning the same command resumes."""
    failures: str | None = None
    """Where rejected and failed questions are logged with the reason (null: OUTPUT's name with .failures.jsonl)."""
    export_reference: str | None = None
    """Also write all rows in the reference layout: one JSON array of {messages, type} (null: don't)."""
    num_thinking: int = 200
    """Thinking rows to end up with (rejected questions are replaced by the next ones from the pool)."""
    num_search: int = 200
    """Search rows to end up with."""
    seed: int = 0
    """Seeds the pool order (sampling without replacement) and the teacher's sampling."""
    near_duplicate_threshold: float = 0.7
    """Character-bigram Jaccard similarity at or above which two questions count as near duplicates."""
    retry_rejected: bool = False
    """On a rerun, ask again the questions a quality gate rejected (transient failures are always eligible again)."""
    batch_size: int = 8
    """Questions per step: stage 1 for all of them, then their searches, then stage 2."""
    temperature: float = 0.7
    """Teacher sampling temperature (0: greedy)."""
    top_p: float = 0.95
    """Teacher nucleus sampling."""
    max_tokens_analysis: int = 512
    """Thinking stage 1: the reasoning trace."""
    max_tokens_answer: int = 256
    """Thinking stage 2: the final answer given the trace."""
    max_tokens_query: int = 160
    """Search stage 1: why fresh data is needed + the query, as JSON."""
    max_tokens_grounded: int = 320
    """Search stage 2: the answer grounded in the results."""
    min_trace_chars: int = 10
    """Gate: shorter reasoning traces (thinking and search) are rejected as too short."""
    min_answer_chars: int = 2
    """Gate: shorter answers are rejected as too short."""
    max_repetition: float = 0.3
    """Gate: share of repeated 12-character spans above which a text counts as a repetition loop."""
    require_citation: bool = True
    """Gate: a search answer must cite at least one result as [n] (and no result that does not exist)."""
    search_reason_fallback: bool = False
    """When the teacher's reason to search fails its gate (no reason given, or not about the
    question), use a fixed sentence that opens with the teacher's query instead of rejecting the
    question, and record it in the row's repairs. For small teachers, which mostly answer the
    question instead of saying why to search: without it, whole categories (sports, office
    holders) end up with almost no search rows."""
    decision_line: bool = False
    """Open every trace with a fixed sentence that states the decision: no search needed (thinking
    rows) or a search needed (search rows), so both row types train the same position on the
    same choice, right after the question. Off by default: on the quickstart's 80 rows two
    trainings that differed only in their dropout masks decided very differently (16/30 search
    calls with 4/30 false searches, then 9/30 with 0/30); README, Results."""
    max_consecutive_errors: int = 16
    """Stop the run (resumable) after this many teacher or search errors in a row: the backend is down."""
    teacher: TeacherConfig = dataclasses.field(default_factory=TeacherConfig)
    """The teacher model."""
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    """The search backend that answers the search samples' queries."""

    def __post_init__(self) -> None:
        check_positive(self, "num_thinking", "num_search", "temperature", allow_zero=True)
        check_positive(self, "batch_size", "max_tokens_analysis", "max_tokens_answer", "max_tokens_query",
                       "max_tokens_grounded", "min_answer_chars", "max_consecutive_errors")
        check_positive(self, "min_trace_chars", allow_zero=True)
        if not 0 < self.top_p <= 1:
            raise invalid("top_p", f"must be in (0, 1], got {self.top_p!r}")
        if not 0 < self.near_duplicate_threshold <= 1:
            raise invalid("near_duplicate_threshold", f"must be in (0, 1], got {self.near_duplicate_threshold!r}")
        if not 0 < self.max_repetition <= 1:
            raise invalid("max_repetition", f"must be in (0, 1], got {self.max_repetition!r}")
        if not self.output.strip():
            raise invalid("output", "must be a file path")
        if self.num_thinking == 0 and self.num_search == 0:
            raise invalid("num_thinking", "num_thinking and num_search are both 0: nothing to synthesize")



# ---- train ---------------------------------------------------------------------------


@dataclasses.dataclass
class TrainConfig:
    """LoRA fine-tuning of the student on synthesized rows (`thinksearch train`)."""

    model: str = "qwen2.5-coder-0.5b-instruct"
    """Base model: offline alias, local model directory, .gguf file or hub id."""
    data: list[str] = dataclasses.field(default_factory=lambda: ["synthetic_data.jsonl"])
    """Training rows: JSONL files written by synth, or JSON arrays in the reference layout ([{"messages", "type"}])."""
    output_dir: str = "qwen_lora_model"
    """Run directory: adapter, tokenizer, train_config.yaml, metrics.json, loss.png, checkpoints/."""
    lora_r: int = 16
    """LoRA rank (reference recipe: 16)."""
    lora_alpha: int = 32
    """LoRA scaling numerator; the update is scaled by lora_alpha / lora_r (reference recipe: 32)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input (reference recipe: 0.05)."""
    target_modules: list[str] = dataclasses.field(default_factory=lambda: ["all-linear"])
    """Modules that get LoRA: all-linear (every linear projection except the LM head) or names such as q_proj v_proj."""
    trainable_tokens: list[str] = dataclasses.field(default_factory=lambda: ["<tool_call>", "</tool_call>"])
    """Special tokens whose input and output embedding rows are trained too (PEFT trainable tokens): LoRA on the linear layers cannot teach a base model to emit a token its LM head never learned. Tokens the tokenizer lacks are skipped; [] turns this off."""
    trainable_tokens_lr_scale: float = 10.0
    """Learning rate of the trainable token rows, as a multiple of learning_rate: a row starts far from where it must go (measured: 4 steps at 3e-4 left <tool_call> at rank ~40,000)."""
    batch_size: int = 2
    """Rows per device per forward pass (reference recipe: 2)."""
    grad_accum: int = 8
    """Forward passes per optimizer step; effective batch = batch_size x grad_accum x devices (reference recipe: 8)."""
    learning_rate: float = 2e-4
    """Peak learning rate of AdamW (reference recipe: 2e-4)."""
    epochs: float = 3.0
    """Passes over the training rows (ignored when max_steps is set)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (null: run `epochs` epochs)."""
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """How the learning rate decays after warmup."""
    warmup_ratio: float = 0.03
    """Fraction of the optimizer steps spent warming the learning rate up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm."""
    max_length: int = 2048
    """Longest row in tokens; longer rows are skipped and counted (never cut), so raise it if many are skipped."""
    eval_fraction: float = 0.05
    """Share of rows held out for the eval loss (at least one row once there are 10 or more; 0: no holdout)."""
    eval_steps: int | None = None
    """Evaluate every this many optimizer steps (null: at each checkpoint and at the end)."""
    seed: int = 42
    """Seed of the holdout split, the shuffling, LoRA init and dropout."""
    logging_steps: int = 1
    """Log the loss every this many optimizer steps (the loss curve's resolution)."""
    save_steps: int = 50
    """Save a resumable checkpoint every this many optimizer steps."""
    save_total_limit: int = 2
    """Checkpoints kept on disk (older ones are deleted)."""
    keep_checkpoints: bool = False
    """Keep checkpoints/ after a run finishes (by default they are removed once the adapter is saved)."""
    group_by_length: bool = True
    """Batch rows of similar length together, so dynamic padding wastes little."""
    packing: bool = False
    """Pack several rows into each sequence of max_length tokens (best-fit, rows never split; implies padding_free)."""
    padding_free: bool = False
    """Concatenate each batch into one sequence with position ids instead of padding it."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: much less memory (activations of one layer at a time) for more time."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Compute precision: auto = bf16 on a GPU or CPU that has it (AVX512-BF16/AMX), fp16 on older GPUs, else fp32."""
    skip_bad_rows: bool = False
    """Skip rows that don't follow the format (counted and listed in metrics.json) instead of stopping at the first."""

    def __post_init__(self) -> None:
        check_positive(self, "lora_r", "lora_alpha", "batch_size", "grad_accum", "learning_rate", "epochs",
                       "max_steps", "max_length", "eval_steps", "logging_steps", "save_steps", "save_total_limit",
                       "max_grad_norm", "trainable_tokens_lr_scale")
        check_positive(self, "weight_decay", allow_zero=True)
        if not 0 <= self.lora_dropout < 1:
            raise invalid("lora_dropout", f"must be in [0, 1), got {self.lora_dropout!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise invalid("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio!r}")
        if not 0 <= self.eval_fraction < 0.5:
            raise invalid("eval_fraction", f"must be in [0, 0.5), got {self.eval_fraction!r}")
        if not self.data:
            raise invalid("data", "give at least one data file")
        if not self.target_modules or any(not m.strip() for m in self.target_modules):
            raise invalid("target_modules", "give all-linear or module names such as q_proj v_proj")
        if "all-linear" in self.target_modules and len(self.target_modules) > 1:
            raise invalid("target_modules", "all-linear already covers every linear projection; give it alone")
        if not self.model.strip():
            raise invalid("model", "empty model reference")
        if not self.output_dir.strip():
            raise invalid("output_dir", "empty output directory")


# ---- agent: ask / chat / serve -------------------------------------------------------


@dataclasses.dataclass
class AgentConfig:
    """How ``ask``, ``chat`` and ``serve`` generate: model, engine, sampling, tool loop."""

    model: str = "qwen2.5-coder-0.5b-instruct"
    """Model reference: offline alias, local directory (merged model or adapter), .gguf file or hub id; `+ADAPTER` adds a LoRA adapter. The openai engine renders prompts with this model's chat template."""
    adapter: str | None = None
    """LoRA adapter directory put on --model (transformers engine only)."""
    engine: Literal["auto", "transformers", "openai", "llamacpp"] = "auto"
    """auto: llamacpp for a GGUF without adapter when xllamacpp is installed (fastest on CPU), else transformers; openai: any OpenAI-compatible endpoint (vLLM, llama.cpp server, SGLang)."""
    base_url: str | None = None
    """openai engine: the endpoint, e.g. http://127.0.0.1:8000/v1."""
    served_model: str | None = None
    """openai engine: the model name at the endpoint (default: the first one it lists)."""
    endpoint_api: Literal["completions", "chat"] = "completions"
    """openai engine: completions sends the prompt rendered here with --model's chat template (exactly as in training); chat lets the endpoint apply its own template."""
    api_key_env: str = "THINKSEARCH_ENDPOINT_KEY"
    """openai engine: environment variable holding the endpoint's API key (unset: no key sent)."""
    dtype: str = "auto"
    """transformers engine: auto (bf16 where the hardware has it, else fp32), float32, bfloat16, float16."""
    device: str = "auto"
    """transformers engine: auto, cpu, cuda, cuda:1 ..."""
    threads: int | None = None
    """llamacpp engine: CPU threads (default: all cores)."""
    context_tokens: int = 4096
    """Longest prompt + completion the agent lets a conversation reach (tokens)."""
    max_rounds: int = 3
    """Model turns per question at most; each turn may call the search tool once the previous results are in."""
    max_new_tokens: int = 512
    """Tokens generated per model turn at most."""
    temperature: float = 0.0
    """0 = greedy (reproducible); > 0 samples."""
    top_p: float = 1.0
    """Nucleus sampling threshold (with temperature > 0)."""
    repetition_penalty: float = 1.0
    """> 1 discourages repeating tokens (transformers engine)."""
    seed: int | None = None
    """Sampling seed (with temperature > 0)."""
    system_prompt: str | None = None
    """System prompt; default: the reference prompt the model was trained with (format.SYSTEM_PROMPT)."""
    history_tokens: int = 3072
    """chat: the oldest exchanges are dropped once the conversation passes this many tokens."""
    timeout_s: float = 600.0
    """openai engine: seconds before a request to the endpoint is abandoned."""
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    """The search backend that answers the model's tool calls."""

    def __post_init__(self) -> None:
        check_positive(self, "max_rounds", "max_new_tokens", "context_tokens", "history_tokens", "timeout_s", "top_p", "threads")
        check_positive(self, "temperature", allow_zero=True)
        check_positive(self, "repetition_penalty")
        if self.top_p > 1:
            raise invalid("top_p", f"must be <= 1, got {self.top_p!r}")
        if self.max_new_tokens >= self.context_tokens:
            raise invalid("max_new_tokens", f"must be below --context-tokens ({self.context_tokens}), got {self.max_new_tokens}")
        if self.engine == "openai" and not self.base_url:
            raise invalid("base_url", "the openai engine needs the endpoint's URL, e.g. http://127.0.0.1:8000/v1")
        if self.engine in ("openai", "llamacpp") and (self.adapter or has_adapter(self.model)):
            raise invalid("adapter", f"the {self.engine} engine cannot put a LoRA adapter on the model; "
                          "serve the adapter at the endpoint (vLLM --lora-modules) or use a merged model")
        if self.system_prompt is not None and not self.system_prompt.strip():
            raise invalid("system_prompt", "must not be empty (leave it out for the reference prompt)")


@dataclasses.dataclass
class ServeConfig:
    """The OpenAI-compatible HTTP server (``thinksearch serve``); the model comes from AgentConfig."""

    host: str = "127.0.0.1"
    """Address to bind; only this machine can connect unless you choose another (then set a key)."""
    port: int = 8000
    """TCP port (0 picks a free one)."""
    served_name: str = "thinksearch"
    """The model id clients pass as `model` and /v1/models lists."""
    key_env: str | None = None
    """Environment variable holding the bearer key clients must send; null serves without a key."""
    run_tools: bool = False
    """Run the search tool in the server (agent loop) and answer with the final text, instead of returning tool_calls."""
    max_body_bytes: int = 1_000_000
    """Request bodies larger than this are refused with 413."""
    max_tokens_limit: int = 2048
    """Largest max_tokens a request may ask for (400 above)."""
    max_batch: int = 8
    """Non-streaming requests waiting together are generated as one batch of up to this many."""
    batch_wait_ms: float = 5.0
    """How long the batcher waits for more requests to join a batch that is not full."""
    max_queue: int = 256
    """Requests waiting beyond this get 503 (server busy) instead of queueing forever."""

    def __post_init__(self) -> None:
        check_positive(self, "max_body_bytes", "max_tokens_limit", "max_batch", "max_queue")
        check_positive(self, "port", "batch_wait_ms", allow_zero=True)
        if self.port > 65535:
            raise invalid("port", f"must be <= 65535, got {self.port}")
        if not self.served_name.strip():
            raise invalid("served_name", "must not be empty")


# ---- eval ----------------------------------------------------------------------------


@dataclasses.dataclass
class EvalConfig:
    """`thinksearch eval`: which questions, which models, how to decode, where the reports go."""

    data: str = "data/eval/test.jsonl"
    """Eval file: JSONL rows {"type": "thinking"|"search", "question": ...}, or reference-layout rows {"messages": [system, user, ...], "type"} (JSONL or one JSON array)."""
    models: list[str] = dataclasses.field(default_factory=lambda: ["base=qwen2.5-coder-0.5b-instruct"])
    """Models to compare, each NAME=REF (REF: alias, model directory, .gguf, hub id; REF+ADAPTER_DIR adds a LoRA adapter). On the command line also --model NAME=REF, repeatable."""
    output_dir: str = "runs/eval"
    """Where report.json, report.md, report.png and the per-model outputs (for resuming) go."""
    limit_per_type: int | None = None
    """Evaluate at most this many questions of each type, a seeded sample without replacement (the reference used 30 + 30); null: all."""
    seed: int = 0
    """Seed of the subsample, and of sampling when temperature > 0."""
    max_new_tokens: int = 512
    """Most tokens generated per question; an output cut there counts as truncated."""
    temperature: float = 0.0
    """0 decodes greedily (the default, reproducible); > 0 samples, seeded by --seed."""
    top_p: float = 1.0
    """Nucleus sampling mass when temperature > 0."""
    batch_size: int = 8
    """Questions generated together; 1 generates one at a time."""
    continuous_batching: bool = True
    """Greedy decoding: refill the batch as soon as a question finishes (transformers' continuous batching) instead of fixed batches that wait for their longest answer."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype. float32 (default): an output does not depend on which questions share its batch; bfloat16 / auto are faster on CPUs with AMX or on GPUs, but a near-tie can then flip a greedy pick (bench/results/eval.json)."""
    device: str = "auto"
    """cpu, cuda, cuda:1 ...; auto picks a GPU when there is one."""
    restart: bool = False
    """Discard outputs saved in output_dir and generate again (default: resume; refuses if the settings changed)."""
    agent: bool = False
    """Answer each question through the agent loop (searches run, results go back, the model answers) and score the final answers; off: score the first turn only."""
    max_rounds: int = 3
    """With --agent: model turns per question at most (as in ask/chat)."""
    gold_only: bool = False
    """Subsample only from questions that carry gold answers (or are marked unanswerable), so every sampled answer is scored."""
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    """With --agent: the search backend that answers the models' tool calls (in a run: the run's index)."""

    def __post_init__(self) -> None:
        check_positive(self, "limit_per_type", "max_new_tokens", "batch_size", "max_rounds")
        check_positive(self, "temperature", allow_zero=True)
        if not 0 < self.top_p <= 1:
            raise invalid("top_p", f"must be in (0, 1], got {self.top_p!r}")
        if not self.data.strip():
            raise invalid("data", "empty path")
        if not self.output_dir.strip():
            raise invalid("output_dir", "empty path")
        try:
            parse_model_specs(self.models)
        except ConfigError as e:
            raise invalid("models", str(e)) from None



# ---- run: the whole pipeline ---------------------------------------------------------



@dataclasses.dataclass
class RunConfig:
    """`thinksearch run CONFIG`: index → synth → train → eval in one run directory.

    The YAML file is this dataclass: top-level run fields plus one section per stage. Inside a
    run the stages hand files to each other, so their paths are the run directory's (data.jsonl,
    adapter/, eval/, index.sqlite), whatever the sections say.
    """

    run_dir: str = "runs/quickstart"
    """Every artifact of the run goes here; rerunning the same command resumes where it stopped."""
    stages: list[Literal["index", "synth", "train", "eval"]] = dataclasses.field(
        default_factory=lambda: ["index", "synth", "train", "eval"])
    """Stages to run (in pipeline order whatever the order given); complete stages are skipped anyway."""
    corpus: list[str] = dataclasses.field(default_factory=lambda: ["data/corpus/snapshot.jsonl"])
    """Files or folders the local search index is built from (search backend 'local'; empty: use synth.search.index as it is)."""
    synth: SynthConfig = dataclasses.field(default_factory=SynthConfig)
    """Stage 1: synthesis (teacher, question pools, search backend)."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    """Stage 2: LoRA training; train.model is also the base model eval compares against."""
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    """Stage 3: evaluation of the base and the tuned model."""
    agent: AgentConfig = dataclasses.field(default_factory=AgentConfig)
    """Not used by the run: what `thinksearch ask/chat/serve --config` read from the same file."""
    serve: ServeConfig = dataclasses.field(default_factory=ServeConfig)
    """Not used by the run: `thinksearch serve --config` settings."""

    def __post_init__(self) -> None:
        if not self.run_dir.strip():
            raise invalid("run_dir", "must be a directory path")
        if not self.stages:
            raise invalid("stages", "give at least one of index, synth, train, eval")
