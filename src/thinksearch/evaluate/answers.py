"""What the model finally says, scored against gold: accuracy, grounding, abstention, invented numbers.

Every record's final answer (the text after ``</thinking>`` of its last turn; none when the
thinking never closed) is scored with :mod:`thinksearch.scoring`, the same scorer synthesis
gates use:

- thinking questions with gold: the accepted answer appears in the final answer;
- answerable search questions: the key fact appears in the final answer ("grounded");
- unanswerable search questions (the corpus does not hold the answer): the answer says so
  ("abstained") instead of inventing a figure;
- answerable search questions whose results, as the model read them, hold the key fact: the
  answer abstains anyway ("over-abstention"), the failure a high abstention rate can hide;
- every search question's answer: the numbers in it that appear neither in the question nor in
  the results the model read (unsupported numbers), whether or not it searched, so answering
  from memory shows up;
- "confidently wrong": a question with gold answered wrongly, without a search and without
  abstaining.

Every rate comes with its count and a 95% Wilson interval: on 30 questions a rate moves by
about ±18 points between runs, and the interval says so.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from thinksearch import scoring

Z95 = 1.959964


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of k successes in n trials (None when n is 0).

    >>> [round(x, 3) for x in wilson(22, 30)]
    [0.556, 0.858]
    >>> wilson(0, 0) is None
    True
    """
    if n <= 0:
        return None
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(k: int, n: int) -> dict[str, Any]:
    """A rate as the report keeps it: count, total, rate and 95% interval."""
    ci = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": list(ci) if ci else None}


def answer_flags(rec: Mapping[str, Any]) -> dict[str, Any]:
    """How one record's final answer scores; keys are None where a check does not apply."""
    gold = rec.get("gold") or {}
    agent = rec.get("agent")
    final_raw = agent["final"] if agent else rec.get("output", "")
    final = scoring.final_answer(final_raw)
    searches = agent["searches"] if agent else []
    searched = bool(searches) if agent else bool(rec.get("flags", {}).get("did_search"))
    answers = gold.get("answers")
    answerable = gold.get("answerable", True)
    correct = None
    answer_in_results = None
    if answers and answerable:
        match = gold.get("match", "any")
        correct = final is not None and scoring.matches_gold(final, answers, match, question=rec.get("question"),
                                                              wrong=gold.get("wrong", ()))
        if rec["type"] == "search":
            texts = "\n".join(s.get("text") or "" for s in searches)
            answer_in_results = scoring.matches_gold(texts, answers, match)
    abstained = scoring.abstains(final)
    unsupported: list[str] | None = None
    numbers = 0
    if rec["type"] == "search" and final is not None:
        support = scoring.unsupported_numbers(final, rec["question"], [s.get("text", "") for s in searches])
        numbers, unsupported = len(support.found), list(support.unsupported)
    return {
        "final_answer": final,
        "has_final_answer": final is not None,
        "searched": searched,
        "gold": bool(gold),
        "answerable": answerable if rec["type"] == "search" else None,
        "correct": correct,
        "answer_in_results": answer_in_results,
        "abstained": abstained,
        "numbers": numbers,
        "unsupported_numbers": unsupported,
        # Said something, and something wrong, with neither a search nor a caveat behind it.
        "confidently_wrong": (correct is False and final is not None and not searched and not abstained)
        if correct is not None else None,
    }


def _flags(rec: Mapping[str, Any]) -> dict[str, Any]:
    return rec.get("answer") or answer_flags(rec)


def answer_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The answer figures over some records (each record carries ``answer_flags`` as ``answer``)."""
    a = [(r["type"], _flags(r)) for r in records]
    think = [f for t, f in a if t == "thinking" and f["correct"] is not None]
    answerable = [f for t, f in a if t == "search" and f["correct"] is not None]
    unanswerable = [f for t, f in a if t == "search" and f["gold"] and f["answerable"] is False]
    # .get: report.json files written before this flag existed are rescored without it.
    held = [f for t, f in a if t == "search" and f.get("answer_in_results")]
    with_numbers = [f for t, f in a if t == "search" and f["numbers"]]
    gold = [f for _, f in a if f["correct"] is not None]
    return {
        "thinking_accuracy": proportion(sum(f["correct"] for f in think), len(think)),
        "grounded_answer": proportion(sum(f["correct"] for f in answerable), len(answerable)),
        "grounded_answer_searched": proportion(sum(f["correct"] and f["searched"] for f in answerable), len(answerable)),
        "abstention_unanswerable": proportion(sum(f["abstained"] for f in unanswerable), len(unanswerable)),
        "abstention_with_answer": proportion(sum(f["abstained"] for f in held), len(held)),
        "answers_with_unsupported_numbers": proportion(
            sum(bool(f["unsupported_numbers"]) for f in with_numbers), len(with_numbers)),
        "unsupported_number_share": proportion(
            sum(len(f["unsupported_numbers"] or []) for f in with_numbers), sum(f["numbers"] for f in with_numbers)),
        "confidently_wrong": proportion(sum(bool(f["confidently_wrong"]) for f in gold), len(gold)),
        "no_final_answer": proportion(sum(not f["has_final_answer"] for _, f in a), len(a)),
    }


def answer_metrics_by_category(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """:func:`answer_metrics` per (type, category) of the rows that carry a category."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["type"], r.get("category") or "-"), []).append(r)
    return [{"type": t, "category": c, **answer_metrics(rs)} for (t, c), rs in sorted(groups.items())]


def disagreements(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], limit: int = 10) -> list[dict[str, Any]]:
    """Questions model ``a`` gets wrong and model ``b`` right (gold-checked only), up to ``limit``."""
    right_b = {r["id"]: r for r in b if _flags(r)["correct"]}
    out = []
    for r in a:
        other = right_b.get(r["id"])
        if _flags(r)["correct"] is False and other is not None:
            out.append({"id": r["id"], "type": r["type"], "category": r.get("category"), "question": r["question"],
                        "gold": (r.get("gold") or {}).get("answers"),
                        "wrong": _flags(r)["final_answer"], "right": _flags(other)["final_answer"]})
        if len(out) >= limit:
            break
    return out
