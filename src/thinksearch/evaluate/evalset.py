"""The eval set: reading an eval file into questions, and a seeded per-type subsample.

An eval file is JSONL (``{"type": "thinking"|"search", "question": ...}`` rows, or the
reference's ``{"messages": [...], "type"}`` rows) or one JSON array of such rows; every
problem is one line naming ``file:line``. Used by :func:`thinksearch.evaluate.evaluate`; on
its own: ``python -c "from thinksearch.evaluate import load_eval_set; print(load_eval_set('data/eval/test.jsonl').counts())"``.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from thinksearch import format as fmt
from thinksearch.errors import ThinksearchError
from thinksearch.files import read_items
from thinksearch.gold import GOLD_FIELDS, check_row, corpus_ids


TYPES = ("thinking", "search")


@dataclass(frozen=True)
class EvalItem:
    """One eval question."""

    id: str
    """The row's own ``id`` if it has one, else a digest of type, system prompt and question."""
    type: str
    question: str
    system: str | None = None
    """The row's own system prompt; None means :data:`thinksearch.format.SYSTEM_PROMPT`."""
    category: str = ""
    where: str = ""
    """``file:line`` of the row (for messages)."""
    gold: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    """What a right answer holds (:data:`thinksearch.gold.GOLD_FIELDS`), or None."""

    @property
    def system_prompt(self) -> str:
        return self.system if self.system is not None else fmt.SYSTEM_PROMPT


@dataclass
class EvalSet:
    path: str
    items: list[EvalItem]
    duplicates: int = 0
    """Rows dropped because the same question (same type and system prompt) came earlier."""

    def counts(self) -> dict[str, int]:
        return {t: sum(i.type == t for i in self.items) for t in TYPES}


def _question_id(type_: str, system: str | None, question: str) -> str:
    digest = hashlib.sha256(f"{type_}\n{system or ''}\n{question}".encode("utf-8")).hexdigest()
    return f"{type_[0]}-{digest[:12]}"


def _row_item(row: Any, where: str, known_passages: set[str] | None = None) -> EvalItem:
    """Check one row and turn it into an item; errors name ``where`` (file:line)."""
    if not isinstance(row, dict):
        raise ThinksearchError(f"{where}: expected a JSON object, got {type(row).__name__}")
    type_ = row.get("type")
    if type_ is None:
        raise ThinksearchError(f"{where}: missing 'type' (one of: {', '.join(TYPES)})")
    if type_ not in TYPES:
        raise ThinksearchError(f"{where}: unknown type {type_!r} (allowed: {', '.join(TYPES)})")
    system = row.get("system")
    question = row.get("question")
    messages = row.get("messages")
    if question is None and messages is not None:
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ThinksearchError(f"{where}: 'messages' must be a list of {{\"role\", \"content\"}} objects")
        system = next((m.get("content") for m in messages if m.get("role") == "system"), system)
        question = next((m.get("content") for m in messages if m.get("role") == "user"), None)
        if question is None:
            raise ThinksearchError(f"{where}: missing question ('messages' has no user turn)")
    if question is None:
        raise ThinksearchError(f"{where}: missing 'question' (or a user turn in 'messages')")
    if not isinstance(question, str) or not question.strip():
        raise ThinksearchError(f"{where}: 'question' must be a non-empty string")
    if system is not None and not isinstance(system, str):
        raise ThinksearchError(f"{where}: the system prompt must be a string")
    if system == fmt.SYSTEM_PROMPT:
        system = None
    row_id = row.get("id")
    if row_id is not None and (not isinstance(row_id, str) or not row_id.strip()):
        raise ThinksearchError(f"{where}: 'id' must be a non-empty string")
    category = row.get("category") or ""
    if not isinstance(category, str):
        category = str(category)
    gold = None
    if any(k in row for k in GOLD_FIELDS):
        check_row(row, where, known_passages)
        gold = {k: row[k] for k in GOLD_FIELDS if k in row}
    return EvalItem(row_id or _question_id(type_, system, question), type_, question, system, category, where, gold)


def load_eval_set(path: str | Path, corpus: Sequence[str | Path] = ()) -> EvalSet:
    """Read an eval file: JSONL (``{"type", "question"}`` or reference-layout rows) or a JSON array.

    Every problem is one line naming ``file:line``; gold rows are checked by
    :func:`thinksearch.gold.check_row`, their ``passages`` against the ids of the ``corpus``
    files that exist (none: not checked). A question repeated (same type and system prompt)
    is counted once.
    """
    p = Path(path)
    known: set[str] | None = None
    for c in corpus:
        if Path(c).is_file():
            known = (known or set()) | corpus_ids(c)
    rows = ((f"{p}:{n}", row) for n, row in read_items(p, "eval file"))
    items: list[EvalItem] = []
    seen: dict[str, str] = {}
    duplicates = 0
    for where, row in rows:
        item = _row_item(row, where, known)
        if item.id in seen:
            if isinstance(row.get("id"), str):
                raise ThinksearchError(f"{where}: duplicate id {item.id!r} (first at {seen[item.id]})")
            duplicates += 1
            continue
        seen[item.id] = where
        items.append(item)
    if not items:
        raise ThinksearchError(
            f"{p}: no eval rows (expected JSONL rows like {{\"type\": \"thinking\", \"question\": \"…\"}})"
        )
    return EvalSet(str(p), items, duplicates)


def subsample(items: Sequence[EvalItem], limit_per_type: int | None, seed: int) -> list[EvalItem]:
    """At most ``limit_per_type`` items of each type, sampled without replacement; file order kept.

    >>> xs = [EvalItem(f"t{i}", "thinking", "q") for i in range(5)] + [EvalItem("s0", "search", "q")]
    >>> [x.id for x in subsample(xs, 2, seed=0)] == [x.id for x in subsample(xs, 2, seed=0)]
    True
    >>> sum(x.type == "thinking" for x in subsample(xs, 2, seed=0)), len(subsample(xs, None, 0))
    (2, 6)
    """
    if limit_per_type is None:
        return list(items)
    rng = random.Random(seed)
    keep: set[int] = set()
    for t in TYPES:
        idx = [i for i, it in enumerate(items) if it.type == t]
        keep.update(idx if len(idx) <= limit_per_type else rng.sample(idx, limit_per_type))
    return [it for i, it in enumerate(items) if i in keep]


