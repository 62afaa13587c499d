"""Gold rows: read and check question files that carry accepted answers (DESIGN.md §10).

A gold row is a question row plus what a right answer must contain::

    {"id": "think-arithmetic-01", "type": "thinking", "question": "…", "category": "arithmetic",
     "answers": ["14", "十四"], "match": "any"}
    {"id": "think-everyday-11", "type": "thinking", "question": "…去哪家买更便宜？", "category": "everyday",
     "answers": ["选A店", "A店更便宜"], "match": "any", "wrong": ["选B店", "B店更便宜"]}
    {"id": "search-sports-09", "type": "search", "question": "…", "category": "sports",
     "answerable": true, "passages": ["c-0162"], "answers": ["西班牙"], "match": "any"}

Every problem is reported as ``file:line: what is wrong``. ``wrong`` (optional) lists the
answers that are wrong here, the other options of a choice: an answer that affirms one is not
right even if it also holds the gold. The same format serves the eval set and the training
pools; the scorer that reads ``answers``, ``match`` and ``wrong`` is :mod:`thinksearch.scoring`.

Run as: ``python -c "from thinksearch.gold import load_gold; print(len(load_gold('data/eval/test.jsonl')))"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from thinksearch.errors import ThinksearchError
from thinksearch.files import read_text
from thinksearch.scoring import MATCH_MODES, normalize

TYPES = ("thinking", "search")
FIELDS = ("id", "type", "question", "category", "answers", "match", "wrong", "answerable", "passages", "system",
          "messages")
GOLD_FIELDS = ("answers", "match", "wrong", "answerable", "passages")
"""The fields of a row that say what a right answer holds."""
DEFAULT_CORPUS = "data/corpus/snapshot.jsonl"
"""Relative to the working directory, like the config defaults (run from the repository root)."""


def corpus_ids(path: str | Path = DEFAULT_CORPUS) -> set[str]:
    """The passage ids of a corpus file (JSONL with an ``id`` per line)."""
    ids = set()
    for n, line in enumerate(read_text(Path(path), "corpus file").splitlines(), 1):
        if line.strip():
            try:
                ids.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                raise ThinksearchError(f"{path}:{n}: expected a JSON object with an 'id'") from None
    return ids


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)


def check_row(row: Any, where: str, known_passages: Iterable[str] | None = None) -> None:
    """Raise :class:`ThinksearchError` naming ``where`` (``file:line``) if a gold row is malformed.

    ``known_passages``: the corpus ids that ``passages`` may name; None skips that check.

    >>> check_row({"type": "thinking", "question": "1+1?", "answers": ["2"], "match": "any"}, "t.jsonl:1")
    >>> check_row({"type": "thinking", "question": "1+1?", "answers": [], "match": "any"}, "t.jsonl:2")
    Traceback (most recent call last):
    ...
    thinksearch.errors.ThinksearchError: t.jsonl:2: 'answers' is empty (list at least one accepted answer, or leave the field out for an open question)
    """
    if not isinstance(row, dict):
        raise ThinksearchError(f"{where}: expected a JSON object, got {type(row).__name__}")
    unknown = [k for k in row if k not in FIELDS]
    if unknown:
        raise ThinksearchError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(FIELDS)})")
    if row.get("type") not in TYPES:
        raise ThinksearchError(f"{where}: 'type' must be one of {', '.join(TYPES)}, got {row.get('type')!r}")
    if "question" in row and (not isinstance(row["question"], str) or not row["question"].strip()):
        raise ThinksearchError(f"{where}: 'question' must be a non-empty string")
    if "question" not in row and "messages" not in row:
        raise ThinksearchError(f"{where}: missing 'question'")
    for name in ("id", "category"):
        if name in row and (not isinstance(row[name], str) or not row[name].strip()):
            raise ThinksearchError(f"{where}: {name!r} must be a non-empty string")
    if "answers" in row:
        if row["answers"] == []:
            raise ThinksearchError(
                f"{where}: 'answers' is empty (list at least one accepted answer, or leave the field out for an open question)"
            )
        if not _strings(row["answers"]):
            raise ThinksearchError(f"{where}: 'answers' must be a list of non-empty strings")
        if "match" not in row:
            raise ThinksearchError(f"{where}: 'answers' needs 'match' (one of: {', '.join(MATCH_MODES)})")
    if "wrong" in row:
        if "answers" not in row:
            raise ThinksearchError(f"{where}: 'wrong' without 'answers'")
        if not _strings(row["wrong"]) or not row["wrong"]:
            raise ThinksearchError(f"{where}: 'wrong' must be a non-empty list of non-empty strings")
        both = {normalize(a) for a in row["answers"]} & {normalize(w) for w in row["wrong"]}
        if both:
            raise ThinksearchError(f"{where}: {sorted(both)[0]!r} is both in 'answers' and in 'wrong'")
    if "match" in row:
        if row["match"] not in MATCH_MODES:
            raise ThinksearchError(f"{where}: 'match' must be one of {', '.join(MATCH_MODES)}, got {row['match']!r}")
        if "answers" not in row:
            raise ThinksearchError(f"{where}: 'match' without 'answers'")
    _check_search_fields(row, where, known_passages)


def _check_search_fields(row: dict[str, Any], where: str, known_passages: Iterable[str] | None) -> None:
    if row["type"] != "search":
        for name in ("answerable", "passages"):
            if name in row:
                raise ThinksearchError(f"{where}: {name!r} is only for search rows")
        return
    answerable = row.get("answerable")
    if "answerable" in row and not isinstance(answerable, bool):
        raise ThinksearchError(f"{where}: 'answerable' must be true or false, got {answerable!r}")
    if answerable is False and ("answers" in row or "passages" in row):
        raise ThinksearchError(f"{where}: an unanswerable row ('answerable': false) has no 'answers' or 'passages'")
    if "passages" in row:
        passages = row["passages"]
        if not _strings(passages) or not passages:
            raise ThinksearchError(f"{where}: 'passages' must be a non-empty list of corpus ids like \"c-0001\"")
        if known_passages is not None:
            known = set(known_passages)
            missing = [p for p in passages if p not in known]
            if missing:
                raise ThinksearchError(f"{where}: passage id {missing[0]!r} is not in the corpus")
    if answerable is True and not ("passages" in row and "answers" in row):
        raise ThinksearchError(f"{where}: an answerable search row names its 'passages' and the key fact in 'answers'")


def read_rows(path: str | Path) -> Iterator[tuple[str, Any]]:
    """The rows of a JSONL file with their ``file:line``, in order; invalid JSON names its line."""
    for n, line in enumerate(read_text(Path(path), "gold file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{n}", json.loads(line)
        except json.JSONDecodeError as e:
            raise ThinksearchError(f"{path}:{n}: invalid JSON: {e.msg} (column {e.colno})") from None


def load_gold(path: str | Path, corpus: str | Path | None = DEFAULT_CORPUS) -> list[dict[str, Any]]:
    """Read and check a gold file, first problem first; ids must be unique. ``corpus`` None
    skips the passage check."""
    known = corpus_ids(corpus) if corpus is not None else None
    seen: dict[str, str] = {}
    out = []
    for where, row in read_rows(path):
        check_row(row, where, known)
        if "id" in row:
            if row["id"] in seen:
                raise ThinksearchError(f"{where}: duplicate id {row['id']!r} (first at {seen[row['id']]})")
            seen[row["id"]] = where
        out.append(row)
    return out
