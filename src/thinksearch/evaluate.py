"""Evaluation: does a model think in ``<thinking>`` tags, and call search exactly when it should?

Each eval question is rendered through each model's own chat template with the same system
prompt, generated greedily until ``</tool_call>`` or the end of the turn, and the output is
read by :func:`thinksearch.format.parse`. Generation is batched with transformers' continuous
batching (a finished question's slot goes to the next one; the shared system prompt is
computed once), in float32 by default: in bf16 on a CPU, batching shifts some logits in their
last bits and a near-tie greedy pick can flip (``bench/results/eval.json``), while float32
outputs are the same as one question at a time. From each parse come the per-question flags
that the metrics count:

- the reference's tag hit: ``<thinking>`` present on a thinking question, ``<tool_call>``
  present on a search question (a substring check, so the figures sit beside the reference's
  30/30 and 22/30);
- the decision: should search (a search question) × did search. *Did search* is counted two
  ways: ``any`` — the output contains a tool-call attempt, valid or not (it measures the
  decision alone; validity has its own figures) — and ``valid`` — it contains a call an agent
  could run (every call block valid, below);
- tool-call validity: the block is a JSON object with ``name`` and ``arguments`` (strict JSON:
  a trailing comma fails), the name is ``search``, the query a non-empty single line of at
  most 64 characters without tags (:func:`thinksearch.format.validate_query`);
- well-formed thinking: ``<thinking>`` opened and closed, non-empty, followed by an answer (or,
  on a search question, by a call), and no call inside it.

Outputs are saved per model as JSONL in ``OUTPUT_DIR/outputs/`` as they are generated, so a
rerun resumes; the settings that shape an output (model, weights, decoding) are stored beside
them and a rerun with other settings is refused (``--restart`` discards the old outputs).
``report.json`` keeps every output with its parse and flags; ``report.md`` and ``report.png``
are drawn from ``report.json``'s data only.

Run as: ``thinksearch eval --data data/eval/test.jsonl --model base=qwen2.5-coder-0.5b-instruct --model tuned=qwen2.5-coder-0.5b-instruct+runs/train/adapter``
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import hashlib
import json
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from thinksearch import format as fmt
from thinksearch.config import EvalConfig, to_dict
from thinksearch.errors import ThinksearchError
from thinksearch.files import read_text, write_text_atomic
from thinksearch.refs import ModelSpec, parse_model_spec, parse_model_specs  # noqa: F401  (parse_model_spec: public here too)

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.generation import Completion, Sampling
    from thinksearch.models import ResolvedModel

TYPES = ("thinking", "search")
# The reference's published result (tag hit rate on 30 + 30 held-out samples), set beside ours.
REFERENCE = {
    "label": "reference (R1-Distill-7B → Qwen2.5-0.5B LoRA, published)",
    "thinking": {"hits": 30, "n": 30},
    "search": {"hits": 22, "n": 30},
}
REPORT_VERSION = 1


# ============================================================================ eval questions


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


def _row_item(row: Any, where: str) -> EvalItem:
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
    return EvalItem(row_id or _question_id(type_, system, question), type_, question, system, category, where)


def _json_array_rows(text: str, path: str) -> Iterable[tuple[str, Any]]:
    """Elements of a JSON array file with the line each starts on."""
    decoder = json.JSONDecoder()
    ws = " \t\r\n"

    def skip(i: int) -> int:
        while i < len(text) and text[i] in ws:
            i += 1
        return i

    def where(i: int) -> str:
        return f"{path}:{text.count(chr(10), 0, i) + 1}"

    i = skip(text.index("[") + 1)
    if i < len(text) and text[i] == "]":
        return
    while True:
        start = i
        try:
            obj, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise ThinksearchError(f"{where(e.pos)}: invalid JSON: {e.msg}") from None
        yield where(start), obj
        i = skip(i)
        if i < len(text) and text[i] == ",":
            i = skip(i + 1)
            continue
        if i < len(text) and text[i] == "]":
            return
        raise ThinksearchError(f"{where(i)}: invalid JSON: expected ',' or ']' in the array")


def _jsonl_rows(text: str, path: str) -> Iterable[tuple[str, Any]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{n}", json.loads(line)
        except json.JSONDecodeError as e:
            raise ThinksearchError(f"{path}:{n}: invalid JSON: {e.msg} (column {e.colno})") from None


def load_eval_set(path: str | Path) -> EvalSet:
    """Read an eval file: JSONL (``{"type", "question"}`` or reference-layout rows) or a JSON array.

    Every problem is one line naming ``file:line``. A question repeated (same type and
    system prompt) is counted once.
    """
    p = Path(path)
    text = read_text(p, "eval file")
    rows = _json_array_rows(text, str(p)) if text.lstrip().startswith("[") else _jsonl_rows(text, str(p))
    items: list[EvalItem] = []
    seen: dict[str, str] = {}
    duplicates = 0
    for where, row in rows:
        item = _row_item(row, where)
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


# ============================================================================ per-question flags


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
    """All metrics of one model: per category, overall, decision (both variants), speed."""
    return {
        "categories": {t: category_metrics([r for r in records if r["type"] == t]) for t in TYPES},
        "fine_categories": fine_category_metrics(records),
        "overall": category_metrics(records),
        "decision": {"any": decision_metrics(records, "did_search"), "valid": decision_metrics(records, "did_search_valid")},
        "speed": speed_metrics(records),
    }


def record_for_report(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A saved output with its parse and flags, as report.json keeps it."""
    out = dict(rec)
    out["parsed"] = parsed_fields(rec["output"])
    out["flags"] = question_flags(rec["type"], rec["output"])
    return out


# ============================================================================ saved outputs


def _fingerprint(path: str | None, small: int = 64 << 20) -> str | None:
    """A digest of a local model or adapter directory: contents of small files, sizes of big ones.

    A retrained adapter saved over the old one changes this, so stale outputs are not reused.
    """
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        return None  # a hub id: its name is all we know
    files = sorted(x for x in (p.rglob("*") if p.is_dir() else [p]) if x.is_file() and not x.name.startswith("."))
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(p) if p.is_dir() else f.name}\0{size}\0".encode())
        if size <= small:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def generation_settings(spec: ModelSpec, resolved: "ResolvedModel", cfg: EvalConfig) -> dict[str, Any]:
    """Everything that shapes an output; outputs saved under other settings are not reused."""
    sampled = cfg.temperature > 0
    return {
        "ref": spec.ref,
        "base": resolved.ref,
        "base_fingerprint": _fingerprint(os.path.join(resolved.path, resolved.gguf_file) if resolved.gguf_file else resolved.path),
        "adapter_fingerprint": _fingerprint(resolved.adapter),
        "dtype": cfg.dtype,
        "max_new_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p if sampled else None,
        "seed": cfg.seed if sampled else None,
        "stop": [fmt.TOOL_CLOSE, *fmt.END_OF_TURN],
    }


def settings_key(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class OutputStore:
    """One model's outputs, appended as JSONL (flushed per batch) with its settings beside them."""

    def __init__(self, out_dir: Path, name: str, settings: dict[str, Any], restart: bool = False):
        self.dir = out_dir / "outputs"
        self.path = self.dir / f"{name}.jsonl"
        self.settings_path = self.dir / f"{name}.settings.json"
        self.settings = settings
        self.key = settings_key(settings)
        self.dir.mkdir(parents=True, exist_ok=True)
        if restart:
            self.path.unlink(missing_ok=True)
            self.settings_path.unlink(missing_ok=True)
        self.done: dict[str, dict[str, Any]] = self._load(name)
        if not self.settings_path.exists():
            self.settings_path.write_text(json.dumps(settings, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    def _refuse(self, name: str, detail: str) -> ThinksearchError:
        return ThinksearchError(
            f"{self.path} holds outputs of model '{name}' made with other settings ({detail}); "
            "rerun with --restart to discard them, or choose another --output-dir"
        )

    def _load(self, name: str) -> dict[str, dict[str, Any]]:
        if self.settings_path.exists():
            try:
                old = json.loads(self.settings_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                old = None
            if old != self.settings:
                keys = sorted(set(old or {}) | set(self.settings))
                diff = "; ".join(
                    f"{k}: {(old or {}).get(k)!r} → {self.settings.get(k)!r}" for k in keys
                    if (old or {}).get(k) != self.settings.get(k)
                ) if isinstance(old, dict) else "unreadable settings file"
                raise self._refuse(name, diff)
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        # A crash can leave a partial last line: drop it (the question is generated again).
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(end)
        done: dict[str, dict[str, Any]] = {}
        for n, line in enumerate(data[:end].decode("utf-8", "replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise ThinksearchError(f"{self.path}:{n}: corrupt saved output; rerun with --restart") from None
            if rec.get("key") != self.key:
                raise self._refuse(name, f"line {n} has settings key {rec.get('key')!r}, now {self.key!r}")
            done[rec["id"]] = rec
        return done

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


# ============================================================================ generation


def sampling_for(cfg: EvalConfig) -> "Sampling":
    from thinksearch.generation import Sampling

    return Sampling(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed if cfg.temperature > 0 else None,
    )


def render_prompt(tokenizer: Any, item: EvalItem) -> str:
    """The prompt of one question through the model's own chat template."""
    return fmt.render(tokenizer, fmt.prompt_messages(item.question, item.system_prompt), add_generation_prompt=True)


def _record(item: EvalItem, c: "Completion", key: str, batch_id: str, batch_size: int, latency: float,
            elapsed: float) -> dict[str, Any]:
    return {
        "id": item.id, "type": item.type, "category": item.category, "question": item.question,
        "system": item.system, "output": c.text, "finish_reason": c.finish_reason,
        "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
        "latency_s": round(latency, 4), "batch_id": batch_id, "batch_size": batch_size,
        "elapsed_s": round(elapsed, 4), "key": key,
    }


def _single_token(tokenizer: Any, text: str) -> int | None:
    """The id of ``text`` if the tokenizer has it as one token (Qwen2.5 has ``</tool_call>``)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def can_batch_continuously(tokenizer: Any, sampling: "Sampling") -> bool:
    """Continuous batching stops on token ids only, and is used for greedy decoding only.

    Greedy picks don't depend on a random stream, so refilling the batch in whatever order
    questions finish can't change an output; seeded sampling keeps fixed batches instead.
    """
    return sampling.temperature == 0 and _single_token(tokenizer, fmt.TOOL_CLOSE) is not None


def _static_batches(model: Any, tokenizer: Any, items: Sequence[EvalItem], prompts: list[str], sampling: "Sampling",
                    batch_size: int, key: str, emit: Callable[[list[dict[str, Any]]], None]) -> None:
    """Fixed batches of similar prompt length; each batch runs until its longest answer ends."""
    from thinksearch import generation

    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(items)), key=lambda i: (lengths[i], items[i].id))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        s = sampling
        if s.seed is not None:  # a per-batch seed that does not depend on what a resume skipped
            s = dataclasses.replace(s, seed=(s.seed + int(hashlib.sha256(items[idx[0]].id.encode()).hexdigest()[:7], 16)))
        comps = generation.generate(model, tokenizer, [prompts[i] for i in idx], s, batch_size=batch_size)
        batch_id = uuid.uuid4().hex[:12]
        emit([_record(items[i], c, key, batch_id, len(idx), c.seconds, c.seconds) for i, c in zip(idx, comps)])


def _continuous(model: Any, tokenizer: Any, items: Sequence[EvalItem], prompts: list[str], sampling: "Sampling",
                batch_size: int, key: str, emit: Callable[[list[dict[str, Any]]], None]) -> None:
    """transformers' continuous batching: up to ``batch_size`` questions in flight, a finished one
    replaced at once by the next, so no step is spent on answers that already ended.

    Each output is handed to ``emit`` as soon as it is finished.
    """
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    from thinksearch import generation

    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    stop = (fmt.TOOL_CLOSE,)
    eos = sorted({*generation.eos_ids(tokenizer), _single_token(tokenizer, fmt.TOOL_CLOSE)} - {None})
    page = 16
    longest = max(len(e) for e in encoded) + sampling.max_new_tokens
    # Size the paged KV cache for what can be in flight; left to itself, transformers sizes it
    # from free memory (on a CPU: most of the machine's RAM). Block sharing lets every question
    # reuse the cached system prompt instead of recomputing it (prefill is most of the cost in
    # float32 on a CPU).
    cb_config = ContinuousBatchingConfig(
        page_size=page,
        num_blocks=(batch_size + 1) * (-(-longest // page) + 1),
        max_batch_tokens=max(512, max(len(e) for e in encoded) + batch_size),
        max_requests_per_batch=batch_size,
        allow_block_sharing=True,
    )
    gen_config = GenerationConfig(
        max_new_tokens=sampling.max_new_tokens, do_sample=False, eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id, repetition_penalty=sampling.repetition_penalty,
    )
    batch_id = uuid.uuid4().hex[:12]
    rids = [f"q{i}" for i in range(len(items))]
    left = set(rids)

    with model.continuous_batching_context_manager(
        generation_config=gen_config, continuous_batching_config=cb_config, warmup=False, block=True, timeout=10,
    ) as manager:
        t0 = time.perf_counter()

        def submit(i: int, streaming: bool = False) -> None:
            if manager.add_request(encoded[i], request_id=rids[i], max_new_tokens=sampling.max_new_tokens,
                                   streaming=streaming) is None:
                raise ThinksearchError("continuous batching refused a request; rerun with --no-continuous-batching")

        def next_result() -> Any:
            result = manager.get_result(timeout=0.5)
            if result is None and not manager.is_running():
                raise ThinksearchError("continuous batching stopped unexpectedly; rerun with --no-continuous-batching")
            if result is not None and result.error:
                raise ThinksearchError(f"generation failed: {str(result.error).splitlines()[0]}")
            return result

        def finish(result: Any) -> None:
            left.discard(result.request_id)
            i = int(result.request_id[1:])
            text, reason, n = generation.finish(tokenizer, list(result.generated_tokens), stop)
            c = generation.Completion(text, reason, len(encoded[i]), n, 0.0)
            start, end = result.lifespan
            emit([_record(items[i], c, key, batch_id, batch_size, end - start, end - t0)])

        # The first question alone until its first token: its prompt, and so the system prompt
        # every question shares, is then cached for the others to reuse.
        submit(0, streaming=True)
        while True:
            result = next_result()
            if result is not None and result.request_id == rids[0]:
                if result.is_finished():
                    finish(result)
                break
        for i in range(1, len(items)):
            submit(i)
        while left:
            result = next_result()
            if result is not None and result.is_finished() and result.request_id in left:
                finish(result)


def generate_records(
    model: Any,
    tokenizer: Any,
    items: Sequence[EvalItem],
    sampling: "Sampling",
    batch_size: int,
    key: str = "",
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    continuous: bool = True,
) -> list[dict[str, Any]]:
    """Generate every item's output, at most ``batch_size`` at a time; ``on_batch`` sees records as they finish.

    Greedy decoding uses continuous batching where the tokenizer allows it (see
    :func:`can_batch_continuously`), else fixed batches of similar prompt length; either way
    each output is handed to ``on_batch`` as soon as it exists, so a caller can save it.
    """
    prompts = [render_prompt(tokenizer, it) for it in items]
    out: list[dict[str, Any]] = []

    def emit(batch: list[dict[str, Any]]) -> None:
        if on_batch:
            on_batch(batch)
        out.extend(batch)

    if not items:
        return out
    if continuous and batch_size > 1 and can_batch_continuously(tokenizer, sampling):
        _continuous(model, tokenizer, items, prompts, sampling, batch_size, key, emit)
    else:
        _static_batches(model, tokenizer, items, prompts, sampling, batch_size, key, emit)
    order = {it.id: k for k, it in enumerate(items)}
    return sorted(out, key=lambda r: order[r["id"]])


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from thinksearch.progress import progress

    return progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        bar=enabled,
    )


def _load_model(spec: ModelSpec, resolved: "ResolvedModel", cfg: EvalConfig) -> tuple[Any, Any]:
    from thinksearch import models

    try:
        return models.load(resolved, dtype=cfg.dtype, device=cfg.device)
    except ThinksearchError as e:
        raise ThinksearchError(f"model '{spec.name}' ({spec.ref}) does not load: {e}") from None
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ThinksearchError(f"model '{spec.name}' ({spec.ref}) does not load: {first}") from None


def _release_memory() -> None:
    """Give a dropped model's memory back before the next model loads."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate(cfg: EvalConfig, progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the evaluation described by ``cfg``; write and return the report (see :func:`build_report`).

    Models are loaded one at a time and freed before the next. Outputs already saved in
    ``cfg.output_dir`` under the same settings are reused.
    """
    from thinksearch import models

    log = log or (lambda msg: None)
    specs = parse_model_specs(cfg.models)
    evalset = load_eval_set(cfg.data)
    items = subsample(evalset.items, cfg.limit_per_type, cfg.seed)
    out_dir = Path(cfg.output_dir)
    # Resolve every reference before generating anything: a typo in the second model's adapter
    # path should not surface after the first model has run for an hour.
    resolved = {}
    for spec in specs:
        try:
            resolved[spec.name] = models.resolve(spec.ref)
        except ThinksearchError as e:
            raise ThinksearchError(f"model '{spec.name}' ({spec.ref}) does not load: {e}") from None
    stores = {s.name: OutputStore(out_dir, s.name, generation_settings(s, resolved[s.name], cfg), cfg.restart) for s in specs}
    if evalset.duplicates:
        log(f"{evalset.path}: {evalset.duplicates} repeated question(s) counted once")
    sampling = sampling_for(cfg)
    with _progress(progress) as bar:
        for spec in specs:
            store = stores[spec.name]
            pending = [it for it in items if it.id not in store.done]
            task = bar.add_task(spec.name, total=len(items), completed=len(items) - len(pending), rate="")
            if not pending:
                continue
            if store.done:
                log(f"{spec.name}: resuming, {len(items) - len(pending)} of {len(items)} outputs already saved")
            model, tokenizer = _load_model(spec, resolved[spec.name], cfg)
            tokens, t0 = 0, time.perf_counter()

            def saved(batch: list[dict[str, Any]], store: OutputStore = store, task: Any = task) -> None:
                nonlocal tokens
                store.append(batch)
                store.done.update({r["id"]: r for r in batch})
                tokens += sum(r["completion_tokens"] for r in batch)
                rate = tokens / max(time.perf_counter() - t0, 1e-9)
                bar.update(task, advance=len(batch), rate=f"{rate:.1f} tok/s")

            try:
                generate_records(model, tokenizer, pending, sampling, cfg.batch_size, store.key, saved,
                                 continuous=cfg.continuous_batching)
            finally:
                del model, tokenizer
                _release_memory()
    report = build_report(cfg, evalset, items, specs, {s.name: stores[s.name] for s in specs})
    write_reports(report, out_dir)
    return report


# ============================================================================ reports


def build_report(cfg: EvalConfig, evalset: EvalSet, items: Sequence[EvalItem], specs: Sequence[ModelSpec],
                 stores: Mapping[str, OutputStore]) -> dict[str, Any]:
    """report.json's content: config, the reference's figures, and per model its metrics and records."""
    from thinksearch import __version__

    entries = []
    for spec in specs:
        store = stores[spec.name]
        records = [record_for_report(store.done[it.id]) for it in items if it.id in store.done]
        entries.append({"name": spec.name, "ref": spec.ref, "settings": store.settings, "settings_key": store.key,
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
    }


DEFINITIONS = {
    "tag_hit": "<thinking> present on a thinking question; <tool_call> present on a search question (the reference's check)",
    "did_search": "the output contains a tool-call attempt (<tool_call>), valid or not",
    "did_search_valid": "the output contains tool calls and every one is valid (an agent could run it)",
    "call_valid": "JSON object with name and arguments (strict JSON), name == 'search', query a non-empty single line of at most 64 characters without tags",
    "thinking_well_formed": "<thinking> opened and closed, non-empty, followed by an answer (or a call, on a search question), no call inside it",
    "latency_s": "time from the start of a question's generation to its end (fixed batches: the batch's wall time)",
    "elapsed_s": "time from the start of the batch (or continuous-batching session) to the question's end",
    "generation_s": "sum over batches/sessions of their wall time (last elapsed_s), each counted once",
}


def write_reports(report: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, then report.md and report.png drawn from it; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "report.png"}
    write_text_atomic(paths["json"], json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    # Re-read what was written, so the Markdown and the plot can only show report.json's data.
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
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
