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

The package, one job per module: :mod:`~thinksearch.evaluate.evalset` (reading the eval
file), :mod:`~thinksearch.evaluate.metrics` (flags and counts),
:mod:`~thinksearch.evaluate.batching` (generation), :mod:`~thinksearch.evaluate.engine_choice`
(llama.cpp or transformers per model, with ``--agent``), :mod:`~thinksearch.evaluate.outputs`
(saved outputs), :mod:`~thinksearch.evaluate.reports` (report.json, .md, .png) and
:mod:`~thinksearch.evaluate.run` (:func:`evaluate`, tying them together). The names below
are the package's public interface.
"""

from thinksearch.evaluate.batching import can_batch_continuously, generate_records, render_prompt, sampling_for
from thinksearch.evaluate.evalset import TYPES, EvalItem, EvalSet, load_eval_set, subsample
from thinksearch.evaluate.metrics import (
    category_metrics,
    decision_metrics,
    parsed_fields,
    question_flags,
    record_for_report,
    speed_metrics,
    summarize,
)
from thinksearch.evaluate.outputs import OutputStore, generation_settings, settings_key
from thinksearch.evaluate.reports import (
    DEFINITIONS,
    REFERENCE,
    REPORT_VERSION,
    build_report,
    fraction,
    is_miss,
    miss_reason,
    percent,
    plot_report,
    render_markdown,
    write_reports,
)
from thinksearch.evaluate.run import evaluate
from thinksearch.refs import ModelSpec, parse_model_spec, parse_model_specs

__all__ = [
    "DEFINITIONS", "REFERENCE", "REPORT_VERSION", "TYPES", "EvalItem", "EvalSet", "ModelSpec", "OutputStore",
    "build_report", "can_batch_continuously", "category_metrics", "decision_metrics", "evaluate", "fraction",
    "generate_records", "generation_settings", "is_miss", "load_eval_set", "miss_reason", "parse_model_spec",
    "parse_model_specs", "parsed_fields", "percent", "plot_report", "question_flags", "record_for_report",
    "render_markdown", "render_prompt", "sampling_for", "settings_key", "speed_metrics", "subsample", "summarize",
    "write_reports",
]
