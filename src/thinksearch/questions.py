"""Question pools: load, normalise, de-duplicate, decontaminate, sample without replacement.

A question file is ``.txt`` (one question per line; ``#`` starts a comment line; blank lines
are ignored; ``# category: NAME`` names the category of the lines below), ``.jsonl`` (one
object per line with a string ``question`` field, or a reference-layout row whose first user
message is the question) or ``.json`` (an array of such objects). Each question gets two forms:

- its *text*, what the student sees: whitespace collapsed, NFC. NFKC is deliberately not
  applied here: it folds Chinese full-width punctuation (``？，``) to ASCII, and the student
  would learn punctuation users don't type;
- its *key*, what comparisons use: NFKC, case-folded, without whitespace, punctuation or
  invisible format characters. Row ids are a hash of the key, so editing a question's
  spacing or punctuation keeps its id.

Near duplicates are pairs whose character-bigram sets have a Jaccard similarity at or above a
threshold (bigrams suit Chinese, which has no spaces to split words on). :func:`near_duplicates`
finds them with prefix filtering (rare bigrams first), so pools of tens of thousands stay fast.

Pool files may carry per question a category and gold (``answers`` / ``match``, the eval set's
format, DESIGN.md §10): :func:`read_pool` returns them as :class:`Question` objects and
:meth:`Pool.entry` looks them up for a sampled question.

Run as: ``python -c "from thinksearch.questions import load_pool; print(load_pool('data/questions/thinking.jsonl').report)"``.
"""

from __future__ import annotations

import hashlib
import math
import random
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from thinksearch.errors import ThinksearchError
from thinksearch.files import json_array_items, jsonl_items, read_text, shipped
from thinksearch.gold import GOLD_FIELDS, check_row

DEFAULT_THRESHOLD = 0.7
KNOWLEDGE = frozenset({"knowledge", "science"})
"""The stable-knowledge categories: answered from memory where the model knows them, else searched
(the eval's knowledge figures, and the synth's knowledge probe)."""


# ----------------------------------------------------------------------------- normalising


def normalize(text: str) -> str:
    """The question as the student sees it: NFC, whitespace runs collapsed, control chars gone.

    >>> normalize("  今天\\u3000比特币的价格\\n是多少？ ")
    '今天 比特币的价格 是多少？'
    """
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch if unicodedata.category(ch) not in ("Cc", "Cf") or ch.isspace() else "" for ch in text)
    return " ".join(text.split())


def key(text: str) -> str:
    """The comparison form: NFKC, case-folded, no whitespace, punctuation or format characters.

    >>> key("今天比特币的价格是多少？") == key("今天 比特币的价格是多少?")
    True
    >>> key("What is 2+3?")
    'whatis2+3'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in ("P", "Z", "C"))


def question_id(kind: str, question: str) -> str:
    """A stable row id: ``t-`` / ``s-`` and a hash of the question's key.

    >>> question_id("thinking", "1+1等于几？") == question_id("thinking", "1+1 等于几?")
    True
    >>> question_id("search", "x")[:2]
    's-'
    """
    digest = hashlib.sha256(key(question).encode("utf-8")).hexdigest()[:16]
    return f"{kind[0]}-{digest}"


def grams(k: str, n: int = 2) -> frozenset[str]:
    """Character n-grams of a key (the key itself when shorter than n).

    >>> sorted(grams("天气预报"))
    ['天气', '气预', '预报']
    """
    if len(k) <= n:
        return frozenset([k]) if k else frozenset()
    return frozenset(k[i : i + n] for i in range(len(k) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard similarity of two gram sets.

    >>> jaccard(grams("北京明天天气"), grams("北京明天天气"))
    1.0
    """
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def similarity(a: str, b: str, n: int = 2) -> float:
    """Bigram Jaccard similarity of two questions (after :func:`key`).

    >>> round(similarity("北京明天天气怎么样？", "上海明天天气怎么样？"), 2)
    0.6
    """
    return jaccard(grams(key(a), n), grams(key(b), n))


# ----------------------------------------------------------------------------- near duplicates


def near_duplicates(
    items: Sequence[str], against: Sequence[str] | None = None, threshold: float = DEFAULT_THRESHOLD, n: int = 2
) -> list[tuple[int, int, float]]:
    """Pairs of near-duplicate questions, as ``(i, j, similarity)``, exact duplicates included.

    Without ``against``: pairs within ``items`` (``i < j``). With it: each ``items[i]`` that
    is a near duplicate of ``against[j]``. Exact: every pair at or above ``threshold`` is found
    (prefix filtering only skips pairs that cannot reach it).

    >>> near_duplicates(["今天比特币的价格是多少？", "今天比特币价格是多少", "明天北京会下雨吗"])
    [(0, 1, 0.727)]
    >>> near_duplicates(["北京明天会下雨吗？"], against=["明天北京会下雨吗", "北京明天会下雨吗"])
    [(0, 1, 1.0)]
    """
    if not 0 < threshold <= 1:
        raise ValueError("threshold must be in (0, 1]")
    a = [grams(key(q), n) for q in items]
    b = a if against is None else [grams(key(q), n) for q in against]
    freq = Counter(g for s in (a if against is None else a + b) for g in s)

    def prefix(s: frozenset[str]) -> list[str]:
        # If J(x, y) >= t then x and y share a gram among the |x| - ceil(t|x|) + 1 rarest of x.
        ordered = sorted(s, key=lambda g: (freq[g], g))
        return ordered[: len(ordered) - math.ceil(threshold * len(ordered)) + 1]

    index: dict[str, list[int]] = {}
    for j, s in enumerate(b):
        for g in prefix(s):
            index.setdefault(g, []).append(j)
    pairs: list[tuple[int, int, float]] = []
    for i, s in enumerate(a):
        seen: set[int] = set()
        for g in prefix(s):
            for j in index.get(g, ()):
                if j in seen or (against is None and j <= i):
                    continue
                seen.add(j)
                sim = jaccard(s, b[j])
                if sim >= threshold:
                    pairs.append((i, j, round(sim, 3)))
    return sorted(pairs)


@dataclass
class Dropped:
    question: str
    reason: str
    """exact_duplicate, near_duplicate, eval_overlap or in_both_pools."""
    other: str = ""
    """The question it collided with."""


def dedupe(questions: Sequence[str], threshold: float = DEFAULT_THRESHOLD) -> tuple[list[str], list[Dropped]]:
    """Keep the first of each group of exact or near duplicates, in order.

    >>> kept, dropped = dedupe(["1+1等于几？", "1+1 等于几?", "2+3等于几？"])
    >>> kept, [d.reason for d in dropped]
    (['1+1等于几？', '2+3等于几？'], ['exact_duplicate'])
    """
    kept: list[str] = []
    dropped: list[Dropped] = []
    seen: dict[str, str] = {}
    for q in questions:
        k = key(q)
        if k in seen:
            dropped.append(Dropped(q, "exact_duplicate", seen[k]))
        else:
            seen[k] = q
            kept.append(q)
    out: list[str] = []
    gone: set[int] = set()
    partner: dict[int, int] = {}
    for i, j, _ in near_duplicates(kept, threshold=threshold):
        if i not in gone and j not in gone:
            gone.add(j)
            partner[j] = i
    for idx, q in enumerate(kept):
        if idx in gone:
            dropped.append(Dropped(q, "near_duplicate", kept[partner[idx]]))
        else:
            out.append(q)
    return out, dropped


def decontaminate(
    questions: Sequence[str], held_out: Sequence[str], threshold: float = DEFAULT_THRESHOLD
) -> tuple[list[str], list[Dropped]]:
    """Drop every question that is a near (or exact) duplicate of a held-out one."""
    hits: dict[int, int] = {}
    for i, j, _ in near_duplicates(questions, against=held_out, threshold=threshold):
        hits.setdefault(i, j)
    kept = [q for i, q in enumerate(questions) if i not in hits]
    dropped = [Dropped(questions[i], "eval_overlap", held_out[j]) for i, j in sorted(hits.items())]
    return kept, dropped


def shuffled(questions: Sequence[str], seed: int | str) -> list[str]:
    """The pool in a seeded random order; taking the first N samples N without replacement.

    Taking a prefix (rather than ``random.sample``) means asking for more rows later extends
    the same sample instead of drawing a different one.

    >>> shuffled(["a", "b", "c", "d"], 0) == shuffled(["a", "b", "c", "d"], 0)
    True
    >>> sorted(shuffled(["a", "b", "c", "d"], 1))
    ['a', 'b', 'c', 'd']
    """
    out = list(questions)
    random.Random(str(seed)).shuffle(out)
    return out


# ----------------------------------------------------------------------------- files


CATEGORY_MARK = "# category:"
"""A ``.txt`` comment line that names the category of the questions below it."""


@dataclass(frozen=True)
class Question:
    """One question of a pool file with what the file says about it (DESIGN.md §10)."""

    text: str
    """The normalised question (:func:`normalize`)."""
    category: str | None = None
    id: str | None = None
    answers: tuple[str, ...] = ()
    """Accepted answers; empty for an open question (no gold)."""
    match: str = "any"
    """``any``: one accepted answer must appear; ``all``: each must."""
    wrong: tuple[str, ...] = ()
    """Answers that are wrong here (the other options of a choice); one affirmed fails the answer."""
    where: str = ""
    """``file:line`` of the question, for messages."""
    answerable: bool | None = None
    """A search question: does the shipped corpus hold its answer (``answers`` then names the key
    fact)? None: the file does not say (no gold)."""

    @property
    def checkable(self) -> bool:
        """Does the question carry gold that a final answer can be scored against?"""
        return bool(self.answers)


def _question_of(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    q = obj.get("question")
    if isinstance(q, str):
        return q
    msgs = obj.get("messages")
    if isinstance(msgs, list):  # reference layout: the first user turn is the question
        for m in msgs:
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
                return m["content"]
    return None


def _from_row(obj: dict[str, Any], text: str, where: str) -> Question:
    if any(f in obj for f in GOLD_FIELDS):
        # A row with gold must be a well-formed gold row: the same checks as the eval set.
        check_row({"type": "thinking", **obj} if "type" not in obj else obj, where)
    category, rid = obj.get("category"), obj.get("id")
    for name, value in (("category", category), ("id", rid)):
        if value is not None and not isinstance(value, str):
            raise ThinksearchError(f"{where}: {name!r} must be a string")
    return Question(text, category, rid, tuple(obj.get("answers", ())), obj.get("match", "any"),
                    tuple(obj.get("wrong", ())), where, obj.get("answerable"))


def read_pool(path: str | Path) -> list[Question]:
    """The questions in a file with their category and gold, normalised, in file order
    (duplicates still in). In ``.txt`` files a ``# category: NAME …`` line sets the category
    of the questions below it; JSON rows carrying gold are checked like the eval set's
    (:func:`thinksearch.gold.check_row`, errors name ``file:line``)."""
    path = shipped(path)
    text = read_text(path, "question file")
    out: list[Question] = []
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        if suffix == ".json" and not text.lstrip().startswith("["):
            raise ThinksearchError(f"{path}: expected a JSON array of objects with a 'question' field")
        items = jsonl_items(text, path) if suffix == ".jsonl" else json_array_items(text, path)
        for n, obj in items:
            q = _question_of(obj)
            if q is None:
                raise ThinksearchError(f"{path}:{n}: expected an object with a string 'question' field")
            out.append(_from_row(obj, normalize(q), f"{path}:{n}"))
    else:
        category = None
        for n, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith(CATEGORY_MARK):
                category = (line.split(":", 1)[1].split() or [None])[0]
            if not line.lstrip().startswith("#"):
                out.append(Question(normalize(line), category, where=f"{path}:{n}"))
    out = [q for q in out if key(q.text)]
    if not out:
        raise ThinksearchError(f"question file {path} holds no questions")
    return out


def read_questions(path: str | Path) -> list[str]:
    """The questions in a file, normalised, in file order (duplicates still in)."""
    return [q.text for q in read_pool(path)]


@dataclass
class Pool:
    """A loaded, cleaned question pool and what was dropped from it, by reason."""

    path: str
    questions: list[str]
    dropped: list[Dropped] = field(default_factory=list)
    loaded: int = 0
    entries: dict[str, Question] = field(default_factory=dict)
    """What the file says about each question (category, gold), by :func:`key`."""

    def entry(self, question: str) -> Question:
        """The file's entry for a question of the pool (a bare one when the file gave none).

        >>> pool = Pool("p", ["1+1=?"], entries={key("1+1=?"): Question("1+1=?", "arithmetic", answers=("2",))})
        >>> pool.entry("1+1=?").answers, pool.entry("别的问题").checkable
        (('2',), False)
        """
        return self.entries.get(key(question)) or Question(question)

    def gold_counts(self) -> dict[str, dict[str, int]]:
        """Per category (``""`` for none): questions kept and how many of them carry gold."""
        out: dict[str, dict[str, int]] = {}
        for q in self.questions:
            e = self.entry(q)
            c = out.setdefault(e.category or "", {"questions": 0, "with_gold": 0})
            c["questions"] += 1
            c["with_gold"] += e.checkable
        return out

    @property
    def report(self) -> dict[str, Any]:
        by = Counter(d.reason for d in self.dropped)
        return {"path": self.path, "loaded": self.loaded, "kept": len(self.questions), "dropped": dict(by)}


def load_pool(path: str | Path, held_out: Sequence[str] = (), threshold: float = DEFAULT_THRESHOLD) -> Pool:
    """Read, de-duplicate and decontaminate one pool (``path`` as :func:`read_pool` finds it)."""
    path = shipped(path)  # the report names the file actually read, e.g. the shipped one
    rows = read_pool(path)
    entries: dict[str, Question] = {}
    for q in rows:
        entries.setdefault(key(q.text), q)  # the first of exact duplicates, as dedupe keeps
    kept, dropped = dedupe([q.text for q in rows], threshold)
    if held_out:
        kept, more = decontaminate(kept, held_out, threshold)
        dropped += more
    return Pool(str(path), kept, dropped, len(rows), {k: entries[k] for k in keys(kept)})


def separate(a: Pool, b: Pool) -> None:
    """Remove questions present in both pools from both: such a question's label is ambiguous."""
    both = {key(q) for q in a.questions} & {key(q) for q in b.questions}
    if not both:
        return
    for pool, other in ((a, b), (b, a)):
        keep = []
        for q in pool.questions:
            if key(q) in both:
                pool.dropped.append(Dropped(q, "in_both_pools", other.path))
            else:
                keep.append(q)
        pool.questions = keep


def keys(questions: Iterable[str]) -> set[str]:
    return {key(q) for q in questions}
