"""Generating the eval outputs: continuous batching for greedy decoding, else fixed batches.

Each question is rendered through the model's own chat template with its system prompt and
generated until ``</tool_call>`` or the end of the turn; every finished output is handed on
at once as a record, so the caller can save it. Used by :func:`thinksearch.evaluate.evaluate`
and ``bench/bench_eval.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Sequence

from thinksearch import format as fmt
from thinksearch.errors import ThinksearchError
from thinksearch.evaluate.evalset import EvalItem

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.config import EvalConfig
    from thinksearch.generation import Completion, Sampling


def sampling_for(cfg: EvalConfig) -> "Sampling":
    from thinksearch.generation import Sampling

    return Sampling(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed if cfg.temperature > 0 else None,
        repetition_penalty=cfg.repetition_penalty,
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
        "elapsed_s": round(elapsed, 4), "key": key, "gold": item.gold,
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


def continuous_generate(
    model: Any, tokenizer: Any, prompts: Sequence[str], sampling: "Sampling", batch_size: int,
    on_done: Callable[[int, "Completion", float, float], None] | None = None,
) -> list["Completion"]:
    """Complete rendered prompts with transformers' continuous batching (greedy decoding).

    Up to ``batch_size`` prompts are in flight, a finished one replaced at once by the next, so
    no step is spent on answers that already ended. ``on_done(i, completion, latency, elapsed)``
    sees each one as soon as it is finished (latency: its own generation; elapsed: since the
    session started). Used for first turns and for every round of the agent loop.
    """
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    from thinksearch import generation

    if not prompts:
        return []
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    stop = (fmt.TOOL_CLOSE,)
    eos = sorted({*generation.eos_ids(tokenizer), _single_token(tokenizer, fmt.TOOL_CLOSE)} - {None})
    page = 16
    longest = max(len(e) for e in encoded) + sampling.max_new_tokens
    # Size the paged KV cache for what can be in flight; left to itself, transformers sizes it
    # from free memory (on a CPU: most of the machine's RAM). Block sharing lets every prompt
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
    rids = [f"q{i}" for i in range(len(prompts))]
    left = set(rids)
    out: list[Any] = [None] * len(prompts)

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
            start, end = result.lifespan
            out[i] = generation.Completion(text, reason, len(encoded[i]), n, end - start)
            if on_done:
                on_done(i, out[i], end - start, end - t0)

        # The first prompt alone until its first token: its prefix, and so the system prompt
        # every prompt shares, is then cached for the others to reuse.
        submit(0, streaming=True)
        while True:
            result = next_result()
            if result is not None and result.request_id == rids[0]:
                if result.is_finished():
                    finish(result)
                break
        for i in range(1, len(prompts)):
            submit(i)
        while left:
            result = next_result()
            if result is not None and result.is_finished() and result.request_id in left:
                finish(result)
    return out


def _continuous(model: Any, tokenizer: Any, items: Sequence[EvalItem], prompts: list[str], sampling: "Sampling",
                batch_size: int, key: str, emit: Callable[[list[dict[str, Any]]], None]) -> None:
    """First turns through :func:`continuous_generate`; each output is handed to ``emit`` when finished."""
    batch_id = uuid.uuid4().hex[:12]

    def done(i: int, c: "Completion", latency: float, elapsed: float) -> None:
        emit([_record(items[i], c, key, batch_id, batch_size, latency, elapsed)])

    continuous_generate(model, tokenizer, prompts, sampling, batch_size, done)


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


