"""Stage 2: fit a LoRA adapter on synthesized rows, and merge it into a full model.

The rows (DESIGN.md section 2) are chat conversations. Each is rendered through the base
model's own chat template and tokenized so that the loss falls only on what the assistant
says: its thinking, its answer, its tool-call text and the ``<|im_end|>`` that closes its turn;
never the system prompt, the user turn or the tool results. Qwen2.5's template has no
``{% generation %}`` markers, so the assistant spans are found by rendering each conversation
prefix by prefix (:func:`encode`); TRL's ``SFTTrainer`` receives the token ids with that mask
and fits a PEFT LoRA adapter. Batches are padded to their own longest row (rows of similar
length are grouped), optionally packed or padding-free; nothing is ever cut: a row longer than
``max_length`` is skipped and counted.

Measured on the 2-core AVX512-BF16/AMX machine this was built on (bench/bench_train.py, 0.5B
model, rows of about 700 tokens): bf16 autocast with the frozen weights stored in bf16 trains
1.4x faster than fp32 weights under autocast and takes less memory, so ``precision: auto`` picks
it wherever the hardware computes bf16; TRL's fused LM head (a Triton kernel) costs 1.8x the CPU
time of projecting only the trained positions, so CPUs get that sparse head instead.

A run directory holds the adapter (safetensors + adapter_config.json + thinksearch_adapter.json),
the tokenizer, the resolved config (train_config.yaml), metrics.json, loss.png and, while
training, checkpoints/. Every checkpoint is sealed with the size and sha256 of its files once it
is complete, so ``--resume`` can tell an interrupted save (skipped) from a damaged one (a clear
error). Under ``accelerate launch`` each process runs this same code (DDP, FSDP or DeepSpeed,
as accelerate's config says).

Run as: ``thinksearch train --data synthetic_data.jsonl --output-dir qwen_lora_model``
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from thinksearch import config as config_mod
from thinksearch import format as fmt
from thinksearch import models
from thinksearch.config import TrainConfig
from thinksearch.errors import ThinksearchError
from thinksearch.files import read_json, read_text, replacing_dir, write_json_atomic, write_text_atomic

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

ROLES = ("system", "user", "assistant", "tool")
RUN_FILE = "run.json"
CONFIG_FILE = "train_config.yaml"
METRICS_FILE = "metrics.json"
LOSS_PNG = "loss.png"
CHECKPOINTS = "checkpoints"
SEAL_FILE = "thinksearch_checkpoint.json"
MERGED_META = "thinksearch_merged.json"
# Settings that may differ when a run is resumed: they change neither the data, nor the
# optimizer's path, nor the number of steps.
RESUME_MAY_CHANGE = frozenset({
    "output_dir", "logging_steps", "save_steps", "save_total_limit", "keep_checkpoints", "eval_steps",
    "gradient_checkpointing", "precision", "padding_free", "skip_bad_rows",
})
MAX_LISTED_SKIPS = 100


# ============================================================================ rows


@dataclass
class Row:
    """One training conversation, checked and normalised."""

    where: str
    """``file:line`` of the row, for messages."""
    id: str
    type: str | None
    messages: list[dict[str, Any]]


@dataclass
class Skip:
    """A row left out of training, and why."""

    where: str
    reason: str
    """bad_row, too_long or no_assistant_tokens."""
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason, "detail": self.detail}


class BadRow(ValueError):
    """A row that does not follow the format; the message says what is wrong."""


def _control_tokens(text: str) -> list[str]:
    return [t for t in fmt.find_tags(text) if t.startswith("<|")]


def _normalise_call(call: Any, where: str) -> dict[str, Any]:
    if not isinstance(call, Mapping):
        raise BadRow(f"{where} is not an object")
    fn = call.get("function", call)
    if not isinstance(fn, Mapping):
        raise BadRow(f"{where}: 'function' must be an object")
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRow(f"{where}: missing or empty 'name'")
    args = fn.get("arguments")
    if isinstance(args, str):  # OpenAI clients send the arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError as e:
            raise BadRow(f"{where}: 'arguments' is not valid JSON ({e})") from None
    if not isinstance(args, Mapping):
        raise BadRow(f"{where}: 'arguments' must be a JSON object")
    return {"type": "function", "function": {"name": name, "arguments": dict(args)}}


def check_row(obj: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """Check one row against the format; return its type and normalised messages.

    Raises :class:`BadRow` naming the first problem.

    >>> check_row({"type": "thinking", "messages": [{"role": "user", "content": "1+1?"},
    ...            {"role": "assistant", "content": "<thinking>\\n1+1=2\\n</thinking>\\n\\n2"}]})[0]
    'thinking'
    >>> check_row({"messages": [{"role": "user", "content": "hi"}]})
    Traceback (most recent call last):
    ...
    thinksearch.train.BadRow: no assistant turn to learn from
    """
    if not isinstance(obj, Mapping):
        raise BadRow(f"expected a JSON object with 'messages', got {type(obj).__name__}")
    kind = obj.get("type")
    if kind is not None and kind not in ("thinking", "search"):
        raise BadRow(f"'type' must be 'thinking' or 'search', got {kind!r}")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRow("'messages' must be a non-empty list")
    out: list[dict[str, Any]] = []
    calls_seen = 0
    for i, m in enumerate(messages, 1):
        if not isinstance(m, Mapping):
            raise BadRow(f"message {i} is not an object")
        role = m.get("role")
        if role not in ROLES:
            raise BadRow(f"message {i}: unknown role {role!r} (allowed: {', '.join(ROLES)})")
        where = f"message {i} ({role})"
        content = m.get("content")
        tool_calls = m.get("tool_calls") or []
        if content is None and role == "assistant" and tool_calls:
            content = ""
        if not isinstance(content, str):
            raise BadRow(f"{where}: 'content' must be a string")
        bad = _control_tokens(content)
        if bad:
            raise BadRow(f"{where}: contains the chat-template token {bad[0]} (it would break the turn structure)")
        if role == "system" and i != 1:
            raise BadRow(f"{where}: a system message may only come first")
        prev = out[-1]["role"] if out else None
        # (a call may be structured or written inline, as the reference layout writes it)
        called = prev == "assistant" and (out[-1].get("tool_calls") or fmt.parse(out[-1]["content"]).tool_calls)
        if role == "tool" and not (prev == "tool" or called):
            raise BadRow(f"{where}: a tool result must follow an assistant turn that calls a tool")
        if role == "assistant" and prev not in ("user", "tool"):
            raise BadRow(f"{where}: an assistant turn must follow a user or tool turn")
        msg: dict[str, Any] = {"role": role, "content": content}
        if role == "assistant":
            if not isinstance(tool_calls, list):
                raise BadRow(f"{where}: 'tool_calls' must be a list")
            if tool_calls:
                msg["tool_calls"] = [_normalise_call(c, f"{where}: tool call {j}") for j, c in enumerate(tool_calls, 1)]
            calls_seen += len(tool_calls) + len(fmt.parse(content).tool_calls)
            if not content.strip() and not tool_calls:
                raise BadRow(f"{where}: empty assistant turn")
        elif tool_calls:
            raise BadRow(f"{where}: only assistant turns may have 'tool_calls'")
        if role == "tool" and isinstance(m.get("name"), str):
            msg["name"] = m["name"]
        out.append(msg)
    roles = [m["role"] for m in out]
    if "user" not in roles:
        raise BadRow("no user turn")
    if "assistant" not in roles:
        raise BadRow("no assistant turn to learn from")
    if roles[-1] != "assistant":
        raise BadRow(f"the last turn must be the assistant's, got a {roles[-1]} turn")
    if kind == "search" and not calls_seen:
        raise BadRow("type 'search' but no assistant turn calls the search tool")
    if kind == "thinking" and calls_seen:
        raise BadRow("type 'thinking' but an assistant turn calls a tool")
    return kind, out


def _json_array_items(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """Yield (line, item) for each element of a top-level JSON array, with its line number.

    A break in the array itself is an error even with --skip-bad-rows: nothing after it can be read.
    """
    dec = json.JSONDecoder()
    pos = text.index("[") + 1
    n = len(text)

    def skip_ws(p: int) -> int:
        while p < n and text[p] in " \t\r\n":
            p += 1
        return p

    pos = skip_ws(pos)
    if pos < n and text[pos] == "]":
        return
    while True:
        line = text.count("\n", 0, pos) + 1
        try:
            item, pos = dec.raw_decode(text, pos)
        except ValueError as e:
            raise ThinksearchError(f"{path}:{line}: invalid JSON: {e}") from None
        yield line, item
        pos = skip_ws(pos)
        if pos < n and text[pos] == ",":
            pos = skip_ws(pos + 1)
            continue
        if pos < n and text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        raise ThinksearchError(f"{path}:{line}: invalid JSON: expected ',' or ']' after an array item")


def _iter_file(path: Path) -> Iterator[tuple[int, Any | BadRow]]:
    """(line, parsed object or the parse error) for each row of a JSONL file or a JSON array file."""
    text = read_text(path, "data file")
    if text.lstrip().startswith("["):  # the reference layout: one JSON array of {"messages", "type"}
        yield from _json_array_items(path, text)
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except ValueError as e:
            yield lineno, BadRow(f"invalid JSON: {e}")


def read_rows(paths: Sequence[str | Path], skip_bad: bool = False) -> tuple[list[Row], list[Skip]]:
    """Read and check every row; a bad row stops with ``file:line: what is wrong`` unless ``skip_bad``."""
    rows: list[Row] = []
    skipped: list[Skip] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            raise ThinksearchError(f"data path {path} is a directory; give the JSONL file(s) inside it")
        for lineno, obj in _iter_file(path):
            where = f"{path}:{lineno}"
            try:
                if isinstance(obj, BadRow):
                    raise obj
                kind, messages = check_row(obj)
            except BadRow as e:
                if not skip_bad:
                    raise ThinksearchError(f"{where}: {e} (fix the row, or pass --skip-bad-rows to skip such rows)") from None
                skipped.append(Skip(where, "bad_row", str(e)))
                continue
            row_id = obj.get("id") if isinstance(obj.get("id"), str) else where
            rows.append(Row(where, row_id, kind, messages))
    if not rows:
        hint = f" ({len(skipped)} bad rows skipped)" if skipped else ""
        raise ThinksearchError(f"no usable training rows in {', '.join(map(str, paths))}{hint}")
    return rows, skipped


# ============================================================================ tokens and mask


@dataclass
class Encoded:
    input_ids: list[int]
    assistant_masks: list[int]
    """1 where the token is said by the assistant (trained), 0 elsewhere."""


def _end_of_turn(tokenizer: Any, tail: str) -> int:
    """Where the assistant's turn ends in ``tail`` (the rendered turn): just after its end-of-turn token."""
    for tok in (getattr(tokenizer, "eos_token", None), *fmt.END_OF_TURN):
        if tok:
            k = tail.rfind(tok)
            if k >= 0:
                return k + len(tok)
    return len(tail.rstrip())


def assistant_spans(tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn in it.

    A span starts after ``<|im_start|>assistant\\n`` (what the prompt ends with at inference)
    and ends after the turn's ``<|im_end|>``; found by rendering prefixes of the conversation
    through the tokenizer's own chat template.
    """
    full = fmt.render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = fmt.render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = fmt.render(tokenizer, messages[: i + 1])
        if not (upto.startswith(before) and full.startswith(upto)):
            raise ThinksearchError(
                "this model's chat template does not render a conversation prefix by prefix, so the assistant "
                "turns cannot be located for the loss mask; use a model with a Qwen2.5-style template"
            )
        spans.append((len(before), len(before) + _end_of_turn(tokenizer, upto[len(before):])))
    return full, spans


def encode(tokenizer: "PreTrainedTokenizerBase", messages: Sequence[Mapping[str, Any]]) -> Encoded:
    """Token ids of a conversation and the mask of the tokens the assistant says.

    Each segment (prompt part, assistant part, prompt part ...) is tokenized on its own, so
    the mask boundaries are exact and the assistant's tokens are the ones it generates at
    inference after a prompt that ends with ``<|im_start|>assistant\\n``.
    """
    full, spans = assistant_spans(tokenizer, messages)
    ids: list[int] = []
    mask: list[int] = []
    pos = 0

    def add(text: str, bit: int) -> None:
        if text:
            seg = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids.extend(seg)
            mask.extend([bit] * len(seg))

    for a, b in spans:
        add(full[pos:a], 0)
        add(full[a:b], 1)
        pos = b
    add(full[pos:], 0)
    return Encoded(ids, mask)


@dataclass
class Prepared:
    """Encoded rows, split into train and holdout, and what was left out."""

    train: list[Encoded]
    eval: list[Encoded]
    skipped: list[Skip]
    rows_read: int
    fingerprint: str
    """sha256 of the encoded rows in order: a resumed run must see the same data."""


def holdout_size(n: int, fraction: float) -> int:
    """Rows held out for the eval loss.

    >>> holdout_size(100, 0.05), holdout_size(12, 0.05), holdout_size(8, 0.05), holdout_size(100, 0.0)
    (5, 1, 0, 0)
    """
    if fraction <= 0 or n < 2:
        return 0
    k = int(round(n * fraction))
    return max(k, 1) if n >= 10 else k


def prepare(tokenizer: Any, rows: Sequence[Row], max_length: int, eval_fraction: float, seed: int,
            skipped: Sequence[Skip] = ()) -> Prepared:
    """Encode rows, leave out the too long and the unlearnable ones (counted), split off a holdout."""
    skips = list(skipped)
    kept: list[Encoded] = []
    for row in rows:
        enc = encode(tokenizer, row.messages)
        if not any(enc.assistant_masks):
            skips.append(Skip(row.where, "no_assistant_tokens", "no token of the row is said by the assistant"))
        elif len(enc.input_ids) > max_length:
            skips.append(Skip(row.where, "too_long", f"{len(enc.input_ids)} tokens > max_length {max_length}"))
        else:
            kept.append(enc)
    if not kept:
        raise ThinksearchError(f"no row fits: all {len(rows)} rows were left out ({_skip_counts(skips)}); "
                               "raise --max-length or check the data")
    order = list(range(len(kept)))
    random.Random(seed).shuffle(order)
    k = holdout_size(len(kept), eval_fraction)
    eval_rows = [kept[i] for i in sorted(order[:k])]
    train_rows = [kept[i] for i in sorted(order[k:])]
    digest = hashlib.sha256()
    for part in (train_rows, eval_rows):
        for e in part:
            digest.update(json.dumps([e.input_ids, e.assistant_masks]).encode())
        digest.update(b"|")
    return Prepared(train_rows, eval_rows, skips, len(rows) + sum(s.reason == "bad_row" for s in skipped),
                    digest.hexdigest())


def _skip_counts(skips: Sequence[Skip]) -> str:
    counts: dict[str, int] = {}
    for s in skips:
        counts[s.reason] = counts.get(s.reason, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"


# ============================================================================ run directory


def _read_json(path: Path) -> dict[str, Any] | None:
    data = read_json(path)
    return data if isinstance(data, dict) else None


def saved_config(output_dir: str | Path) -> dict[str, Any] | None:
    """The config a run directory was started with (None if it holds no run)."""
    import yaml

    path = Path(output_dir).expanduser() / CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    section = data.get("train") if isinstance(data, dict) else None
    return dict(section) if isinstance(section, dict) else None


def resolve_config(config_path: str | Path | None, overrides: Mapping[str, Any], resume: bool = False) -> TrainConfig:
    """The train config from YAML + flags; with ``resume``, the run's saved config is the base layer.

    So ``thinksearch train --output-dir RUN --resume`` alone continues RUN with its own settings.
    """
    cfg = config_mod.build(TrainConfig, config_path, "train", overrides)
    if not resume:
        return cfg
    saved = saved_config(cfg.output_dir)
    if saved is None:
        return cfg
    data: dict[str, Any] = {}
    if config_path is not None:
        data = dict(config_mod.load_yaml(config_path).get("train") or {})
    known = {f for f in TrainConfig.__dataclass_fields__}
    base = {k: v for k, v in saved.items() if k in known}
    return config_mod.from_dict(TrainConfig, config_mod.merge(config_mod.merge(base, data), overrides), "train")


def check_output_dir(cfg: TrainConfig, resume: bool, overwrite: bool) -> str:
    """Decide what to do with the run directory: 'new', 'resume', 'overwrite' or 'complete'.

    Read-only: every process calls it before any of them writes.
    """
    out = Path(cfg.output_dir).expanduser()
    if resume and overwrite:
        raise ThinksearchError("--resume and --overwrite contradict each other; give one")
    if out.exists() and not out.is_dir():
        raise ThinksearchError(f"output directory {out} is a file")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    run = _read_json(out / RUN_FILE)
    if run is None:
        raise ThinksearchError(
            f"output directory {out} holds files that are not a thinksearch training run; "
            "choose an empty or new directory (--output-dir)")
    if overwrite:
        return "overwrite"
    if not resume:
        started = run.get("started", "?")
        raise ThinksearchError(
            f"output directory {out} already holds a training run ({run.get('status', '?')}, started {started}, "
            f"model {run.get('model', '?')}); pass --resume to continue it or --overwrite to replace it")
    saved = saved_config(out) or {}
    now = config_mod.to_dict(cfg)
    diff = [k for k in now if k not in RESUME_MAY_CHANGE and k in saved and saved[k] != now[k]]
    if diff:
        shown = "; ".join(f"{k}: {saved[k]!r} then, {now[k]!r} now" for k in diff[:4])
        raise ThinksearchError(
            f"--resume: {out} was started with other settings ({shown}); resume with the same settings "
            "or start over with --overwrite")
    return "complete" if run.get("status") == "complete" else "resume"


# ============================================================================ checkpoints


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def seal_checkpoint(ckpt: Path, global_step: int) -> None:
    """Record the size and sha256 of every file of a finished checkpoint (written last, atomically)."""
    files = {}
    for p in sorted(ckpt.rglob("*")):
        if p.is_file() and p.name != SEAL_FILE and not p.name.startswith(f".{SEAL_FILE}"):
            files[str(p.relative_to(ckpt))] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    write_json_atomic(ckpt / SEAL_FILE, {"global_step": global_step, "files": files})


def checkpoint_problem(ckpt: Path) -> tuple[str, str] | None:
    """None if the checkpoint is whole; else ('incomplete' | 'corrupted', what is wrong)."""
    seal_path = ckpt / SEAL_FILE
    if not seal_path.exists():
        return "incomplete", "it was never sealed (interrupted while saving)"
    seal = _read_json(seal_path)
    if seal is None or not isinstance(seal.get("files"), dict):
        return "corrupted", f"{SEAL_FILE} is unreadable"
    for name, want in sorted(seal["files"].items()):
        p = ckpt / name
        if not p.is_file():
            return "corrupted", f"{name} is missing"
        size = p.stat().st_size
        if size != want.get("size"):
            what = "truncated" if size < want.get("size", 0) else "longer than when it was saved"
            return "corrupted", f"{name} is {what} ({size} of {want.get('size')} bytes)"
        if _sha256(p) != want.get("sha256"):
            return "corrupted", f"{name} does not match its checksum"
    return None


def _checkpoints(ckdir: Path) -> list[Path]:
    found = []
    if ckdir.is_dir():
        for p in ckdir.iterdir():
            step = p.name.removeprefix("checkpoint-")
            if p.is_dir() and p.name.startswith("checkpoint-") and step.isdigit():
                found.append((int(step), p))
    return [p for _, p in sorted(found)]


def find_resume_checkpoint(ckdir: Path) -> tuple[Path | None, list[Path], list[str]]:
    """The newest whole checkpoint, the incomplete ones newer than it, and notes for the user.

    A checkpoint left half-written by an interruption is passed over (its files are useless);
    a sealed checkpoint whose files changed since is an error, never silently skipped.
    """
    notes: list[str] = []
    stale: list[Path] = []
    cks = _checkpoints(ckdir)
    for i in range(len(cks) - 1, -1, -1):
        ck = cks[i]
        problem = checkpoint_problem(ck)
        if problem is None:
            return ck, stale, notes
        kind, what = problem
        if kind == "incomplete":
            notes.append(f"{ck.name} is incomplete ({what}); it is discarded")
            stale.append(ck)
            continue
        older = next((c for c in reversed(cks[:i]) if checkpoint_problem(c) is None), None)
        fallback = f"resume from {older.name}" if older else "start from the beginning"
        raise ThinksearchError(
            f"checkpoint {ck} is corrupted: {what}; delete that directory to {fallback}, "
            "or start over with --overwrite")
    return None, stale, notes


# ============================================================================ callbacks


def _callbacks() -> tuple[type, type]:
    """The TrainerCallback classes, built on first use so importing this module stays light."""
    from transformers import TrainerCallback

    class Seal(TrainerCallback):
        """Seal each checkpoint once every process has written its part of it."""

        def on_save(self, args, state, control, **kw):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            args.distributed_state.wait_for_everyone()
            if state.is_world_process_zero and ckpt.is_dir():
                seal_checkpoint(ckpt, state.global_step)
            args.distributed_state.wait_for_everyone()

    class ProgressBar(TrainerCallback):
        """One line: steps, loss, eval loss, tokens/s, elapsed and ETA (main process only)."""

        def __init__(self) -> None:
            self.progress = None
            self.task = None
            self.first: tuple[float, float] | None = None

        def on_train_begin(self, args, state, control, **kw):
            if not state.is_world_process_zero:
                return
            from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            from thinksearch.progress import progress

            self.progress = progress(
                TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("eval {task.fields[eval]}"),
                TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(),
            )
            self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step,
                                               loss="-", eval="-", tps="-")
            self.progress.start()

        def on_step_end(self, args, state, control, **kw):
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            if self.progress is None or not logs:
                return
            fields: dict[str, str] = {}
            if "loss" in logs:
                fields["loss"] = f"{logs['loss']:.4f}"
            if "eval_loss" in logs:
                fields["eval"] = f"{logs['eval_loss']:.4f}"
            if "num_tokens" in logs:
                now, n = time.perf_counter(), float(logs["num_tokens"])
                if self.first is None:
                    self.first = (now, n)
                elif now > self.first[0]:
                    fields["tps"] = f"{(n - self.first[1]) / (now - self.first[0]):,.0f}"
            self.progress.update(self.task, **fields)

        def on_train_end(self, args, state, control, **kw):
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)
                self.progress.stop()
                self.progress = None

    return Seal, ProgressBar


# ============================================================================ the loss head

# Target tokens per LM-head chunk; more than one chunk is recomputed in the backward pass,
# which bounds the logits' memory to chunk x vocab at the cost of one more matmul.
HEAD_CHUNK = 2048


# Rows of logits per pass of the cross-entropy below on a CPU: 8 x 151,936 fp32 values (4.9 MB)
# stay in cache. A GPU takes all rows in one pass (a loop would be many small kernel launches).
CE_ROWS = 8


@functools.cache
def _cross_entropy() -> Any:
    import torch

    class CrossEntropy(torch.autograd.Function):
        """Summed cross-entropy of 16- or 32-bit logits and the top-1 hits, in fp32, a few rows at a time.

        ``F.cross_entropy(logits.float())`` writes the logits out in fp32, keeps the fp32
        log-softmax for the backward pass and makes a zero-filled fp32 gradient, each the size
        of the logits (rows x 151,936), and ``argmax`` reads them once more: on a CPU those
        passes cost as much as the LM head's matmul. Here each block of rows is converted,
        reduced and, in the backward pass, turned into its gradient while it is in cache, which
        is written straight in the logits' dtype. Same values within fp32 rounding (a test
        checks).
        """

        @staticmethod
        def forward(ctx: Any, logits: Any, target: Any) -> tuple[Any, Any]:
            n = logits.shape[0]
            step = ctx.step = CE_ROWS if logits.is_cpu else max(n, 1)
            lse = torch.empty(n, dtype=torch.float32, device=logits.device)
            top = torch.empty_like(lse)
            with torch.autocast(logits.device.type, enabled=False):
                for s in range(0, n, step):
                    part = logits[s:s + step].float()
                    top[s:s + step] = part.amax(-1)
                    lse[s:s + step] = torch.logsumexp(part, -1)
            picked = logits.gather(1, target[:, None]).squeeze(1).float()
            ctx.save_for_backward(logits, target, lse)
            hits = (picked >= top).sum()  # the target is the top-1 (ties aside: argmax picks one)
            ctx.mark_non_differentiable(hits)
            return (lse - picked).sum(), hits

        @staticmethod
        def backward(ctx: Any, grad: Any, _hits: Any) -> tuple[Any, None]:
            logits, target, lse = ctx.saved_tensors
            out, step = torch.empty_like(logits), ctx.step
            rows = torch.arange(min(step, logits.shape[0]), device=logits.device)
            for s in range(0, logits.shape[0], step):
                # A fresh fp32 copy even for fp32 logits: the saved logits must not change.
                part = logits[s:s + step].to(torch.float32, copy=True)
                part.sub_(lse[s:s + step, None]).exp_()  # softmax
                part[rows[:part.shape[0]], target[s:s + step]] -= 1
                out[s:s + step] = part.mul_(grad)
            return out, None

    return CrossEntropy


def _head_chunk(head: Any, hidden: Any, target: Any) -> tuple[Any, Any]:
    return _cross_entropy().apply(head(hidden), target)


def sparse_head_loss(head: Any, hidden: Any, target: Any, chunk: int = HEAD_CHUNK) -> tuple[Any, Any]:
    """Summed cross-entropy and top-1 hits of ``head(hidden)`` against ``target`` (rows = trained positions).

    Only the positions that are trained go through the LM head (the assistant's tokens: about
    40 percent of a row), as plain matmuls: on a CPU this is faster than TRL's tiled kernel,
    which recomputes every tile in the backward pass and is built for Triton GPUs.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    n = target.shape[0]
    if n <= chunk:
        return _head_chunk(head, hidden, target)
    loss = hidden.new_zeros((), dtype=torch.float32)
    hits = torch.zeros((), dtype=torch.long, device=hidden.device)
    for s in range(0, n, chunk):
        part, h = checkpoint(_head_chunk, head, hidden[s:s + chunk], target[s:s + chunk], use_reentrant=False)
        loss, hits = loss + part, hits + h
    return loss, hits


def add_sparse_head(model: Any) -> None:
    """Let ``model(..., labels=L, sparse_head=True)`` return the summed loss over trained positions only.

    Patched on the causal LM itself (under PEFT, under DDP), so the call still goes through
    every wrapper's forward; without ``sparse_head`` the forward is the previous one.
    """
    import types

    from transformers.utils import ModelOutput

    previous = model.forward

    def forward(self: Any, *args: Any, sparse_head: bool = False, **kwargs: Any) -> Any:
        if not sparse_head:
            return previous(*args, **kwargs)
        labels = kwargs.pop("labels")
        kwargs.pop("num_items_in_batch", None)
        kwargs["use_cache"] = False
        hidden = getattr(self, self.base_model_prefix)(*args, **kwargs).last_hidden_state
        target = labels[:, 1:]
        mask = target != -100
        head = self.get_output_embeddings()
        loss, hits = sparse_head_loss(head, hidden[:, :-1][mask].to(head.weight.device), target[mask])
        return ModelOutput(loss=loss, n_targets=mask.sum(), n_correct=hits)

    model.forward = types.MethodType(forward, model)


def cheap_token_rows(model: Any) -> None:
    """Train PEFT's trainable token rows without rebuilding the whole matrix on every pass.

    PEFT's layer copies the full embedding (or LM-head) matrix with the trained rows written in
    on each forward (136M values for a 0.5B Qwen), and the LM head's backward then computes the
    gradient of that whole copy, a vocabulary x hidden matmul, to keep two rows of it. Here the
    frozen layer runs unchanged and only the trained rows are added: looked up for the embedding,
    their logits written into the head's output. Same values and gradients (a test checks).
    Anything unusual (merged, several adapters, a scaled embedding, a biased head) keeps PEFT's
    own forward.
    """
    import types

    import torch
    import torch.nn.functional as F
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    def forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
        base, active = self.base_layer, self.active_adapters
        if self.disable_adapters or self.merged or len(active) != 1 or args or kwargs:
            return type(self).forward(self, x, *args, **kwargs)
        index = torch.tensor(self.token_indices[active[0]], device=x.device)
        delta = self.trainable_tokens_delta[active[0]]
        if isinstance(base, torch.nn.Embedding) and self._get_embed_scale() is None:
            out = base(x)
            hit = (x.unsqueeze(-1) == index).to(delta.dtype)  # one-hot over the trained tokens
            # Every position goes through the small matmul, so the rows always get a gradient
            # (zero when no trained token is in the batch) and DDP sees them used.
            return torch.where(hit.sum(-1, keepdim=True) > 0, (hit @ delta).to(out.dtype), out)
        if isinstance(base, torch.nn.Linear) and base.bias is None:
            out = base(x)
            return out.index_copy(out.dim() - 1, index, F.linear(x, delta.to(x.dtype)).to(out.dtype))
        return type(self).forward(self, x, *args, **kwargs)

    for module in model.modules():
        if isinstance(module, TrainableTokensLayer):
            module.forward = types.MethodType(forward, module)


def keep_mask(x: Any, p: float) -> Any:
    """A dropout keep-mask for ``x``: each element kept independently with probability 1 - p.

    ``nn.Dropout`` on a CPU draws one 32-bit random number per element from a sequential
    generator; here each 64-bit draw gives four 16-bit ones, which makes the mask 2.2x cheaper
    (p is rounded to a multiple of 1/65536: 0.05 becomes 0.050003).
    """
    import torch

    n = x.numel()
    bits = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    return bits.view(torch.int16)[:n].view(x.shape) >= -32768 + round(p * 65536)


def cheap_lora(model: Any) -> int:
    """Run every plain LoRA linear layer of ``model`` with fewer passes over its activations; returns how many.

    PEFT computes ``base(x) + B(A(dropout(x))) * scaling``: the dropout draws one random number
    per input element and scales the whole input by 1/(1-p), and ``scaling`` multiplies the
    whole output, all of it again in the backward pass. With LoRA on all seven projections of
    every layer those passes cost more on a CPU than the adapter's matmuls (0.5B model: the
    dropout alone was 23 percent of a step). Here the mask comes from :func:`keep_mask`, and
    both scales multiply the rank-r activations, which is the same value (the adapter is
    linear) over 16 columns instead of up to 4,864. Anything unusual (merged, several adapters,
    DoRA or another variant, extra arguments) keeps PEFT's own forward.
    """
    import types

    import torch
    from peft.tuners.lora.layer import Linear

    def forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
        active = self.active_adapters
        name = active[0] if len(active) == 1 else None
        drop = self.lora_dropout[name] if name in self.lora_A else None
        if (self.disable_adapters or self.merged or args or kwargs or drop is None or name in self.lora_variant
                or not isinstance(drop, (torch.nn.Dropout, torch.nn.Identity))):
            return type(self).forward(self, x, *args, **kwargs)
        result = self.base_layer(x)
        x = self._cast_input_dtype(x, self.lora_A[name].weight.dtype)
        scale = self.scaling[name]
        if self.training and isinstance(drop, torch.nn.Dropout) and drop.p > 0:
            x = torch.where(keep_mask(x, drop.p), x, 0)
            scale = scale / (1.0 - drop.p)
        return (result + self.lora_B[name](self.lora_A[name](x) * scale)).to(result.dtype)

    layers = [m for m in model.modules() if isinstance(m, Linear)]
    for module in layers:
        module.forward = types.MethodType(forward, module)
    return len(layers)


def _trainer_class() -> type:
    """TRL's SFTTrainer with the sparse LM head on machines without Triton (CPU)."""
    import torch
    from trl import SFTTrainer

    class AssistantSFTTrainer(SFTTrainer):
        def __init__(self, *a: Any, sparse: bool = True, token_lr_scale: float = 1.0, **kw: Any) -> None:
            self.token_lr_scale = token_lr_scale
            super().__init__(*a, **kw)
            # Sharded weights (FSDP, ZeRO-3) need TRL's kernel, which gathers the LM head itself.
            self.sparse = sparse and not (self.is_fsdp_enabled or self.is_deepspeed_enabled)
            self.seen_tokens = 0
            self.hits = [0, 0]
            self.autocast_dtype = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else None
            if self.sparse:
                add_sparse_head(self.model.get_base_model())
                cheap_token_rows(self.model)  # the head's output is only the trained positions here
            if self.args.device.type == "cpu":  # on a GPU those passes are cheap and fused kernels exist
                cheap_lora(self.model)
            if self.sparse and self.autocast_dtype is not None:
                # PEFT casts each LoRA input to the adapter's fp32 and autocast casts it straight
                # back: two copies of every projection's input per pass. Our forward always runs
                # under autocast (compute_loss below), which picks the dtype per op.
                from peft.tuners.tuners_utils import BaseTunerLayer

                for module in self.model.modules():
                    if isinstance(module, BaseTunerLayer):
                        module.cast_input_dtype_enabled = False

        def create_optimizer(self, model=None):
            # The trainable token rows get their own learning rate (the scheduler keeps the ratio).
            opt = super().create_optimizer(model)
            if self.token_lr_scale == 1.0:
                return opt
            rows = {id(p) for n, p in self.model.named_parameters() if "trainable_tokens_delta" in n}
            for group in list(opt.param_groups):
                moved = [p for p in group["params"] if id(p) in rows]
                if moved:
                    group["params"] = [p for p in group["params"] if id(p) not in rows]
                    opt.add_param_group({**group, "params": moved, "lr": group["lr"] * self.token_lr_scale})
            opt.param_groups[:] = [g for g in opt.param_groups if g["params"]]
            return opt

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not self.sparse:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mask = inputs.get("attention_mask")
            if mask is not None and bool((mask[:, 1:] <= mask[:, :-1]).all()):
                # Right padding under a causal mask: no real token can see a pad, and pads are not
                # trained, so the padding mask changes nothing the loss uses. Without it attention
                # takes the causal kernel, 1.5x faster than the masked one on a CPU (rows of ~860).
                inputs = {k: v for k, v in inputs.items() if k != "attention_mask"}
            if self.autocast_dtype is None:
                out = model(**inputs, sparse_head=True)
            else:
                with torch.autocast(self.args.device.type, dtype=self.autocast_dtype):
                    out = model(**inputs, sparse_head=True)
            denom = out.n_targets.clamp(min=1) if num_items_in_batch is None else num_items_in_batch
            loss = out.loss / denom
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages the gradients of the ranks
            if model.training:
                local = mask.sum() if mask is not None else torch.tensor(inputs["input_ids"].numel())
                self.seen_tokens += int(self.accelerator.gather_for_metrics(local.reshape(1)).sum())
                hits = self.accelerator.gather_for_metrics(torch.stack([out.n_correct, out.n_targets]).reshape(1, 2))
                self.hits[0] += int(hits[:, 0].sum())
                self.hits[1] += int(hits[:, 1].sum())
            return (loss, out) if return_outputs else loss

        def log(self, logs, start_time=None):
            if self.sparse and "loss" in logs:
                logs["num_tokens"] = float(self.seen_tokens)  # non-pad tokens seen, like TRL's own counter
                if self.hits[1]:
                    logs["mean_token_accuracy"] = self.hits[0] / self.hits[1]
                self.hits = [0, 0]
            super().log(logs, start_time)

    return AssistantSFTTrainer


# ============================================================================ training


def pick_precision(choice: str) -> str:
    """'bf16', 'fp16' or 'fp32' for this machine (``auto``: the fastest one the hardware computes natively)."""
    import torch

    cuda = torch.cuda.is_available()
    if choice == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if models.cpu_has_bf16() else "fp32"
    if choice == "fp16" and not cuda:
        raise ThinksearchError("--precision fp16 needs a GPU; on CPU use bf16 (if the CPU has AVX512-BF16/AMX) or fp32")
    return choice


def linear_module_names(model: Any) -> list[str]:
    """Names (last component) of the model's linear layers: what target_modules may list."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                   if isinstance(mod, torch.nn.Linear) and name})


def trainable_token_ids(tokenizer: Any, tokens: Sequence[str]) -> list[int]:
    """Ids of the ``tokens`` that are single tokens of this tokenizer (the others are skipped)."""
    ids = []
    for t in tokens:
        enc = tokenizer(t, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            ids.append(enc[0])
    return ids


def lora_config(cfg: TrainConfig, model: Any, token_ids: Sequence[int] = (), lm_head: bool = True) -> Any:
    """The PEFT LoraConfig of a run, refusing target module names the model doesn't have.

    ``token_ids`` get trainable rows in the input embeddings and, with ``lm_head`` where the LM
    head is not tied to them, in the LM head as well. Why: in Qwen2.5-Coder-0.5B-Instruct the LM-head row of
    ``<tool_call>`` is 0.93 cosine-similar to ``<|im_start|>``'s and never wins; after LoRA
    alone the tuned model wrote ``<|im_start|>`` where its calls should start.
    """
    from peft import LoraConfig

    targets: str | list[str]
    if cfg.target_modules == ["all-linear"]:
        targets = "all-linear"
    else:
        have = linear_module_names(model)
        unknown = [m for m in cfg.target_modules if m not in have]
        if unknown:
            raise config_mod.FieldError(
                "target_modules",
                f"unknown module {', '.join(map(repr, unknown))} for {cfg.model} "
                f"(its linear modules: {', '.join(have)}; or all-linear)", "train")
        targets = list(cfg.target_modules)
    tokens: dict[str, list[int]] | None = None
    if token_ids:
        names = {id(mod): name for name, mod in model.named_modules()}
        tokens = {names[id(model.get_input_embeddings())].rsplit(".", 1)[-1]: list(token_ids)}
        if lm_head and not getattr(model.config, "tie_word_embeddings", False):
            tokens[names[id(model.get_output_embeddings())].rsplit(".", 1)[-1]] = list(token_ids)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM", trainable_token_indices=tokens)


def adapter_digest(state_dict: Mapping[str, Any]) -> str:
    """sha256 over the adapter's tensors (sorted by name): equal on every rank after a DDP step."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _dataset(rows: Sequence[Encoded]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({
        "input_ids": [r.input_ids for r in rows],
        "assistant_masks": [r.assistant_masks for r in rows],
    })


def sft_args(cfg: TrainConfig, run_dir: Path, precision: str, has_eval: bool, resuming: bool = False) -> Any:
    """TRL's SFTConfig for a run (checkpoints go to RUN_DIR/checkpoints)."""
    import torch
    from trl import SFTConfig

    accel = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    eval_steps = cfg.eval_steps or cfg.save_steps
    return SFTConfig(
        output_dir=str(run_dir / CHECKPOINTS),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        eval_on_start=has_eval and not resuming,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not accel,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        packing=cfg.packing,
        padding_free=cfg.padding_free,
        # Rows were measured already (too long ones are skipped, never cut); packing needs the sequence length.
        max_length=cfg.max_length if cfg.packing else None,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        log_level="warning",
    )


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, Any]
    is_main: bool = True
    notes: list[str] = field(default_factory=list)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
          callbacks: Sequence[Any] = ()) -> TrainResult:
    """Fit a LoRA adapter as ``cfg`` says; write the run directory; return its metrics.

    ``resume`` continues an interrupted run from its newest whole checkpoint (a run directory
    that holds no run yet is simply started); ``overwrite`` replaces a previous run.
    ``callbacks`` are extra ``transformers.TrainerCallback`` objects.
    """
    run_dir = Path(cfg.output_dir).expanduser()
    action = check_output_dir(cfg, resume, overwrite)
    if action == "complete":
        note = f"{run_dir} is already complete; nothing to resume"
        if _is_main_env():
            _console().print(f"[yellow]note:[/] {note}")
        return TrainResult(run_dir, _read_json(run_dir / METRICS_FILE) or {}, _is_main_env(), [note])

    resolved, tokenizer, data = load_data(cfg)
    precision = pick_precision(cfg.precision)
    args = sft_args(cfg, run_dir, precision, bool(data.eval), action == "resume")
    _ = args.device  # sets up accelerate's state (the process group under accelerate launch)
    state = args.distributed_state
    is_main = state.is_main_process
    notes: list[str] = []
    if resume and action == "new":
        notes.append(f"nothing to resume in {run_dir}; starting a new run")

    ckpt: Path | None = None
    if action == "resume":
        run = _read_json(run_dir / RUN_FILE) or {}
        if run.get("data_fingerprint") not in (None, data.fingerprint):
            raise ThinksearchError(
                f"--resume: the training data changed since {run_dir} was started (other rows or another "
                "tokenizer); resume with the same data or start over with --overwrite")
        ckpt, stale, notes = find_resume_checkpoint(run_dir / CHECKPOINTS)
        if ckpt is None:
            notes.append("no whole checkpoint yet; training starts from the beginning")
    state.wait_for_everyone()
    if is_main:
        if action == "overwrite":
            shutil.rmtree(run_dir)
        if action == "resume":
            for p in stale:
                shutil.rmtree(p, ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_config(run_dir, cfg)
        run = _read_json(run_dir / RUN_FILE) if action == "resume" else None
        write_json_atomic(run_dir / RUN_FILE, {
            "status": "running", "model": cfg.model, "data_fingerprint": data.fingerprint,
            "started": (run or {}).get("started") or _now(), "resumed": _now() if ckpt else None,
        })
        for n in notes:
            _console().print(f"[yellow]note:[/] {n}")
    state.wait_for_everyone()

    trainer = build_trainer(cfg, resolved, tokenizer, data, args, precision, callbacks)
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    seconds = time.perf_counter() - t0
    final_eval = trainer.evaluate() if data.eval else {}

    from accelerate.utils import gather_object
    from peft import get_peft_model_state_dict

    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    sharded = str(trainer.accelerator.distributed_type) in ("DistributedType.FSDP", "DistributedType.DEEPSPEED")
    digest = adapter_digest(get_peft_model_state_dict(peft_model)) if not sharded else None
    rank_digests = gather_object([digest]) if state.num_processes > 1 else [digest]

    metrics = _metrics(cfg, trainer, out, final_eval, data, seconds, precision, ckpt, rank_digests)
    trainer.save_model(str(run_dir))  # adapter + tokenizer (main process writes)
    if is_main:
        write_json_atomic(run_dir / models.ADAPTER_META, {
            "base_model": cfg.model, "base_signature": models.base_signature(peft_model.get_base_model().config),
        })
        write_json_atomic(run_dir / METRICS_FILE, metrics)
        plot_loss(metrics["history"], run_dir / LOSS_PNG, title=f"LoRA on {cfg.model}")
        if not cfg.keep_checkpoints:
            shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
        run = _read_json(run_dir / RUN_FILE) or {}
        write_json_atomic(run_dir / RUN_FILE, {**run, "status": "complete", "finished": _now()})
    state.wait_for_everyone()
    if len(set(rank_digests)) > 1:
        raise ThinksearchError(f"the {len(rank_digests)} processes ended with different adapters "
                               f"({', '.join(d[:12] if d else '?' for d in rank_digests)}); the run is not consistent")
    return TrainResult(run_dir, metrics, is_main, notes)


def load_data(cfg: TrainConfig) -> tuple[models.ResolvedModel, Any, Prepared]:
    """Read, check and encode the rows of a run with the base model's tokenizer (no weights loaded)."""
    rows, bad = read_rows(cfg.data, cfg.skip_bad_rows)
    resolved = models.resolve(cfg.model)
    if resolved.adapter:
        raise ThinksearchError(
            f"'{cfg.model}' carries an adapter; train from a base model (merge the adapter first: thinksearch merge)")
    tokenizer = models.load_tokenizer(resolved)
    tokenizer.padding_side = "right"
    return resolved, tokenizer, prepare(tokenizer, rows, cfg.max_length, cfg.eval_fraction, cfg.seed, bad)


def build_trainer(cfg: TrainConfig, resolved: models.ResolvedModel, tokenizer: Any, data: Prepared, args: Any,
                  precision: str, callbacks: Sequence[Any] = (), sparse_head: bool | None = None) -> Any:
    """Load the base model and wrap it, the rows and the LoRA config into TRL's SFTTrainer.

    ``sparse_head`` picks the loss head: the sparse one (plain matmuls over the trained
    positions) or TRL's fused Triton kernel; None: fused where CUDA and Triton are present.
    """
    import torch
    from transformers import PrinterCallback

    if args.use_cpu:
        _return_freed_memory_to_the_os()
    model = _load_for_training(resolved, precision)
    token_ids = trainable_token_ids(tokenizer, cfg.trainable_tokens)
    # The trainer finds out itself that it is sharded (and then uses TRL's head), but the LoRA
    # config must know before it exists: accelerate launch sets these for FSDP and DeepSpeed.
    sharded = any(os.environ.get(f"ACCELERATE_USE_{v}", "").lower() in ("1", "true") for v in ("FSDP", "DEEPSPEED"))
    if sparse_head is None:
        # Trainable LM-head rows need the sparse head: TRL's fused kernel reads lm_head.weight
        # directly and would neither see nor train them.
        fused_available = torch.cuda.is_available() and importlib.util.find_spec("triton") is not None
        sparse_head = not sharded and (bool(token_ids) or not fused_available)
    peft_cfg = lora_config(cfg, model, token_ids, lm_head=sparse_head and not sharded)
    Seal, ProgressBar = _callbacks()
    trainer = _trainer_class()(
        model=model, args=args, train_dataset=_dataset(data.train),
        eval_dataset=_dataset(data.eval) if data.eval else None,
        processing_class=tokenizer, peft_config=peft_cfg,
        callbacks=[Seal(), ProgressBar(), *callbacks],
        sparse=sparse_head, token_lr_scale=cfg.trainable_tokens_lr_scale,
    )
    trainer.remove_callback(PrinterCallback)  # our bar shows the logs; no dict dumps on stdout
    return trainer


def _return_freed_memory_to_the_os() -> bool:
    """Serve big CPU allocations by mmap, so activations freed after a step leave the process.

    glibc raises its mmap threshold as large blocks are freed, after which activations come from
    the heap and stay resident when freed: measured here, peak RSS 8.6 GiB instead of 6.9 GiB
    for the same steps at the same speed. Linux with glibc only; a no-op elsewhere.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 1 << 20))  # M_MMAP_THRESHOLD = 1 MiB
    except (OSError, AttributeError):
        return False


def _is_main_env() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_config(run_dir: Path, cfg: TrainConfig) -> None:
    import yaml

    text = "# Resolved config of this run; reuse it with: thinksearch train --config THIS_FILE\n"
    text += yaml.safe_dump({"train": config_mod.to_dict(cfg)}, allow_unicode=True, sort_keys=False)
    write_text_atomic(run_dir / CONFIG_FILE, text)


def _load_for_training(resolved: models.ResolvedModel, precision: str) -> Any:
    """The base model for LoRA training, on CPU (the trainer moves it to the device).

    Frozen base weights are stored in the compute dtype when it is a 16-bit one: autocast would
    cast every fp32 weight to bf16 on each forward anyway, so keeping them in bf16 saves half
    the weight memory and the casts; the LoRA weights stay fp32 (PEFT upcasts adapters), so
    the optimizer still updates full-precision values.
    """
    dtype = {"bf16": "bfloat16", "fp16": "float32", "fp32": "float32"}[precision]
    model, _ = models.load(resolved, dtype=dtype, device="cpu")
    model.config.use_cache = False
    return model


def _metrics(cfg: TrainConfig, trainer: Any, out: Any, final_eval: Mapping[str, Any], data: Prepared,
             seconds: float, precision: str, ckpt: Path | None, rank_digests: list[str | None]) -> dict[str, Any]:
    state = trainer.state
    history = []
    for entry in state.log_history:
        if "loss" in entry or "eval_loss" in entry:
            history.append({k: entry[k] for k in ("step", "epoch", "loss", "eval_loss", "learning_rate",
                                                   "grad_norm", "num_tokens") if k in entry})
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h for h in history if "eval_loss" in h]
    # The trainer counts the non-pad tokens seen in this session (summed over ranks); a resumed run's
    # history also holds the steps before the interruption, with the earlier session's count.
    start = int(ckpt.name.split("-")[1]) if ckpt else 0
    session_tokens = next((h.get("num_tokens", 0) for h in reversed(history) if "loss" in h and h["step"] > start), 0)
    train_seconds = float(out.metrics.get("train_runtime", seconds))
    counts: dict[str, int] = {}
    for s in data.skipped:
        counts[s.reason] = counts.get(s.reason, 0) + 1
    return {
        "base_model": cfg.model,
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "epochs": round(float(state.epoch or 0), 4),
        "train_loss": out.training_loss,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "eval_loss_start": evals[0]["eval_loss"] if evals and evals[0].get("step", 0) == 0 else None,
        "eval_loss": final_eval.get("eval_loss"),
        "train_seconds": round(train_seconds, 3),
        "tokens": {
            "train_rows": sum(len(e.input_ids) for e in data.train),
            "train_assistant": sum(sum(e.assistant_masks) for e in data.train),
            "processed": int(session_tokens),
        },
        "tokens_per_s": round(session_tokens / train_seconds, 2) if train_seconds > 0 else None,
        "rows": {"read": data.rows_read, "train": len(data.train), "eval": len(data.eval),
                 "skipped": dict(sorted(counts.items()))},
        "skipped_rows": [s.as_dict() for s in data.skipped[:MAX_LISTED_SKIPS]],
        "precision": precision,
        "world_size": trainer.accelerator.num_processes,
        "effective_batch": cfg.batch_size * cfg.grad_accum * trainer.accelerator.num_processes,
        "resumed_from": ckpt.name if ckpt else None,
        "adapter_sha256": rank_digests[0],
        "rank_adapter_sha256": rank_digests,
        "history": history,
    }


def plot_loss(history: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> None:
    """Training loss per step (and eval loss where measured) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    train_pts = [(h["step"], h["loss"]) for h in history if "loss" in h]
    eval_pts = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if train_pts:
        ax.plot(*zip(*train_pts), label="train loss", lw=1.4)
    if eval_pts:
        ax.plot(*zip(*eval_pts), "o--", label="eval loss (holdout)", lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary(result: TrainResult) -> str:
    """A few lines for the terminal after a run."""
    m = result.metrics
    if not m:
        return str(result.output_dir)
    rows = m.get("rows", {})
    skipped = rows.get("skipped") or {}
    lines = [
        f"adapter: {result.output_dir}",
        f"steps: {m.get('global_step')}  epochs: {m.get('epochs')}  loss: {_f(m.get('first_loss'))} -> "
        f"{_f(m.get('last_loss'))}  eval loss: {_f(m.get('eval_loss_start'))} -> {_f(m.get('eval_loss'))}",
        f"rows: {rows.get('train')} train, {rows.get('eval')} eval, "
        f"skipped: {', '.join(f'{v} {k}' for k, v in skipped.items()) or 'none'}",
        f"tokens/s: {m.get('tokens_per_s')}  time: {m.get('train_seconds')} s  precision: {m.get('precision')}",
    ]
    for s in m.get("skipped_rows", [])[:5]:
        lines.append(f"  skipped {s['where']}: {s['reason']} ({s['detail']})")
    return "\n".join(lines)


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


# ============================================================================ merge


def merge(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None, dtype: str = "auto",
          overwrite: bool = False) -> Path:
    """Fold a LoRA adapter into its base; write a model directory plain transformers loads.

    The base is the one recorded in the adapter (``thinksearch_adapter.json``) unless ``base``
    is given. The merge is computed in fp32 and saved in ``dtype`` (``auto``: the base's own).
    The directory appears only once complete.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer

    adir = Path(adapter_dir).expanduser()
    if not (adir / "adapter_config.json").is_file():
        raise ThinksearchError(f"'{adapter_dir}' is not a LoRA adapter directory (no adapter_config.json)")
    out = Path(out_dir).expanduser()
    if out.resolve() == adir.resolve():
        raise ThinksearchError("--out must differ from the adapter directory")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ThinksearchError(f"{out} already exists and is not empty; pass --overwrite to replace it")
        if out.is_dir() and not (out / MERGED_META).is_file():
            raise ThinksearchError(f"{out} holds files that are not a merged thinksearch model; choose another --out")
    base_ref = base or models.adapter_base(adir)
    resolved = models.resolve(base_ref)
    if resolved.adapter:
        raise ThinksearchError(f"--base '{base_ref}' carries an adapter; give the plain base model")
    stored = getattr(AutoConfig.from_pretrained(resolved.path, gguf_file=resolved.gguf_file), "dtype", None)
    if dtype == "auto":
        target = stored if isinstance(stored, torch.dtype) else models.pick_dtype(str(stored or "float32"), "cpu")
    else:
        target = models.pick_dtype(dtype, "cpu")

    model, tokenizer = models.load(resolved, dtype="float32", device="cpu")
    model = models.apply_adapter(model, str(adir))
    merged = model.merge_and_unload()
    merged.to(target)
    merged.hf_quantizer = None  # a GGUF-loaded base refuses to save otherwise; its weights are plain floats now
    if hasattr(merged.config, "quantization_config"):
        del merged.config.quantization_config
    if (adir / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(adir))

    with replacing_dir(out) as tmp:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_json_atomic(tmp / MERGED_META, {"base_model": base_ref, "adapter": str(adir), "dtype": str(target)})
    return out
