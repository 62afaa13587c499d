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
    url: str | None = None
    """searxng / wikipedia: base URL (default from $THINKSEARCH_SEARXNG_URL / the language's wikipedia)."""
    timeout_s: float = 10.0
    """HTTP backends: seconds before a request is abandoned."""
    cache: str | None = None
    """SQLite cache of results keyed by (backend, query, k); null disables it."""
    max_result_chars: int = 300
    """Each result is cut to this many characters before a model sees it."""
    max_total_chars: int = 1500
    """The whole tool turn is cut to this many characters."""

    def __post_init__(self) -> None:
        check_positive(self, "k", "timeout_s", "max_result_chars", "max_total_chars")


# ---- teacher + synth -----------------------------------------------------------------



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
                       "max_grad_norm")
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



# ---- eval ----------------------------------------------------------------------------



# ---- run: the whole pipeline ---------------------------------------------------------

