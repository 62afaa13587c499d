"""The search-policy figures (evaluate/decision.py) on hand-written records."""

from __future__ import annotations

from thinksearch.evaluate.decision import policy_metrics

GOLD = {"answers": ["华盛顿"], "match": "any"}
CALL = '<thinking>\n需要查\n</thinking>\n<tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call>'


def rec(type_: str, category: str, output: str, gold=None):
    return {"id": f"{category}-{len(output)}", "type": type_, "category": category, "question": "问题？", "output": output,
            "gold": gold, "flags": {"did_search": "<tool_call>" in output}}


def test_each_policy_figure_counts_what_it_says():
    records = [
        rec("search", "prices", CALL), rec("search", "weather", "<thinking>\n记得\n</thinking>\n25度。"),
        rec("thinking", "arithmetic", CALL), rec("thinking", "logic", "<thinking>\n推理\n</thinking>\n甲。"),
        rec("thinking", "programming", "<thinking>\n写一段代码"),  # never closed: undecided
        rec("thinking", "knowledge", "<thinking>\n知道\n</thinking>\n华盛顿。", GOLD),       # right from memory
        rec("thinking", "knowledge", "<thinking>\n知道\n</thinking>\n纽约。", GOLD),         # wrong, unsearched
        rec("thinking", "science", "<thinking>\n不确定\n</thinking>\n我不确定答案。", GOLD),  # abstained: not wrong
        rec("thinking", "knowledge", CALL, GOLD),                                          # searched
    ]
    p = policy_metrics(records)
    assert (p["fresh_data_recall"]["k"], p["fresh_data_recall"]["n"]) == (1, 2)
    assert (p["reasoning_false_search"]["k"], p["reasoning_false_search"]["n"]) == (1, 3)
    assert (p["knowledge_wrong_unsearched"]["k"], p["knowledge_wrong_unsearched"]["n"]) == (1, 4)
    assert p["knowledge_right_unsearched"]["k"] == 1 and p["knowledge_searched"]["k"] == 1
    assert (p["undecided"]["k"], p["undecided"]["n"]) == (1, 9)
    assert p["undecided"]["ci95"][0] < 1 / 9 < p["undecided"]["ci95"][1]


def test_no_rows_of_a_kind_is_no_rate():
    p = policy_metrics([rec("search", "prices", CALL)])
    assert p["reasoning_false_search"] == {"k": 0, "n": 0, "rate": None, "ci95": None}
    assert p["fresh_data_recall"]["rate"] == 1.0


def test_answers_whose_thinking_the_loop_closed_are_counted():
    closed = {"rounds": [{"raw": "<thinking>\n需要查\n</thinking>\n2。", "closed_thinking": True}],
              "searches": [], "final": "<thinking>\n需要查\n</thinking>\n2。"}
    records = [rec("thinking", "arithmetic", "<thinking>\n需要查\n</thinking>\n2。"),
               {**rec("thinking", "logic", "<thinking>\n推理\n</thinking>\n甲。"), "agent": closed}]
    p = policy_metrics(records)
    assert (p["closed_thinking"]["k"], p["closed_thinking"]["n"]) == (1, 2)
    assert p["undecided"]["k"] == 0  # closed, it answered: decided


def test_searches_opened_with_the_other_kinds_decision_line_are_counted():
    from thinksearch.format import DECISION_LINES

    def call(kind: str) -> str:
        return CALL.replace("需要查", DECISION_LINES[kind] + "\n需要查")

    records = [rec("search", "prices", call("search")), rec("search", "weather", call("knowledge")),  # one mismatch
               rec("thinking", "science", call("search"), GOLD),   # a knowledge search opened as fresh data: mismatch
               rec("thinking", "knowledge", call("knowledge"), GOLD),
               rec("search", "prices", CALL),                      # no decision line: not counted
               rec("thinking", "arithmetic", call("knowledge"))]   # a false search, counted there, not here
    p = policy_metrics(records)
    assert (p["search_line_mismatch"]["k"], p["search_line_mismatch"]["n"]) == (2, 4)
    # In the agent loop the first round's opening counts, not the final turn's.
    agent = {"rounds": [{"raw": call("knowledge")}, {"raw": "答案。"}], "searches": [{"query": "x", "results": []}],
             "final": "答案。"}
    p = policy_metrics([{**rec("search", "prices", call("search")), "agent": agent}])
    assert (p["search_line_mismatch"]["k"], p["search_line_mismatch"]["n"]) == (1, 1)
    assert policy_metrics([rec("search", "prices", CALL)])["search_line_mismatch"]["rate"] is None
