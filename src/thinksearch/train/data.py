"""Training rows: read and check them, render them, and mask the tokens the assistant says.

The rows (DESIGN.md section 2) are chat conversations, as JSONL or as one JSON array (the
reference layout). Each is rendered through the base model's own chat template and tokenized so
that the loss falls only on what the assistant says: its thinking, its answer, its tool-call
text and the ``<|im_end|>`` that closes its turn; never the system prompt, the user turn or the
tool results. Qwen2.5's template has no ``{% generation %}`` markers, so the assistant spans
are found by rendering each conversation prefix by prefix (:func:`encode`). Nothing is ever
cut: a row longer than ``max_length`` is skipped and counted.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from thinksearch import files
from thinksearch import format as fmt
from thinksearch.errors import ThinksearchError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

ROLES = ("system", "user", "assistant", "tool")


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
    thinksearch.train.data.BadRow: no assistant turn to learn from
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


def _iter_file(path: Path) -> Iterator[tuple[int, Any | BadRow]]:
    """(line, parsed object or the parse error) for each row of a JSONL file or a JSON array file.

    A JSONL line that is not JSON is a bad row (skippable); a break in a JSON array is an error
    even with --skip-bad-rows: nothing after it can be read.
    """
    for lineno, obj in files.read_items(path, "data file", errors="keep"):
        yield lineno, BadRow(str(obj)) if isinstance(obj, files.InvalidJson) else obj


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


# ----------------------------------------------------------------------------- tokens and mask


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
