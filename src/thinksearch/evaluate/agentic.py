"""End-to-end evaluation: each question answered through the real agent loop.

With ``thinksearch eval --agent`` (the default in ``thinksearch run``) a model does not just
write its first turn: when it calls the search tool, the configured search backend runs, the
results go back in a ``tool`` turn, and the model goes on, for at most ``--max-rounds`` turns,
exactly as ``thinksearch ask`` would answer. Each round is one batched generate over the
questions still open, with the same continuous batching as the first-turn evaluation, so the
cost over a first-turn run is the second round of the questions that searched.

A record keeps the first turn as ``output`` (so the tag and decision figures mean what they
meant before) and the whole run under ``agent``: every round's text, the searches with the
results the model read, and the final answer that :mod:`thinksearch.evaluate.answers` scores.

Run as: ``thinksearch eval --agent --model base=qwen2.5-coder-0.5b-instruct``
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from thinksearch.agent import Agent, AgentResult, TransformersEngine, build_messages
from thinksearch.config import AgentConfig, EvalConfig
from thinksearch.evaluate.batching import can_batch_continuously, continuous_generate
from thinksearch.evaluate.evalset import EvalItem

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.generation import Completion, Sampling


class BatchingEngine(TransformersEngine):
    """The agent's transformers engine, generating each round with continuous batching where
    decoding is greedy (the evaluation's default), else with fixed batches as ``ask`` does."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, continuous: bool = True):
        super().__init__(model, tokenizer, name="transformers", batch_size=batch_size)
        self.continuous = continuous

    def generate(self, conversations: Sequence[Sequence[Mapping[str, Any]]], sampling: "Sampling") -> list["Completion"]:
        if not (self.continuous and self.batch_size > 1 and can_batch_continuously(self.tokenizer, sampling)):
            return super().generate(conversations, sampling)
        prompts = [self.render(m) for m in conversations]
        with self._lock:
            return continuous_generate(self.model, self.tokenizer, prompts, sampling, self.batch_size)


def agent_settings(cfg: EvalConfig) -> AgentConfig:
    """The loop's settings for an evaluation: its decoding, rounds and search backend."""
    return AgentConfig(
        max_rounds=cfg.max_rounds, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
        top_p=cfg.top_p, seed=cfg.seed if cfg.temperature > 0 else None, search=cfg.search,
        repetition_penalty=cfg.repetition_penalty, close_thinking=cfg.close_thinking,
        context_tokens=max(4096, cfg.max_new_tokens * (cfg.max_rounds + 2)),
    )


def model_shift(cfg: EvalConfig, adapter: str | None) -> float | None:
    """The decision shift a model is evaluated with (steer.applied_shift): --decision-shift,
    else its adapter's calibrated one; None for none. Only the agent loop applies it."""
    from thinksearch.steer import applied_shift

    return applied_shift(cfg.decision_shift, adapter) if cfg.agent else None


def unapplied_shift_note(cfg: EvalConfig, name: str, adapter: str | None) -> str | None:
    """Without --agent a shift is not applied; say so where one was asked for or calibrated,
    since the first turn's decisions are then the adapter's unshifted ones."""
    from thinksearch.steer import applied_shift

    shift = None if cfg.agent else applied_shift(cfg.decision_shift, adapter)
    if shift is None:
        return None
    return (f"{name}: its decision shift {shift:+g} (--decision-shift, or the adapter's decision.json) "
            "applies only with --agent; this evaluation scores the unshifted first turn")


def base_record(item: EvalItem, key: str) -> dict[str, Any]:
    """The fields of a saved output that come from the question (the rest come from the run)."""
    return {"id": item.id, "type": item.type, "category": item.category, "question": item.question,
            "system": item.system, "key": key, "gold": item.gold}


def final_text(result: AgentResult) -> str:
    """The last turn as generated: what the model finally said (scored by evaluate.answers)."""
    return result.rounds[-1].raw if result.rounds else ""


def agent_record(base: Mapping[str, Any], result: AgentResult) -> dict[str, Any]:
    """A saved output of the loop: the first turn as ``output``, the whole run under ``agent``."""
    first = result.rounds[0] if result.rounds else None
    rec = dict(base)
    rec.update(
        output=first.raw if first else "",
        finish_reason=first.finish_reason if first else "stop",
        prompt_tokens=first.prompt_tokens if first else 0,
        completion_tokens=result.completion_tokens,
        latency_s=round(result.seconds, 4),
        elapsed_s=round(result.seconds, 4),
    )
    rec["agent"] = {
        "stop_reason": result.stop_reason,
        "rounds": [{"raw": r.raw, "finish_reason": r.finish_reason, "completion_tokens": r.completion_tokens,
                    **({"closed_thinking": True} if r.closed_thinking else {})}
                   for r in result.rounds],
        "searches": [{"query": t.query, "text": t.text, "error": t.error,
                      "results": [{k: x.get(k) for k in ("title", "url", "date", "source", "id") if x.get(k)}
                                  for x in t.results]}
                     for t in result.searches],
        "final": final_text(result),
    }
    return rec


def run_agent(
    agent: Agent, items: Sequence[EvalItem], base_record: Callable[[EvalItem], dict[str, Any]], max_new_tokens: int,
    chunk: int, on_batch: Callable[[list[dict[str, Any]]], None],
) -> None:
    """Answer ``items`` through ``agent`` a chunk at a time; each chunk's records go to ``on_batch``
    (so a crash loses at most one chunk)."""
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        batch_id = uuid.uuid4().hex[:12]
        convs = [build_messages(it.question, system=it.system_prompt) for it in part]
        results = agent.run_batch(convs, max_new_tokens)
        records = []
        for it, res in zip(part, results):
            rec = agent_record(base_record(it), res)
            rec.update(batch_id=batch_id, batch_size=len(part))
            records.append(rec)
        on_batch(records)
