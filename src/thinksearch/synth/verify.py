"""Gold-checked sampling: pick, among a thinking question's candidates, one whose answer is right.

A weak teacher is right on few thinking questions, so its rows cannot be trusted for content;
a question that carries gold (``answers`` / ``match``, the eval set's format) lets the run keep
only rows whose final answer matches it. The check is the eval's own scorer
(:func:`thinksearch.scoring.final_answer` on the row's assistant text, then
:func:`thinksearch.scoring.matches_gold`), so a kept row would be scored right by the eval too;
a trace that computes must also compute the gold number (:func:`derives_gold`).

- :func:`candidates`: how many candidates a question gets (k for a question with gold, 1 otherwise);
- :func:`candidate_seed`: each candidate's sampling seed (candidate 0 keeps the seed of a k=1 run);
- :func:`pick`: the row of the first matching candidate, or the rejection ``gold/mismatch``;
- :func:`derives_gold`: a trace that computes results must compute gold, not assert it at the end;
- :func:`rationalised`: with ``gold_hint``, a question's hinted try kept (``verified: hint``) only
  when it reaches gold by its own working (:func:`derives_gold`) without mentioning the hint
  (:func:`mentions_hint`);
- :class:`GoldTally`: pass@1 and pass@k per category, and the categories the teacher never gets right.

A library module of :mod:`thinksearch.synth`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from thinksearch import format as fmt
from thinksearch import scoring
from thinksearch.synth.gates import Rejection

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.config import SynthConfig
    from thinksearch.questions import Question

NEVER_MATCHED_MIN_TRIES = 5
"""A category is reported as never matching gold only after this many questions were tried:
on two or three questions a weak teacher can miss by chance."""
UNCATEGORISED = "(none)"


class Item(Protocol):
    """A question being synthesised (:class:`.rows.Item`; a protocol so rows imports this module, not the reverse)."""

    type: str
    gold: "Question | None"


class Candidate(Protocol):
    """One candidate's outcome (:class:`.rows.Outcome`): a gated row or why there is none."""

    row: dict[str, Any] | None
    rejection: Rejection | None

Verdict = tuple["dict[str, Any] | None", "Rejection | None"]
"""What a question yields: its row, or why it yields none."""


def checkable(cfg: "SynthConfig", item: "Item") -> bool:
    """Is this item's row checked against gold (checking on, a thinking question with gold)?"""
    return cfg.gold_checked and item.type == "thinking" and item.gold is not None and item.gold.checkable


def candidates(cfg: "SynthConfig", item: "Item") -> int:
    """How many candidates the teacher writes for ``item``: k when it is checked, else 1 (an
    unverifiable row gains nothing from more samples: there is nothing to choose by)."""
    return cfg.samples_per_question if checkable(cfg, item) else 1


def candidate_seed(seed: int, j: int) -> int:
    """Candidate ``j``'s seed from the question's stage seed; candidate 0 keeps it, so k=1 rows
    and the first candidate of a k>1 run are sampled alike.

    >>> candidate_seed(12345, 0), candidate_seed(12345, 1) != candidate_seed(12345, 2)
    (12345, True)
    """
    return seed if j == 0 else (seed + j * 1_000_033) % (2**31)


def _reply(row: Mapping[str, Any]) -> str | None:
    """The text of the row's last assistant turn (None if it has none)."""
    last = next((m for m in reversed(row.get("messages", [])) if m.get("role") == "assistant"), None)
    return str(last.get("content") or "") if last else None


def final(row: Mapping[str, Any]) -> str | None:
    """The final answer of the row's last assistant turn, as the eval reads it."""
    reply = _reply(row)
    return scoring.final_answer(reply) if reply is not None else None


def question(row: Mapping[str, Any]) -> str:
    """The row's question: its first user turn ("" if it has none)."""
    return next((str(m.get("content") or "") for m in row.get("messages", []) if m.get("role") == "user"), "")


def holds_gold(text: str | None, gold: "Question", asked: str) -> bool:
    """Does ``text`` (a reply to ``asked``) match every part of ``gold`` the eval scores by:
    its answers, ``match`` and ``wrong`` options?"""
    return scoring.matches_gold(text, gold.answers, gold.match, question=asked, wrong=gold.wrong)


def trace(row: Mapping[str, Any]) -> str:
    """The thinking trace of the row's last assistant turn, as :func:`thinksearch.format.parse` reads it."""
    return fmt.parse(_reply(row) or "").thinking or ""


def derives_gold(text: str, gold: "Question") -> bool:
    """Does a trace that works numbers out arrive at the gold number?

    A teacher given the answer as a hint may compute something else and then assert it ("240元 ×
    8折 = 1920元 … = 1900元，因此最终答案是：172"): the final answer holds gold, the trace teaches a
    wrong derivation. So where the gold has a number and the trace computes results
    (:func:`thinksearch.scoring.worked_results`), one of them must be a gold number. Results
    the question states are left out ("x的平方等于49" restated is not a computation). A trace
    that computes nothing else, and a gold without a number, pass: there is nothing to compare.

    >>> from thinksearch.questions import Question
    >>> gold = Question("一件衣服原价240元，先打八折再减20元，最后要付多少钱？", answers=("172",))
    >>> derives_gold("240 × 0.8 = 192元，192 - 20 = 172元。", gold), derives_gold("240 × 8折 = 1920元，答案是172。", gold)
    (True, False)
    >>> derives_gold("打八折再减20元，最后付172元。", gold), derives_gold("原价 = 240元，付172元。", gold)
    (True, True)
    """
    worked = set(scoring.worked_results(text)) - {abs(n) for n in scoring.numbers(gold.text)}
    # Each gold number by value and as written: "560万" is 5600000, and a trace working in 万 computes 560.
    golds = [scoring.numbers(a) + [Decimal(n) for n in re.findall(r"\d+(?:\.\d+)?", a)] for a in gold.answers]
    golds = [{abs(n) for n in values} for values in golds if values]
    return not worked or not golds or any(values & worked for values in golds)


def is_right(row: dict[str, Any], gold: "Question") -> bool:
    """Does the row's final answer match gold, as the eval would score it, and does its trace,
    where it computes, compute gold (:func:`derives_gold`)?"""
    return holds_gold(final(row), gold, question(row)) and derives_gold(trace(row), gold)


@dataclass
class Tried:
    """One checked question: its category and whether its first / any candidate was right."""

    category: str
    first: bool
    any: bool


def pick(cfg: "SynthConfig", item: Item, cands: Sequence[Candidate]) -> tuple[Verdict, Tried | None]:
    """The verdict on ``item`` from its candidates' outcomes (in candidate order), and what was tried.

    Unchecked: the single candidate, labelled ``verified: none`` when checking is on. Checked:
    the first candidate whose row matches gold, labelled ``verified: gold``; when candidates
    passed the gates but none matches, the rejection ``gold/mismatch``; when none passed, the
    first candidate's own rejection (as a k=1 run would give). ``Tried`` is None when every
    candidate failed transiently (the teacher was down, not wrong).
    """
    first = cands[0]
    if not checkable(cfg, item):
        if cfg.gold_checked and first.row is not None:
            first.row["meta"]["verified"] = "none"
        return (first.row, first.rejection), None
    gold = item.gold
    assert gold is not None
    right = [c.row is not None and is_right(c.row, gold) for c in cands]
    tried = None
    if not all(c.row is None and c.rejection is not None and c.rejection.transient for c in cands):
        tried = Tried(gold.category or UNCATEGORISED, right[0], any(right))
    if any(right):
        j = right.index(True)
        chosen = cands[j]
        assert chosen.row is not None
        chosen.row["meta"]["verified"] = "gold"
        chosen.row["meta"]["gold"] = {"candidate": j, "candidates": len(cands), "right": sum(right)}
        return (chosen.row, None), tried
    gated = [c.row for c in cands if c.row is not None]
    if not gated:
        return (None, first.rejection), tried
    answers = " / ".join(gold.answers)
    last = gated[0]["messages"][-1]["content"]
    underived = sum(holds_gold(final(r), gold, question(r)) for r in gated)
    why = f"; {underived} state it after a trace that computes something else" if underived else ""
    return (None, Rejection("gold", "mismatch", f"none of {len(gated)} gated candidates of {len(cands)} "
                            f"matches gold ({gold.match}: {answers}){why}", scoring.final_answer(last) or last)), tried


HINT_WORDS = ("提示", "hint", "已知答案", "已知结果", "正确答案", "正确结果", "标准答案", "参考答案", "给出的答案",
              "给定的答案", "被告知", "题目告诉我答案")
"""Words by which a trace shows it was handed the answer; a student never gets that hint."""


def hint_answer(gold: "Question | None") -> str:
    """The hint the rationalisation prompt gives: every accepted answer for ``all``, the first for ``any``.

    >>> from thinksearch.questions import Question
    >>> hint_answer(Question("唐僧有几个徒弟？", answers=("孙悟空", "猪八戒", "沙僧"), match="all"))
    '孙悟空、猪八戒、沙僧'
    """
    assert gold is not None and gold.answers
    return "、".join(gold.answers) if gold.match == "all" else gold.answers[0]


def mentions_hint(text: str) -> str | None:
    """The first hint word ``text`` holds, or None.

    >>> mentions_hint("根据提示，答案是1789年。"), mentions_hint("1789年巴黎民众攻占巴士底狱。")
    ('提示', None)
    """
    low = text.casefold()
    return next((w for w in HINT_WORDS if w in low), None)


def rationalised(item: Item, cand: Candidate) -> Verdict:
    """The verdict on a question after its hinted try: a row labelled ``verified: hint`` when
    the trace reaches gold by its own working and never shows it was given it, else a
    ``hint…`` rejection (``hint/underived``: the answer states gold, the trace computes otherwise)."""
    gold = item.gold
    assert gold is not None
    if cand.row is None:
        if cand.rejection is not None:
            cand.rejection.stage = f"hint_{cand.rejection.stage}"
        return None, cand.rejection
    text = _reply(cand.row) or ""
    word = mentions_hint(text)
    if word is not None:
        return None, Rejection("hint", "mentions_hint", f"the hinted trace says {word!r}", text)
    if not holds_gold(final(cand.row), gold, question(cand.row)):
        return None, Rejection("hint", "mismatch", f"the hinted trace does not reach gold ({' / '.join(gold.answers)})",
                               scoring.final_answer(text) or text)
    working = trace(cand.row)
    if not derives_gold(working, gold):
        worked = ", ".join(format(n, "f") for n in scoring.worked_results(working))
        return None, Rejection("hint", "underived", f"the hinted trace computes {worked}, then states gold "
                               f"({' / '.join(gold.answers)})", text)
    cand.row["meta"]["verified"] = "hint"
    cand.row["meta"]["gold"] = {"hint": hint_answer(gold)}
    return cand.row, None


@dataclass
class GoldTally:
    """pass@1 (first candidate right) and pass@k (any candidate right) per category, for this run."""

    k: int
    by_category: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, t: Tried) -> None:
        c = self.by_category.setdefault(t.category, {"tried": 0, "pass_at_1": 0, "pass_at_k": 0})
        c["tried"] += 1
        c["pass_at_1"] += t.first
        c["pass_at_k"] += t.any

    def never_matched(self, min_tries: int = NEVER_MATCHED_MIN_TRIES) -> list[str]:
        """Categories tried on at least ``min_tries`` questions with no candidate ever right."""
        return sorted(k for k, c in self.by_category.items() if c["tried"] >= min_tries and c["pass_at_k"] == 0)

    def to_dict(self) -> dict[str, Any]:
        def rates(c: dict[str, int]) -> dict[str, Any]:
            n = c["tried"]
            return {**c, "pass_at_1_rate": round(c["pass_at_1"] / n, 4) if n else None,
                    "pass_at_k_rate": round(c["pass_at_k"] / n, 4) if n else None}

        total = {key: sum(c[key] for c in self.by_category.values()) for key in ("tried", "pass_at_1", "pass_at_k")}
        return {"k": self.k, "by_category": {k: rates(c) for k, c in sorted(self.by_category.items())},
                "total": rates(total), "never_matched": self.never_matched(),
                "never_matched_min_tries": NEVER_MATCHED_MIN_TRIES}
