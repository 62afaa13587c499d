"""What one output did (per-question flags), and the counts and rates over many outputs.

:func:`question_flags` reads an output through :func:`thinksearch.format.parse` and says
whether it hit the reference's tag, decided to search, made a valid call and thought in a
well-formed way (the definitions are in the package docstring); :func:`summarize` counts the
flags per category, as a should-search × did-search confusion matrix, as speed, and (from
:mod:`thinksearch.evaluate.answers`) how right the final answers are. Pure functions, no model.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from thinksearch import format as fmt
from thinksearch.evaluate.answers import answer_flags, answer_metrics, answer_metrics_by_category
from thinksearch.evaluate.decision import policy_metrics
from thinksearch.evaluate.evalset import TYPES


def _after_thinking(text: str) -> str | None:
    """The text after the first ``</thinking>`` that closes a ``<thinking>``, or None."""
    start = text.find(fmt.THINK_OPEN)
    if start < 0:
        return None
    end = text.find(fmt.THINK_CLOSE, start + len(fmt.THINK_OPEN))
    return None if end < 0 else text[end + len(fmt.THINK_CLOSE) :]


def question_flags(type_: str, output: str) -> dict[str, Any]:
    """What one output did, as flags the metrics count (see the module docstring).

    Call-related flags (``call_*``) are None when the output holds no call attempt.

    >>> f = question_flags("search", '<thinking>\\n需要最新数据\\n</thinking>\\n<tool_call>\\n{"name": "search", "arguments": {"query": "比特币价格"}}\\n</tool_call>')
    >>> f["tag_hit"], f["did_search"], f["call_valid"], f["thinking_well_formed"]
    (True, True, True, True)
    >>> f = question_flags("thinking", "<thinking>\\n设边长为a")
    >>> f["tag_hit"], f["thinking_closed"], f["thinking_well_formed"], f["call_valid"]
    (True, False, False, None)
    """
    p = fmt.parse(output)
    calls_all = [*p.tool_calls, *p.invalid_calls]
    attempted = bool(calls_all)
    flags: dict[str, Any] = {
        "tag_thinking": fmt.THINK_OPEN in output,
        "tag_tool_call": fmt.TOOL_OPEN in output,
        "should_search": type_ == "search",
        "did_search": attempted,
        "n_calls": len(calls_all),
    }
    flags["tag_hit"] = flags["tag_thinking"] if type_ == "thinking" else flags["tag_tool_call"]

    # Tool-call validity, every block: JSON object with a name; name is `search`; usable query.
    error = None
    if attempted:
        json_ok = not p.invalid_calls
        name_ok = json_ok and all(c.name == fmt.SEARCH_TOOL for c in p.tool_calls)
        query_ok = json_ok and all(c.query is not None and fmt.query_problem(c.query) is None for c in p.tool_calls)
        problems = [c.error for c in p.invalid_calls] + [e for c in p.tool_calls if (e := fmt.validate_query(c))]
        error = problems[0] if problems else None
        flags.update(call_json_ok=json_ok, call_name_ok=name_ok, call_query_ok=query_ok, call_valid=not problems,
                     call_terminated=all(c.terminated for c in calls_all))
    else:
        flags.update(call_json_ok=None, call_name_ok=None, call_query_ok=None, call_valid=None, call_terminated=None)
    flags["call_error"] = error
    flags["did_search_valid"] = bool(flags["call_valid"])
    flags["call_in_thinking"] = any(c.in_thinking for c in calls_all)

    # Well-formed thinking: opened, closed, non-empty, then an answer (or a call on a search question).
    tail = _after_thinking(output)
    after = fmt.parse(tail) if tail is not None else None
    followed = after is not None and (bool(after.answer) or (type_ == "search" and after.attempted_call))
    flags.update(
        thinking_opened=p.has_thinking_tag,
        thinking_closed=p.has_thinking_tag and p.thinking_closed,
        thinking_nonempty=bool(p.thinking and p.thinking.strip()),
        thinking_followed=followed,
    )
    flags["thinking_well_formed"] = (
        flags["thinking_closed"] and flags["thinking_nonempty"] and followed and not flags["call_in_thinking"]
    )
    flags["decision_correct"] = flags["did_search"] == flags["should_search"]
    return flags


def parsed_fields(output: str) -> dict[str, Any]:
    """The parse of an output as plain JSON (for report.json readers)."""
    p = fmt.parse(output)
    return {
        "thinking": p.thinking,
        "thinking_closed": p.thinking_closed,
        "answer": p.answer,
        "tool_calls": [
            {"name": c.name, "arguments": c.arguments, "in_thinking": c.in_thinking, "terminated": c.terminated}
            for c in p.tool_calls
        ],
        "invalid_calls": [
            {"raw": c.raw, "error": c.error, "in_thinking": c.in_thinking, "terminated": c.terminated}
            for c in p.invalid_calls
        ],
    }


# ============================================================================ metrics


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def category_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts and rates over some records (one category, or all).

    Call validity is over the records that attempted a call; the rest over all records.
    """
    n = len(records)
    f = [r["flags"] for r in records]

    def count(key: str) -> int:
        return sum(bool(x[key]) for x in f)

    attempts = count("did_search")
    out: dict[str, Any] = {"n": n}
    for key in ("tag_hit", "tag_thinking", "tag_tool_call", "did_search", "did_search_valid", "call_in_thinking",
                "thinking_opened", "thinking_closed", "thinking_nonempty", "thinking_followed",
                "thinking_well_formed", "decision_correct"):
        out[key] = count(key)
    out["tag_hit_rate"] = _rate(out["tag_hit"], n)
    out["call_attempts"] = attempts
    for key in ("call_json_ok", "call_name_ok", "call_query_ok", "call_valid"):
        out[key] = sum(x[key] is True for x in f)
    out["call_valid_rate"] = _rate(out["call_valid"], attempts)
    out["thinking_well_formed_rate"] = _rate(out["thinking_well_formed"], n)
    out["truncated"] = sum(r["finish_reason"] == "length" for r in records)
    tokens = sum(r["completion_tokens"] for r in records)
    out["completion_tokens"] = tokens
    out["mean_completion_tokens"] = tokens / n if n else None
    out["mean_latency_s"] = sum(r["latency_s"] for r in records) / n if n else None
    return out


def decision_metrics(records: Sequence[Mapping[str, Any]], did_key: str = "did_search") -> dict[str, Any]:
    """Should-search × did-search confusion matrix and its rates.

    ``did_key`` is ``did_search`` (any attempt) or ``did_search_valid`` (a runnable call).

    >>> rs = [{"flags": {"should_search": s, "did_search": d}} for s, d in [(1, 1), (1, 0), (0, 1), (0, 0), (0, 0)]]
    >>> m = decision_metrics(rs)
    >>> (m["tp"], m["fn"], m["fp"], m["tn"]), m["false_search_rate"], m["missed_search_rate"], m["f1"]
    ((1, 1, 1, 2), 0.3333333333333333, 0.5, 0.5)
    """
    tp = fp = fn = tn = 0
    for r in records:
        should, did = bool(r["flags"]["should_search"]), bool(r["flags"][did_key])
        tp += should and did
        fn += should and not did
        fp += did and not should
        tn += not should and not did
    precision, recall = _rate(tp, tp + fp), _rate(tp, tp + fn)
    f1 = _rate(2 * tp, 2 * tp + fp + fn)
    return {
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "false_search_rate": _rate(fp, fp + tn),
        "missed_search_rate": _rate(fn, tp + fn),
        "precision": precision, "recall": recall, "f1": f1,
        "accuracy": _rate(tp + tn, tp + fp + fn + tn),
    }


def speed_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Tokens and time; a batch's wall time (its last finish) is counted once, however many questions it held."""
    batches: dict[str, float] = {}
    for r in records:
        batches[r["batch_id"]] = max(batches.get(r["batch_id"], 0.0), r.get("elapsed_s", r["latency_s"]))
    seconds = sum(batches.values())
    tokens = sum(r["completion_tokens"] for r in records)
    n = len(records)
    return {
        "questions": n,
        "completion_tokens": tokens,
        "prompt_tokens": sum(r["prompt_tokens"] for r in records),
        "generation_s": seconds,
        "tokens_per_s": tokens / seconds if seconds else None,
        "seconds_per_question": seconds / n if n else None,
        "mean_latency_s": sum(r["latency_s"] for r in records) / n if n else None,
        "batches": len(batches),
    }


def fine_category_metrics(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tag hits and search decisions per (type, the row's own ``category``), where rows carry one."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("category"):
            groups.setdefault((r["type"], r["category"]), []).append(r)
    return [
        {"type": t, "category": c, "n": len(rs), "tag_hit": sum(bool(r["flags"]["tag_hit"]) for r in rs),
         "did_search": sum(bool(r["flags"]["did_search"]) for r in rs)}
        for (t, c), rs in sorted(groups.items(), key=lambda kv: (TYPES.index(kv[0][0]), kv[0][1]))
    ]


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """All metrics of one model: per category, overall, decision (both variants), speed, answers, search policy."""
    return {
        "categories": {t: category_metrics([r for r in records if r["type"] == t]) for t in TYPES},
        "fine_categories": fine_category_metrics(records),
        "overall": category_metrics(records),
        "decision": {"any": decision_metrics(records, "did_search"), "valid": decision_metrics(records, "did_search_valid")},
        "speed": speed_metrics(records),
        "answers": answer_metrics(records),
        "answers_by_category": answer_metrics_by_category(records),
        "policy": policy_metrics(records),
    }


def record_for_report(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A saved output with its parse and flags, as report.json keeps it."""
    out = dict(rec)
    out["parsed"] = parsed_fields(rec["output"])
    out["flags"] = question_flags(rec["type"], rec["output"])
    out["answer"] = answer_flags(out)
    return out


