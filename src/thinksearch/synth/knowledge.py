"""Knowledge-boundary labels: which stable-knowledge questions the student knows (issue 20).

The policy to teach is to answer a stable-knowledge question (categories ``knowledge`` and
``science``, as the eval counts them) from memory only where the student reliably knows it, and
to search where it does not. "Knows" is measured, not assumed: before a row is written for such
a question (it must carry gold), the student answers it ``knowledge_probe`` times at the
sampling temperature, each answer scored against gold by the eval's scorer. A question it gets
right in at least ``knowledge_known_share`` of them keeps its thinking row; any other becomes a
search row, with a reason that says the fact is uncertain.

The probe asks the student, so it needs the student: in the quickstart the teacher is the
student; with another teacher, ``probe_model`` names the student.

A library module of :mod:`thinksearch.synth`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from thinksearch.questions import KNOWLEDGE
from thinksearch.synth.rows import Item, _request
from thinksearch.synth.verify import holds_gold

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.config import SynthConfig
    from thinksearch.teacher import Teacher

PROBE_STAGE = 5
"""Seeds the probe's requests apart from the row stages (1-4), so neither repeats the other's samples."""


@dataclass(frozen=True)
class Probe:
    """How often the student answered one question right."""

    right: int
    of: int
    known: bool


def probed(cfg: "SynthConfig", item: Item) -> bool:
    """Is ``item`` a stable-knowledge question with gold that the probe labels?"""
    g = item.gold
    return cfg.knowledge_probe > 0 and item.type == "thinking" and g is not None and g.checkable and g.category in KNOWLEDGE


def probe(items: Sequence[Item], student: "Teacher", cfg: "SynthConfig", call: Any) -> dict[str, Probe]:
    """Label each probed item of ``items`` by its id (the others are left out), in one batched call."""
    k = cfg.knowledge_probe
    asked = [it for it in items if probed(cfg, it)]
    # The bare question, as a user would ask it, through the student's own chat template: what
    # it says here is what it knows, with no prompt nudging it to reason or to decline.
    replies = call(student, [_request(cfg, [{"role": "user", "content": it.question}], cfg.max_tokens_answer, it,
                                      PROBE_STAGE, j, k) for it in asked for j in range(k)])
    labels = {}
    for n, it in enumerate(asked):
        gold = it.gold
        assert gold is not None
        right = sum(r.error is None and holds_gold(r.text, gold, it.question) for r in replies[n * k:(n + 1) * k])
        labels[it.id] = Probe(right, k, right >= cfg.knowledge_known_share * k - 1e-9)
    return labels
