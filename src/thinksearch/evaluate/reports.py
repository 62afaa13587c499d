"""The reports: report.json (every output with its parse and flags), and report.md and report.png drawn from it.

The Markdown sets the reference's published tag hit rates beside ours; the plot is grouped
bars per metric. Both read report.json's data only, so they can be redrawn from it.
Used by :func:`thinksearch.evaluate.evaluate`.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from thinksearch import format as fmt
from thinksearch.config import to_dict
from thinksearch.evaluate.answers import disagreements
from thinksearch.evaluate.decision import POLICY_ROWS
from thinksearch.evaluate.evalset import TYPES, EvalItem, EvalSet
from thinksearch.evaluate.metrics import record_for_report, summarize
from thinksearch.files import load_json, write_text_atomic
from thinksearch.refs import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.config import EvalConfig
    from thinksearch.evaluate.outputs import OutputStore

# The reference's published result (tag hit rate on 30 + 30 held-out samples), set beside ours.
REFERENCE = {
    "label": "reference (R1-Distill-7B → Qwen2.5-0.5B LoRA, published)",
    "thinking": {"hits": 30, "n": 30},
    "search": {"hits": 22, "n": 30},
}
REPORT_VERSION = 1


def build_report(cfg: EvalConfig, evalset: EvalSet, items: Sequence[EvalItem], specs: Sequence[ModelSpec],
                 stores: Mapping[str, OutputStore]) -> dict[str, Any]:
    """report.json's content: config, the reference's figures, and per model its metrics and records."""
    from thinksearch import __version__

    entries = []
    for spec in specs:
        store = stores[spec.name]
        records = [record_for_report(store.done[it.id]) for it in items if it.id in store.done]
        entries.append({"name": spec.name, "ref": spec.ref, "engine": store.settings.get("engine", "transformers"),
                        "settings": store.settings, "settings_key": store.key,
                        "metrics": summarize(records), "records": records})
    counts = {t: sum(it.type == t for it in items) for t in TYPES}
    return {
        "report_version": REPORT_VERSION,
        "thinksearch_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": to_dict(cfg),
        "eval_file": {"path": evalset.path, "rows": len(evalset.items), "duplicates_dropped": evalset.duplicates,
                      "evaluated": counts},
        "definitions": DEFINITIONS,
        "reference": REFERENCE,
        "models": entries,
        "comparisons": comparisons(entries),
    }


def comparisons(entries: Sequence[Mapping[str, Any]], limit: int = 10) -> list[dict[str, Any]]:
    """The first model (the base, in a run) against each other one: where one is right and the other wrong."""
    out = []
    for other in entries[1:]:
        a, b = entries[0], other
        out.append({"a": a["name"], "b": b["name"],
                    "b_wrong_a_right": disagreements(b["records"], a["records"], limit),
                    "a_wrong_b_right": disagreements(a["records"], b["records"], limit)})
    return out


DEFINITIONS = {
    "tag_hit": "<thinking> present on a thinking question; <tool_call> present on a search question (the reference's check)",
    "did_search": "the output contains a tool-call attempt (<tool_call>), valid or not",
    "did_search_valid": "the output contains tool calls and every one is valid (an agent could run it)",
    "call_valid": "JSON object with name and arguments (strict JSON), name == 'search', query a non-empty single line of at most 64 characters without tags",
    "thinking_well_formed": "<thinking> opened and closed, non-empty, followed by an answer (or a call, on a search question), no call inside it",
    "latency_s": "time from the start of a question's generation to its end (fixed batches: the batch's wall time)",
    "elapsed_s": "time from the start of the batch (or continuous-batching session) to the question's end",
    "generation_s": "sum over batches/sessions of their wall time (last elapsed_s), each counted once",
    "final_answer": "the text after the last </thinking> of the last turn, tool calls removed; a reply that never opens <thinking> is all answer; one that never closes it has none",
    "thinking_accuracy": "thinking questions with gold whose final answer holds the accepted answer(s) (match any/all, after normalising)",
    "grounded_answer": "answerable search questions (the corpus holds the answer) whose final answer states the key fact",
    "abstention_unanswerable": "search questions the corpus cannot answer whose final answer says the results do not hold it",
    "abstention_with_answer": "answerable search questions whose results, as read, hold the key fact, and whose final answer abstains anyway (over-abstention)",
    "answers_with_unsupported_numbers": "search answers stating numbers, with at least one number found neither in the question nor in the results the model read",
    "confidently_wrong": "questions with gold answered wrongly without a search and without abstaining",
    "ci95": "95% Wilson score interval of the rate",
}

ANSWER_ROWS = (
    ("thinking_accuracy", "思考题答对 (thinking accuracy)"),
    ("grounded_answer", "搜索题含关键事实 (grounded answer)"),
    ("grounded_answer_searched", "… 且确实搜索了 (and searched)"),
    ("abstention_unanswerable", "结果无答案时承认 (abstains on unanswerable)"),
    ("abstention_with_answer", "结果有答案仍称没有 (abstains with the answer in its results)"),
    ("answers_with_unsupported_numbers", "含无来源数字的回答 (answers with unsupported numbers)"),
    ("unsupported_number_share", "无来源数字占比 (unsupported / all numbers)"),
    ("confidently_wrong", "自信地答错 (confidently wrong)"),
    ("no_final_answer", "没有最终回答 (no final answer)"),
)


def proportion_cell(p: Mapping[str, Any] | None) -> str:
    """``k/n (rate%, lo–hi%)``: a rate with its count and 95% interval."""
    if not p or not p.get("n"):
        return "–"
    lo, hi = p["ci95"]
    return f"{p['k']}/{p['n']} ({100 * p['rate']:.1f}%, {100 * lo:.0f}–{100 * hi:.0f}%)"


def answers_markdown(report: Mapping[str, Any]) -> list[str]:
    """The answer figures side by side, per category, and where the models disagree."""
    models = report["models"]
    if not any("answers" in m["metrics"] for m in models):
        return []
    lines = ["## 最终回答 (what the model finally says, scored against gold)", "",
             "Each cell: count / total (rate, 95% Wilson interval). Definitions are in report.json.", "",
             "| 指标 | " + " | ".join(m["name"] for m in models) + " |", "|---|" + "--:|" * len(models)]
    for key, label in ANSWER_ROWS:
        lines.append(f"| {label} | " + " | ".join(proportion_cell(m["metrics"]["answers"].get(key)) for m in models) + " |")
    lines += ["", "### 按类别 (by category)", "",
              "| 模型 | 类型 | 类别 | 答对 / 含关键事实 | 承认无答案 | 含无来源数字 | 自信答错 |", "|---|---|---|--:|--:|--:|--:|"]
    for m in models:
        for k, g in enumerate(m["metrics"].get("answers_by_category", [])):
            right = g["thinking_accuracy"] if g["type"] == "thinking" else g["grounded_answer"]
            lines.append("| " + " | ".join([
                f"**{m['name']}**" if k == 0 else "", g["type"], _cell(g["category"], 30), proportion_cell(right),
                proportion_cell(g["abstention_unanswerable"]), proportion_cell(g["answers_with_unsupported_numbers"]),
                proportion_cell(g["confidently_wrong"]),
            ]) + " |")
    for c in report.get("comparisons", []):
        for key, wrong, right in (("b_wrong_a_right", c["b"], c["a"]), ("a_wrong_b_right", c["a"], c["b"])):
            rows = c[key]
            lines += ["", f"### {wrong} wrong, {right} right ({len(rows)} shown, at most 10)", ""]
            if rows:
                lines += [f"| id | 问题 | gold | {wrong} | {right} |", "|---|---|---|---|---|"]
                lines += ["| " + " | ".join([r["id"], _cell(r["question"], 40), _cell(" / ".join(r["gold"] or []), 30),
                                             _cell(r["wrong"] or "(no final answer)", 60), _cell(r["right"] or "", 60)]) + " |"
                          for r in rows]
    return lines + [""]


def policy_markdown(report: Mapping[str, Any]) -> list[str]:
    """The search policy's figures side by side (evaluate/decision.py says what each counts)."""
    models = [m for m in report["models"] if "policy" in m["metrics"]]
    if not models:
        return []
    lines = ["## 搜索策略 (the search policy: search fresh data, never reasoning, knowledge only when unsure)", "",
             "Each cell: count / total (rate, 95% Wilson interval).", "",
             "| 指标 | " + " | ".join(m["name"] for m in models) + " |", "|---|" + "--:|" * len(models)]
    for key, label in POLICY_ROWS:
        lines.append(f"| {label} | " + " | ".join(proportion_cell(m["metrics"]["policy"][key]) for m in models) + " |")
    return lines + [""]



def write_reports(report: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, then report.md and report.png drawn from it; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "report.png"}
    write_text_atomic(paths["json"], json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    # Re-read what was written, so the Markdown and the plot can only show report.json's data.
    data = load_json(paths["json"], "report")
    write_text_atomic(paths["md"], render_markdown(data))
    plot_report(data, paths["png"])
    return paths


def fraction(k: int | None, n: int | None) -> str:
    """``k/n``, or an em dash when there is nothing to count.

    >>> fraction(22, 30), fraction(0, 0)
    ('22/30', '—')
    """
    return "—" if not n else f"{k}/{n}"


def percent(x: float | None) -> str:
    """A rate as the reference prints it.

    >>> percent(22 / 30), percent(None)
    ('73.33%', '—')
    """
    return "—" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _cell(text: str, limit: int = 80) -> str:
    """Text safe inside a Markdown table cell: one line, capped, pipes and tags escaped.

    >>> _cell("<thinking>\\na | b")
    '&lt;thinking&gt; a \\\\| b'
    """
    text = fmt.cap(" ".join(str(text).split()), limit)
    # Escaped so a renderer shows `<thinking>` instead of swallowing it as an HTML tag.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


CATEGORY_LABELS = {"thinking": "thinking 思考", "search": "search 搜索", "overall": "overall 总计"}


def render_markdown(report: Mapping[str, Any]) -> str:
    """report.md from report.json's data: the reference's table plus the new columns, per model."""
    ref = report["reference"]
    ev = report["eval_file"]
    cfg = report["config"]
    decoding = "greedy" if not cfg["temperature"] else f"sampling (temperature {cfg['temperature']}, top_p {cfg['top_p']}, seed {cfg['seed']})"
    lines = [
        "# thinksearch eval",
        "",
        f"Eval file `{ev['path']}`: {ev['evaluated']['thinking']} thinking + {ev['evaluated']['search']} search questions"
        + (f" (a seeded sample of {ev['rows']}, seed {cfg['seed']})" if sum(ev["evaluated"].values()) < ev["rows"] else "")
        + f"; decoding {decoding}, at most {cfg['max_new_tokens']} new tokens; {report['created']}.",
        "",
        "## 标签命中率 (tag hit rate, the reference's table)",
        "",
        "| 模型 | 类别 | 样本数 | 标签命中 | 命中率 | 参考命中率 | 调用搜索 | 有效调用 | 思考完整 | 截断 | 平均 tokens | 平均延迟 (s) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for m in report["models"]:
        met = m["metrics"]
        for cat in (*TYPES, "overall"):
            c = met["categories"][cat] if cat in TYPES else met["overall"]
            if cat in TYPES:
                rh, rn = ref[cat]["hits"], ref[cat]["n"]
            else:
                rh, rn = sum(ref[t]["hits"] for t in TYPES), sum(ref[t]["n"] for t in TYPES)
            lines.append("| " + " | ".join([
                f"**{m['name']}**" if cat == TYPES[0] else "",
                CATEGORY_LABELS[cat], str(c["n"]), fraction(c["tag_hit"], c["n"]), percent(c["tag_hit_rate"]),
                f"{percent(rh / rn)} ({rh}/{rn})",
                fraction(c["did_search"], c["n"]), fraction(c["call_valid"], c["call_attempts"]),
                fraction(c["thinking_well_formed"], c["n"]), fraction(c["truncated"], c["n"]),
                _num(c["mean_completion_tokens"]), _num(c["mean_latency_s"], 2),
            ]) + " |")
    lines += [
        "",
        f"参考命中率: {ref['label']}. 标签命中: `<thinking>` present on thinking questions, `<tool_call>` on search "
        "questions. 调用搜索: outputs with a tool-call attempt. 有效调用: valid calls / attempts. "
        "思考完整: well-formed thinking. 截断: stopped by the token limit.",
        "",
        "## 搜索决策 (should search × did search)",
        "",
        "`any`: a tool-call attempt counts as searching; `valid`: only outputs whose calls are all valid.",
        "",
        "| 模型 | 判定 | TP | FN | FP | TN | 误搜率 (false search) | 漏搜率 (missed search) | precision | recall | F1 | accuracy |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for m in report["models"]:
        for variant in ("any", "valid"):
            d = m["metrics"]["decision"][variant]
            lines.append("| " + " | ".join([
                f"**{m['name']}**" if variant == "any" else "", variant,
                str(d["tp"]), str(d["fn"]), str(d["fp"]), str(d["tn"]),
                percent(d["false_search_rate"]), percent(d["missed_search_rate"]),
                percent(d["precision"]), percent(d["recall"]), percent(d["f1"]), percent(d["accuracy"]),
            ]) + " |")
    lines += [
        "",
        "## 工具调用 (tool-call validity, over outputs that attempted a call)",
        "",
        "| 模型 | 类别 | 尝试调用 | JSON 正确 | name = search | query 合格 | 有效 | 调用在思考内 |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for m in report["models"]:
        for cat in (*TYPES, "overall"):
            c = m["metrics"]["categories"][cat] if cat in TYPES else m["metrics"]["overall"]
            a = c["call_attempts"]
            lines.append("| " + " | ".join([
                f"**{m['name']}**" if cat == TYPES[0] else "", CATEGORY_LABELS[cat], str(a),
                fraction(c["call_json_ok"], a), fraction(c["call_name_ok"], a), fraction(c["call_query_ok"], a),
                fraction(c["call_valid"], a), fraction(c["call_in_thinking"], a),
            ]) + " |")
    lines += [
        "",
        "## 思考格式 (well-formed thinking)",
        "",
        "| 模型 | 类别 | 样本数 | `<thinking>` | 闭合 | 非空 | 之后有回答/调用 | 完整 |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for m in report["models"]:
        for cat in (*TYPES, "overall"):
            c = m["metrics"]["categories"][cat] if cat in TYPES else m["metrics"]["overall"]
            n = c["n"]
            lines.append("| " + " | ".join([
                f"**{m['name']}**" if cat == TYPES[0] else "", CATEGORY_LABELS[cat], str(n),
                fraction(c["thinking_opened"], n), fraction(c["thinking_closed"], n), fraction(c["thinking_nonempty"], n),
                fraction(c["thinking_followed"], n), fraction(c["thinking_well_formed"], n),
            ]) + " |")
    lines += [
        "",
        "## 速度 (generation)",
        "",
        "| 模型 | 问题数 | 生成 tokens | 生成时间 (s) | tokens/s | 每题 (s) | 平均延迟 (s) | 批次 |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for m in report["models"]:
        s = m["metrics"]["speed"]
        lines.append("| " + " | ".join([
            f"**{m['name']}**", str(s["questions"]), str(s["completion_tokens"]), _num(s["generation_s"]),
            _num(s["tokens_per_s"]), _num(s["seconds_per_question"], 2), _num(s["mean_latency_s"], 2), str(s["batches"]),
        ]) + " |")
    lines += ["", "平均延迟: from the start of a question's generation to its end; 生成时间 counts each batch's wall time once.", ""]
    if any(m["metrics"]["fine_categories"] for m in report["models"]):
        lines += [
            "## 细分类别 (by the rows' own category)",
            "",
            "| 模型 | 类别 | 细分类别 | 样本数 | 标签命中 | 调用搜索 |",
            "|---|---|---|--:|--:|--:|",
        ]
        for m in report["models"]:
            for k, g in enumerate(m["metrics"]["fine_categories"]):
                lines.append("| " + " | ".join([
                    f"**{m['name']}**" if k == 0 else "", g["type"], _cell(g["category"], 30), str(g["n"]),
                    fraction(g["tag_hit"], g["n"]), fraction(g["did_search"], g["n"]),
                ]) + " |")
        lines.append("")
    lines += answers_markdown(report)
    lines += policy_markdown(report)
    lines += ["## 未命中示例 (misses; every output is in report.json)", ""]
    for m in report["models"]:
        misses = [r for r in m["records"] if is_miss(r)]
        lines.append(f"**{m['name']}**: {len(misses)} question(s) missed the tag or the decision, or made an invalid call.")
        lines.append("")
        if misses:
            lines += ["| id | 类别 | 问题 | 输出 (开头) | 原因 |", "|---|---|---|---|---|"]
            for r in misses[:6]:
                lines.append("| " + " | ".join([
                    r["id"], r["type"], _cell(r["question"], 40), _cell(r["output"] or "(empty)", 80), _cell(miss_reason(r), 60),
                ]) + " |")
            lines.append("")
    models = ", ".join(f"`{m['name']}` = `{m['ref']}`" for m in report["models"])
    lines += [f"Models: {models}.", ""]
    return "\n".join(lines)


def is_miss(record: Mapping[str, Any]) -> bool:
    f = record["flags"]
    return not f["tag_hit"] or not f["decision_correct"] or f["call_valid"] is False


def miss_reason(record: Mapping[str, Any]) -> str:
    """Why a question counts as missed, in a few words."""
    f = record["flags"]
    why = []
    if record["type"] == "thinking":
        if not f["tag_thinking"]:
            why.append("no <thinking>")
        if f["did_search"]:
            why.append("searched a thinking question")
    else:
        if not f["did_search"]:
            why.append("did not call search")
    if f["call_error"]:
        why.append(f"invalid call: {f['call_error']}")
    if record["finish_reason"] == "length":
        why.append("truncated")
    if not record["output"].strip():
        why.append("empty output")
    return "; ".join(why) or "—"


PLOT_METRICS = (
    ("thinking tag hit", lambda m: m["categories"]["thinking"]["tag_hit_rate"], "thinking"),
    ("search tag hit", lambda m: m["categories"]["search"]["tag_hit_rate"], "search"),
    ("well-formed thinking", lambda m: m["overall"]["thinking_well_formed_rate"], None),
    ("valid calls / attempts", lambda m: m["overall"]["call_valid_rate"], None),
    ("decision accuracy", lambda m: m["decision"]["any"]["accuracy"], None),
    ("search F1", lambda m: m["decision"]["any"]["f1"], None),
)


def plot_report(report: Mapping[str, Any], path: str | Path) -> None:
    """report.png: grouped bars, one group per metric, one bar per model (+ the reference's two)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m["name"] for m in report["models"]]
    series: list[tuple[str, list[float | None]]] = []
    for m in report["models"]:
        series.append((m["name"], [fn(m["metrics"]) for _, fn, _ in PLOT_METRICS]))
    ref = report["reference"]
    series.append(("reference", [ref[t]["hits"] / ref[t]["n"] if t else None for _, _, t in PLOT_METRICS]))
    n_groups, n_bars = len(PLOT_METRICS), len(series)
    width = 0.8 / n_bars
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * n_groups + 0.4 * n_bars * n_groups / 2), 4.8))
    for b, (label, values) in enumerate(series):
        xs = [g + (b - (n_bars - 1) / 2) * width for g in range(n_groups)]
        heights = [100 * v if v is not None else 0 for v in values]
        kw = {"color": "0.7", "hatch": "//", "edgecolor": "0.4"} if label == "reference" else {}
        if label == "reference":  # the reference published only its two tag hit rates
            xs, heights, values = zip(*[(x, h, v) for x, h, v in zip(xs, heights, values) if v is not None])
        bars = ax.bar(xs, heights, width, label=label, **kw)
        for rect, v in zip(bars, values):
            ax.annotate("n/a" if v is None else f"{100 * v:.0f}", (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(n_groups), [label for label, _, _ in PLOT_METRICS], rotation=15, ha="right")
    ax.set_ylabel("%")
    ax.set_ylim(0, 118)  # headroom for the legend above 100% bars
    ax.set_title(f"thinksearch eval: {', '.join(names)}")
    ax.legend(fontsize=8, ncols=min(4, n_bars))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

