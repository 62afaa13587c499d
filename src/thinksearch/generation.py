"""Text generation with an in-process transformers model: batched, left-padded, stop-aware.

Used by the local teacher (synthesis), the agent loop (inference) and evaluation, so all
three stop at the same places (end of turn or ``</tool_call>``) and report the same facts
(finish reason, token counts, time).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Literal, Sequence

from thinksearch.format import END_OF_TURN, TOOL_CLOSE

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_STOP = (TOOL_CLOSE,)


@dataclass
class Sampling:
    """How to pick tokens. Greedy unless ``temperature`` > 0."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    repetition_penalty: float = 1.0


@dataclass
class Completion:
    text: str
    """Generated text, cut after a stop string, without end-of-turn or padding tokens."""
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    """Wall time of the batch this completion was generated in."""


def eos_ids(tokenizer: Any) -> list[int]:
    """Token ids that end a turn: the tokenizer's eos and whichever end-of-turn tokens it has."""
    ids = {tokenizer.eos_token_id}
    for tok in END_OF_TURN:
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != getattr(tokenizer, "unk_token_id", None):
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def _generate_kwargs(model: Any, tokenizer: Any, sampling: Sampling, stop: Sequence[str]) -> dict[str, Any]:
    from transformers import GenerationConfig

    eos = eos_ids(tokenizer)
    cfg = GenerationConfig(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=sampling.temperature > 0,
        temperature=sampling.temperature if sampling.temperature > 0 else None,
        top_p=sampling.top_p if sampling.temperature > 0 else None,
        top_k=None,
        repetition_penalty=sampling.repetition_penalty,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        stop_strings=list(stop) or None,
    )
    return {"generation_config": cfg, "tokenizer": tokenizer}


def finish(tokenizer: Any, ids: list[int], stop: Sequence[str]) -> tuple[str, Literal["stop", "length"], int]:
    """Decode generated ids (special tokens kept, so tags survive), cut at the first stop."""
    eos = set(eos_ids(tokenizer))
    end = next((i for i, t in enumerate(ids) if t in eos), None)
    body = ids if end is None else ids[:end]
    text = tokenizer.decode(body, skip_special_tokens=False)
    cuts = [text.find(s) + len(s) for s in stop if s in text]
    if cuts:
        text = text[: min(cuts)]
    reason: Literal["stop", "length"] = "stop" if end is not None or cuts else "length"
    return text, reason, len(body) + (end is not None)


def generate(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    prompts: Sequence[str],
    sampling: Sampling | None = None,
    stop: Sequence[str] = DEFAULT_STOP,
    batch_size: int = 8,
) -> list[Completion]:
    """Complete each rendered prompt; batches are formed from prompts of similar length.

    Prompts are already rendered through the chat template (they carry their own special
    tokens), so no extra special tokens are added here.
    """
    import torch

    sampling = sampling or Sampling()
    tokenizer.padding_side = "left"
    kwargs = _generate_kwargs(model, tokenizer, sampling, stop)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    results: list[Completion | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    for start in range(0, len(order), max(1, batch_size)):
        idx = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt").to(device)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed + start)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**batch, **kwargs)
        seconds = time.perf_counter() - t0
        width = batch["input_ids"].shape[1]
        for row, i in enumerate(idx):
            text, reason, n = finish(tokenizer, out[row, width:].tolist(), stop)
            results[i] = Completion(text, reason, len(encoded[i]), n, seconds)
    return results  # type: ignore[return-value]


def next_logprobs(model: "PreTrainedModel", pad_token_id: int, sequences: Sequence[Sequence[int]],
                  batch_size: int = 8) -> list[Any]:
    """Log-probabilities over the vocabulary of the token after each sequence of token ids, as
    float CPU tensors: one forward pass per left-padded batch, no generation."""
    import torch

    device = next(model.parameters()).device
    out: list[Any] = []
    for start in range(0, len(sequences), max(1, batch_size)):
        batch = sequences[start:start + batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([[pad_token_id] * (width - len(s)) + list(s) for s in batch], device=device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in batch], device=device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, -1, :].float()
        out.extend(torch.log_softmax(logits, dim=-1).cpu())
    return out


def stream(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    prompt: str,
    sampling: Sampling | None = None,
    stop: Sequence[str] = DEFAULT_STOP,
    cancel: threading.Event | None = None,
) -> Iterator[str]:
    """Yield text pieces as they are generated; setting ``cancel`` stops generation early."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    sampling = sampling or Sampling()
    cancel = cancel or threading.Event()

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    device = next(model.parameters()).device
    enc = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=False)
    kwargs = _generate_kwargs(model, tokenizer, sampling, stop)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    error: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(**enc, **kwargs, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancelled()]))
        except BaseException as e:  # surfaced in the caller's thread below
            error.append(e)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        for piece in streamer:
            for end in END_OF_TURN:
                piece = piece.replace(end, "")
            if piece:
                yield piece
    finally:
        cancel.set()
        thread.join()
    if error:
        raise error[0]
