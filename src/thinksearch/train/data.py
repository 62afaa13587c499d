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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from thinksearch import files
from thinksearch import format as fmt
from thinksearch.errors import ThinksearchError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

ROLES = ("system", "user", "assistant", "tool")
# The dataset column of per-token loss weights: written only when train.decision_weight != 1.
LOSS_WEIGHT = "loss_weight"


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
    decision_mask: list[int] = field(default_factory=list)
    """1 where the token carries the search decision (:func:`decision_positions`), 0 elsewhere; empty when not asked for."""


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


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    # Exactly the text the ids stand for: no special token dropped, no space "cleaned up".
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _tokens_covering(tokenizer: Any, ids: Sequence[int], text: str, end: int) -> int:
    """The fewest leading tokens of ``ids`` whose text covers ``text[:end]`` (``text``: all of ``ids`` decoded).

    Found by bisection: the text of a prefix of the ids is a prefix of ``text``, except that a
    character cut between two tokens decodes to a replacement character at its very end.
    """
    want = text[:end]
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if _decode(tokenizer, ids[:mid]).startswith(want):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _blank(tokenizer: Any, token_id: int) -> bool:
    return not _decode(tokenizer, [token_id]).strip()


def decision_positions(tokenizer: Any, ids: Sequence[int], opening: int) -> list[int]:
    """Indices into ``ids``, one assistant turn as :func:`encode` tokenizes it, of the tokens that carry the search decision.

    - The first ``opening`` tokens of the thinking trace, after the ``<thinking>`` tag (and any
      whitespace token after it): in this data the trace opens by saying whether the question
      needs a search. The tag itself is left out: it is the same in every row and soon costs
      nothing, so weighting it would only shrink the weight of the rest (the loss is a weighted mean).
    - The tokens after ``</thinking>``, up to and including the first one that is not
      whitespace: ``<tool_call>`` or the answer's first token. Qwen's tokenizer writes the tag's
      last token together with the newlines after it (``>\\n`` before a call, ``>\\n\\n``
      before an answer), so that token already decides and is included when it reaches past the tag.

    Positions come from decoding prefixes of the ids, so they are the tokens the model is
    trained on, whatever the tokenizer merged. A turn that does not open with ``<thinking>``
    (the answer after the search results) has none; a trace never closed has only its opening.
    """
    text = _decode(tokenizer, ids)
    if not text.lstrip().startswith(fmt.THINK_OPEN):
        return []
    open_end = text.index(fmt.THINK_OPEN) + len(fmt.THINK_OPEN)
    close = text.find(fmt.THINK_CLOSE, open_end)
    # The trace: the tokens after the one that completes <thinking>, up to the one where </thinking> starts.
    start = _tokens_covering(tokenizer, ids, text, open_end)
    stop = len(ids) if close < 0 else _tokens_covering(tokenizer, ids, text, close)
    while start < stop and _blank(tokenizer, ids[start]):
        start += 1
    picked = list(range(start, min(start + opening, stop)))
    if close >= 0:
        end = close + len(fmt.THINK_CLOSE)
        k = _tokens_covering(tokenizer, ids, text, end)  # ids[k - 1] completes </thinking>
        if len(_decode(tokenizer, ids[:k])) > end:
            picked.append(k - 1)
        while k < len(ids):
            picked.append(k)
            if not _blank(tokenizer, ids[k]):
                break
            k += 1
    return sorted(set(picked))


def encode(tokenizer: "PreTrainedTokenizerBase", messages: Sequence[Mapping[str, Any]],
           decision_tokens: int | None = None) -> Encoded:
    """Token ids of a conversation and the mask of the tokens the assistant says.

    Each segment (prompt part, assistant part, prompt part ...) is tokenized on its own, so
    the mask boundaries are exact and the assistant's tokens are the ones it generates at
    inference after a prompt that ends with ``<|im_start|>assistant\\n``. With
    ``decision_tokens`` (the trace opening's length), the decision mask is filled in too.
    """
    full, spans = assistant_spans(tokenizer, messages)
    ids: list[int] = []
    mask: list[int] = []
    decision: set[int] = set()
    pos = 0

    def add(text: str, bit: int) -> list[int]:
        seg: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        ids.extend(seg)
        mask.extend([bit] * len(seg))
        return seg

    for a, b in spans:
        add(full[pos:a], 0)
        offset = len(ids)
        seg = add(full[a:b], 1)
        if decision_tokens is not None:
            decision.update(offset + i for i in decision_positions(tokenizer, seg, decision_tokens))
        pos = b
    add(full[pos:], 0)
    if decision_tokens is None:
        return Encoded(ids, mask)
    return Encoded(ids, mask, [int(i in decision) for i in range(len(ids))])


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
            skipped: Sequence[Skip] = (), decision_tokens: int | None = None) -> Prepared:
    """Encode rows, leave out the too long and the unlearnable ones (counted), split off a holdout.

    ``decision_tokens``: fill in each row's decision mask too (see :func:`encode`).
    """
    skips = list(skipped)
    kept: list[Encoded] = []
    for row in rows:
        enc = encode(tokenizer, row.messages, decision_tokens)
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
