"""One static HTML page for a run directory: the training rows, base-vs-tuned eval outputs, the loss curve.

Everything a user needs to decide whether to trust a run, in a file that opens without a server:
each training row (question, thinking, call, results, answer, gates and verification meta), the eval
outputs of every model side by side with filters for false searches, missed searches, wrong answers
and truncated outputs, the run's figures, the loss curve and the report chart. Model and teacher text
is data: it sits in the page as JSON (``<`` written as ``\\u003c``) and reaches the DOM only through
``textContent``, so markup or script inside it is shown, never run. Lists render 100 rows at a time
as they scroll into view, so a page of 5,000 rows stays quick. Filters live in the URL's hash
(``view.html#tab=eval&problem=missed_search&model=tuned``), which makes a filtered view a link.

Run as: ``thinksearch view runs/quickstart`` (writes ``runs/quickstart/view.html``).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from thinksearch import format as fmt
from thinksearch.errors import ThinksearchError
from thinksearch.files import read_json, read_text, write_text_atomic

PROBLEMS = {"false_search": "false search", "missed_search": "missed search", "wrong": "wrong answer",
            "truncated": "truncated"}


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        return
    for n, line in enumerate(read_text(path, "data file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise ThinksearchError(f"{path}:{n}: invalid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ThinksearchError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        yield n, obj


def _turn(m: Mapping[str, Any]) -> dict[str, Any]:
    """A message split for display: the assistant's thinking, its text, its calls."""
    raw = m.get("content")
    content = raw if isinstance(raw, str) else "" if raw is None else json.dumps(raw, ensure_ascii=False)
    turn: dict[str, Any] = {"role": str(m.get("role")), "text": content}
    if m.get("role") == "assistant":
        p = fmt.parse(content)
        turn["thinking"] = p.thinking
        turn["text"] = p.answer
        calls = [c.get("function", c) for c in m.get("tool_calls") or [] if isinstance(c, Mapping)]
        turn["calls"] = [json.dumps({"name": c.get("name"), "arguments": c.get("arguments")}, ensure_ascii=False) for c in calls]
        turn["calls"] += [c.raw.strip() for c in p.tool_calls] + [f"(invalid: {c.error}) {c.raw.strip()}" for c in p.invalid_calls]
    return turn


def training_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, r in _jsonl(path):
        meta = dict(r.get("meta") or {})
        results = meta.pop("results", None)
        gates = meta.get("gates") or {}
        rows.append({
            "line": n, "id": str(r.get("id", n)), "type": str(r.get("type", "")),
            "turns": [_turn(m) for m in r.get("messages") or [] if isinstance(m, Mapping) and m.get("role") != "system"],
            "results": results if isinstance(results, list) else [],
            "gates": ", ".join(gates.get("passed", [])) if isinstance(gates, Mapping) else str(gates),
            "meta": json.dumps(meta, ensure_ascii=False, indent=1),
        })
    return rows


def _correct(rec: Mapping[str, Any]) -> bool | None:
    """Whether the final answer matched gold, as report.json scores it (None: no gold, or not scored)."""
    answer = rec.get("answer")
    return answer.get("correct") if isinstance(answer, Mapping) else None


def _problems(rec: Mapping[str, Any]) -> list[str]:
    flags = rec.get("flags") or {}
    should = flags.get("should_search", rec.get("type") == "search")
    did = flags.get("did_search")
    if did is None:
        did = fmt.parse(rec.get("output") or "").attempted_call
    correct = _correct(rec)
    out = []
    if did and not should:
        out.append("false_search")
    if should and not did:
        out.append("missed_search")
    if correct is False:
        out.append("wrong")
    if rec.get("finish_reason") == "length":
        out.append("truncated")
    return out


def eval_records(eval_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(model names, one entry per question with each model's output and problems)."""
    report = read_json(eval_dir / "report.json") or {}
    per_model: dict[str, list[dict[str, Any]]] = {}
    for m in report.get("models") or []:
        if isinstance(m, Mapping) and isinstance(m.get("records"), list):
            per_model[str(m.get("name"))] = m["records"]
    if not per_model:  # an eval that stopped before its report: the raw outputs
        for f in sorted((eval_dir / "outputs").glob("*.jsonl")):
            per_model[f.stem] = [r for _, r in _jsonl(f)]
    questions: dict[str, dict[str, Any]] = {}
    for name, records in per_model.items():
        for i, rec in enumerate(records):
            key = str(rec.get("id", i))
            q = questions.setdefault(key, {"id": key, "type": rec.get("type", ""), "question": rec.get("question", ""),
                                           "category": rec.get("category") or "", "by": {}})
            q["by"][name] = {"output": rec.get("output", ""), "finish": rec.get("finish_reason"),
                             "tokens": rec.get("completion_tokens"), "correct": _correct(rec),
                             "problems": _problems(rec)}
    return list(per_model), list(questions.values())


def _summary(root: Path) -> tuple[list[list[str]], str | None]:
    from thinksearch import pipeline

    try:
        rows = pipeline.summary_rows(pipeline.summarize(pipeline.RunPaths(root), read_json(root / pipeline.STATE_FILE)))
        return [[k, v] for k, v in rows], None
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # a report of another version: the rows still show
        return [], f"the run's figures could not be read ({type(e).__name__}: {e})"


def loss_svg(history: list[Mapping[str, Any]], width: int = 640, height: int = 240) -> str:
    """The training (and held-out) loss per step as an inline SVG; empty when there is no history."""
    series = {k: [(h["step"], h[k]) for h in history if isinstance(h.get(k), (int, float)) and "step" in h]
              for k in ("loss", "eval_loss")}
    points = [p for s in series.values() for p in s]
    if not points:
        return ""
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    pad, sx = 40, (width - 60) / ((x1 - x0) or 1)
    sy = (height - 60) / ((y1 - y0) or 1)

    def xy(p: tuple[float, float]) -> str:
        return f"{pad + (p[0] - x0) * sx:.1f},{height - pad - (p[1] - y0) * sy:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="loss curve">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - 20}" y2="{height - pad}" stroke="#888"/>',
             f'<line x1="{pad}" y1="20" x2="{pad}" y2="{height - pad}" stroke="#888"/>',
             f'<text x="{pad}" y="{height - 15}" font-size="11">step {x0}</text>',
             f'<text x="{width - 80}" y="{height - 15}" font-size="11">step {x1}</text>',
             f'<text x="2" y="24" font-size="11">{y1:.3f}</text><text x="2" y="{height - pad}" font-size="11">{y0:.3f}</text>']
    for (name, pts), color in zip(series.items(), ("#1f77b4", "#d62728")):
        if pts:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(xy(p) for p in pts)}"/>')
            parts.append(f'<text x="{width - 150}" y="{30 + 14 * (color != "#1f77b4")}" font-size="12" fill="{color}">{name}</text>')
    return "".join(parts) + "</svg>"


def _png(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(str(path.name))}</figcaption></figure>'


def page_data(root: Path) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able data."""
    models, evals = eval_records(root / "eval")
    summary, note = _summary(root)
    return {"run": str(root), "summary": summary, "note": note, "rows": training_rows(root / "data.jsonl"),
            "models": models, "evals": evals, "problems": PROBLEMS}


def _script_json(data: Any) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' can close the element or open a comment."""
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def build_view(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the page for ``run_dir`` (default ``RUN_DIR/view.html``); returns its path."""
    from thinksearch.view_page import PAGE

    root = Path(run_dir).expanduser()
    if not root.is_dir():
        raise ThinksearchError(f"run directory not found: {root}")
    if not (root / "data.jsonl").is_file() and not (root / "eval").is_dir():
        raise ThinksearchError(f"{root} has neither data.jsonl nor eval/: give the run directory of `thinksearch run` (its run_dir)")
    metrics = read_json(root / "adapter" / "metrics.json") or {}
    figures = "".join([
        f"<h3>Loss curve</h3>{loss_svg(metrics.get('history') or [])}" if metrics.get("history") else "",
        _png(root / "eval" / "report.png", "eval report chart"), _png(root / "adapter" / "loss.png", "loss curve (training)")])
    text = (PAGE.replace("__TITLE__", html.escape(f"thinksearch run: {root.name}"))
            .replace("__FIGURES__", figures or "<p>No figures yet.</p>")
            .replace("__DATA__", _script_json(page_data(root))))
    dest = Path(out).expanduser() if out else root / "view.html"
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest, text)
    return dest
