"""Stage 1: turn question pools into SFT rows with a teacher model (DESIGN.md sections 2, 3).

Each question goes through separate prompts, rendered through the teacher's chat template:

- thinking sample: (1) the analysis, which becomes the ``<thinking>`` trace (a reasoning
  teacher's own ``</think>``-separated reasoning is used when it gives one); (2) the final
  answer, given the analysis;
- search sample: (1) a short reason why fresh data is needed plus a query, asked for as JSON
  and validated; then the search backend runs the query (a failure is recorded, never papered
  over with invented results); (2) the answer, grounded in the numbered results and citing [n].

Questions are processed in batches (stage 1 for the batch, then the searches, then stage 2)
so a local teacher generates a batch at once and a server sees concurrent requests. Every
teacher text passes quality gates; a rejection is counted and logged with its reason, and the
question is replaced by the next one from the (seeded, shuffled) pool until the requested
number of rows is reached. Tags, the system prompt and the tool-call JSON are inserted by
:mod:`thinksearch.format`, never written by the teacher.

Output is append-only JSONL, flushed and fsync'd per row. Row ids are a hash of the question,
so rerunning the same command skips what is done; a partial last line left by a crash is cut
off at the start. SIGINT / SIGTERM finish the batch in flight, write the stats and exit
cleanly (a second signal stops at once).

Failures go to a second JSONL file (``<output>.failures.jsonl``), one record per attempt with
stage, reason, detail and the offending text. On a rerun, a question a quality gate rejected
is not asked again (the same teacher would most likely fail the same way, and its place is
already taken by the next question; ``--retry-rejected`` asks again), while a question that
failed for a transient reason (teacher error after all retries, search error) is eligible
again whenever the target is not yet met. Many transient failures in a row stop the run: the
backend is down, and burning through the pool would only fill the failures file.

The modules, in the order a run uses them:

- :mod:`.run`: ``synthesize()``, the pools, the queues that resume, signals, the error streak.
- :mod:`.rows`: one batch of questions through the teacher's stages into rows (the decision
  line and the template reasoning are written here).
- :mod:`.prompts`: the teacher's prompts for each stage.
- :mod:`.gates`: the quality gates on teacher text, and :class:`Rejection`.
- :mod:`.verify`: gold-checked sampling: the first of k candidates that matches gold, the
  rationalisation check, pass@1 / pass@k per category.
- :mod:`.output`: the row and failure logs, the reference export, :class:`SynthStats`.
- :mod:`.report`: ``data.report.md``, what the whole data file holds (written at the end of a run).

Run as: ``thinksearch synth --config configs/quickstart.yaml``.
"""


from __future__ import annotations

from thinksearch.synth.gates import (ECHO_SIMILARITY, Rejection, answer_problem, check_citations, check_text, clean,
                                     is_loop, parse_query_reply, reasoning_problem, repetition)
from thinksearch.synth.output import JsonlLog, SynthStats, export_reference, read_rows, reference_messages, sibling
from thinksearch.synth.prompts import (ANALYSIS_PROMPT, ANSWER_PROMPT, GROUNDED_PROMPT, QUERY_EXAMPLES, QUERY_PROMPT,
                                       TEACHER_SYSTEM, analysis_messages, answer_messages, grounded_messages,
                                       query_messages)
from thinksearch.synth.rows import (DECISION_LINES, Item, Outcome, decided, search_batch, template_reasoning,
                                    thinking_batch)
from thinksearch.synth.run import KINDS, synthesize

# Kept under its old name: tests load the shipped pools through it without running a synthesis.
from thinksearch.synth.run import _load_pools as _load_pools

__all__ = [
    "ANALYSIS_PROMPT", "ANSWER_PROMPT", "DECISION_LINES", "ECHO_SIMILARITY", "GROUNDED_PROMPT", "KINDS", "QUERY_EXAMPLES",
    "QUERY_PROMPT", "TEACHER_SYSTEM", "Item", "JsonlLog", "Outcome", "Rejection", "SynthStats", "analysis_messages",
    "answer_messages", "answer_problem", "check_citations", "check_text", "clean", "decided", "export_reference",
    "grounded_messages", "is_loop", "parse_query_reply", "query_messages", "read_rows", "reasoning_problem",
    "reference_messages", "repetition", "search_batch", "sibling", "synthesize", "template_reasoning", "thinking_batch",
]
