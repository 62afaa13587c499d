"""The search policy's figures: does the model search what needs searching, and only that?

The policy the project teaches (README, "The search decision"):

- questions about fresh or changing data (every search-type question of the eval set) are
  always searched: **fresh-data recall**;
- reasoning questions (arithmetic, logic, programming, analysis, everyday advice) are never
  searched: **false searches on reasoning**;
- stable-knowledge questions (knowledge, science) are answered from memory where the model
  knows the answer and searched where it does not; what must not happen is a **wrong answer
  without a search** (nor an abstention: saying "I don't know" is allowed);
- and every answer decides within the token limit: **undecided** is an output that neither
  searched nor closed ``</thinking>``. With ``--close-thinking`` the loop closes a thinking
  cut at the limit and the model goes on: those answers count as decided by what follows,
  and **closed by the loop** says how many needed it;
- and a search opens with its own kind's decision line, where the model was trained with them:
  **search line mismatch** counts fresh-data searches opened as an unsure fact and knowledge
  searches opened as fresh data.

Each figure is a count with its 95% Wilson interval (:func:`thinksearch.evaluate.answers.proportion`).
Records are scored by :func:`thinksearch.evaluate.answers.answer_flags`. Pure functions, no model.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from thinksearch.evaluate.answers import answer_flags, proportion
from thinksearch import format as fmt
from thinksearch.questions import KNOWLEDGE

# The eval set's thinking categories, by what the policy asks of them.
REASONING = frozenset({"arithmetic", "logic", "programming", "analysis", "everyday"})

# (key, label) in the order reports show them.
POLICY_ROWS = (
    ("fresh_data_recall", "fresh-data questions searched"),
    ("reasoning_false_search", "reasoning questions searched (false searches)"),
    ("knowledge_wrong_unsearched", "knowledge questions answered wrongly without a search"),
    ("knowledge_right_unsearched", "knowledge questions answered right from memory"),
    ("knowledge_searched", "knowledge questions searched"),
    ("undecided", "undecided (no search, </thinking> never closed)"),
    ("closed_thinking", "thinking closed by the loop at the token limit (--close-thinking)"),
    ("search_line_mismatch", "searches opened with the other kind's decision line (fresh data as an unsure fact, or the reverse)"),
)


def policy_kind(qtype: str, category: str | None) -> str | None:
    """Which side of the search policy a question is on: fresh_data (always searched), reasoning
    (never), knowledge (searched where the student does not know); None for a thinking question
    of no known category."""
    if qtype == "search":
        return "fresh_data"
    if qtype != "thinking":
        return None
    return "reasoning" if category in REASONING else "knowledge" if category in KNOWLEDGE else None


def opening_line(record: Mapping[str, Any]) -> str | None:
    """Which decision line (:data:`thinksearch.format.DECISION_LINES`) the first turn opens its
    thinking with, or None (a model trained without decision lines, or another opening)."""
    rounds = (record.get("agent") or {}).get("rounds") or []
    first = str(rounds[0].get("raw") or "") if rounds else str(record.get("output") or "")
    head = (fmt.parse(first).thinking or "").lstrip()
    return next((kind for kind, line in fmt.DECISION_LINES.items() if head.startswith(line)), None)


def _mismatched_lines(flags: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> tuple[int, int]:
    """Among searches of fresh-data and knowledge questions that open with a search line: how many
    open with the other kind's. A seed that learns one line for every search (README, Results:
    119 of 120 fresh-data searches opened as an unsure fact) shows here while recall looks fine."""
    expected = {"fresh_data": "search", "knowledge": "knowledge"}
    lines = [(expected[kind], opening_line(r)) for r, f in flags
             if f["searched"] and (kind := policy_kind(r["type"], r.get("category"))) in expected]
    lines = [(want, got) for want, got in lines if got in ("search", "knowledge")]
    return sum(want != got for want, got in lines), len(lines)


def policy_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The policy figures over some records (thinking rows without a known category count only in ``undecided``)."""
    flags = [(r, r.get("answer") or answer_flags(r)) for r in records]
    by_kind: dict[str | None, list[dict[str, Any]]] = {"fresh_data": [], "reasoning": [], "knowledge": [], None: []}
    for r, f in flags:
        by_kind[policy_kind(r["type"], r.get("category"))].append(f)
    fresh, reasoning, knowledge = by_kind["fresh_data"], by_kind["reasoning"], by_kind["knowledge"]
    unsearched = [f for f in knowledge if not f["searched"]]
    return {
        "fresh_data_recall": proportion(sum(f["searched"] for f in fresh), len(fresh)),
        "reasoning_false_search": proportion(sum(f["searched"] for f in reasoning), len(reasoning)),
        # A knowledge question without gold cannot be judged right or wrong: it counts in neither.
        "knowledge_wrong_unsearched": proportion(
            sum(f["correct"] is False and f["has_final_answer"] and not f["abstained"] for f in unsearched), len(knowledge)),
        "knowledge_right_unsearched": proportion(sum(bool(f["correct"]) for f in unsearched), len(knowledge)),
        "knowledge_searched": proportion(sum(f["searched"] for f in knowledge), len(knowledge)),
        "undecided": proportion(sum(not f["searched"] and not f["has_final_answer"] for _, f in flags), len(flags)),
        "closed_thinking": proportion(sum(any(x.get("closed_thinking") for x in (r.get("agent") or {}).get("rounds", []))
                                          for r, _ in flags), len(flags)),
        "search_line_mismatch": proportion(*_mismatched_lines(flags)),
    }
