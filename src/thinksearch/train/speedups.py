"""The CPU speed-ups of training: a blockwise cross-entropy, a sparse LM head, and leaner PEFT layers.

Each one computes what the plain code computes (a test compares values and gradients) with fewer
passes over memory, and each is here because a measurement on the 2-core AVX512-BF16/AMX
machine this was built on showed the plain code's cost (bench/bench_train.py, README "Notes").
The training benchmark (0.5B model, 12 generated rows of ~660 tokens) went from 1.99x the
reference-style Trainer to 2.42x with :func:`cheap_lora` and causal-only attention (the
trainer's ``compute_loss``), and to 3.59x with :class:`CrossEntropy`.

The PEFT patches (:func:`cheap_token_rows`, :func:`cheap_lora`, and the trainer's
``cast_input_dtype_enabled``) rely on PEFT internals (``_get_embed_scale``, ``lora_variant``,
``_cast_input_dtype``), so :func:`require_supported_peft` refuses PEFT versions they were not
tested with. This module imports torch: it is imported only when a run starts.
"""

from __future__ import annotations

import functools
import re
import types
from typing import Any

import torch
import torch.nn.functional as F

from thinksearch.errors import ThinksearchError

# The PEFT versions the patches below were tested with; pyproject.toml states the same bound
# (a test checks that the two agree).
SUPPORTED_PEFT = ">=0.21,<0.22"
_PEFT_RANGE = ((0, 21), (0, 22))

# Target tokens per LM-head chunk; more than one chunk is recomputed in the backward pass,
# which bounds the logits' memory to chunk x vocab at the cost of one more matmul.
HEAD_CHUNK = 2048

# Rows of logits per pass of the cross-entropy below on a CPU: 8 x 151,936 fp32 values (4.9 MB)
# stay in cache. A GPU takes all rows in one pass (a loop would be many small kernel launches).
CE_ROWS = 8


def require_supported_peft(installed: str | None = None) -> None:
    """Refuse, in one line, a PEFT version the patches of this module were not tested with.

    ``installed`` defaults to the installed peft's version.
    """
    if installed is None:
        from importlib.metadata import version

        installed = version("peft")
    _check_peft(installed)


@functools.cache
def _check_peft(installed: str) -> None:
    m = re.match(r"(\d+)\.(\d+)", installed)
    low, high = _PEFT_RANGE
    if m is None or not low <= (int(m[1]), int(m[2])) < high:
        raise ThinksearchError(
            f"peft {installed} is installed, but training patches PEFT internals and is tested with "
            f"peft{SUPPORTED_PEFT}; install a supported version: pip install 'peft{SUPPORTED_PEFT}'")


# ----------------------------------------------------------------------------- the loss head


class CrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of 16- or 32-bit logits and the top-1 hits, in fp32, a few rows at a time.

    ``F.cross_entropy(logits.float())`` writes the logits out in fp32, keeps the fp32
    log-softmax for the backward pass and makes a zero-filled fp32 gradient, each the size
    of the logits (rows x 151,936), and ``argmax`` reads them once more: on a CPU those
    passes cost as much as the LM head's matmul. Here each block of rows is converted,
    reduced and, in the backward pass, turned into its gradient while it is in cache, which
    is written straight in the logits' dtype. Same values within fp32 rounding (a test
    checks). Measured (commit 2acfb27, bench_train.py, 0.5B, generated rows of ~660 tokens):
    83.02 -> 138.42 tok/s, 2.42x -> 3.59x the reference-style Trainer.

    ``block_rows`` rows go through each pass: None takes :data:`CE_ROWS` on a CPU and all
    rows at once elsewhere (a GPU). ``weight`` (one float per row, optional) multiplies each
    row's loss and its gradient: the decision tokens' weight (``train.decision_weight``);
    without it the sum and the gradient are computed exactly as before it existed.
    """

    @staticmethod
    def forward(ctx: Any, logits: Any, target: Any, block_rows: int | None = None,
                weight: Any = None) -> tuple[Any, Any]:
        n = logits.shape[0]
        if block_rows is None:
            block_rows = CE_ROWS if logits.is_cpu else max(n, 1)
        elif block_rows < 1:
            raise ValueError(f"block_rows must be at least 1, got {block_rows}")
        step = ctx.step = block_rows
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        top = torch.empty_like(lse)
        with torch.autocast(logits.device.type, enabled=False):
            for s in range(0, n, step):
                part = logits[s:s + step].float()
                top[s:s + step] = part.amax(-1)
                lse[s:s + step] = torch.logsumexp(part, -1)
        picked = logits.gather(1, target[:, None]).squeeze(1).float()
        hits = (picked >= top).sum()  # the target is the top-1 (ties aside: argmax picks one)
        ctx.mark_non_differentiable(hits)
        if weight is None:
            ctx.save_for_backward(logits, target, lse)
            return (lse - picked).sum(), hits
        weight = weight.to(torch.float32)
        ctx.save_for_backward(logits, target, lse, weight)
        return ((lse - picked) * weight).sum(), hits

    @staticmethod
    def backward(ctx: Any, grad: Any, _hits: Any) -> tuple[Any, None, None, None]:
        logits, target, lse, *weight = ctx.saved_tensors
        out, step = torch.empty_like(logits), ctx.step
        rows = torch.arange(min(step, logits.shape[0]), device=logits.device)
        for s in range(0, logits.shape[0], step):
            # A fresh fp32 copy even for fp32 logits: the saved logits must not change.
            part = logits[s:s + step].to(torch.float32, copy=True)
            part.sub_(lse[s:s + step, None]).exp_()  # softmax
            part[rows[:part.shape[0]], target[s:s + step]] -= 1
            if weight:
                part.mul_(weight[0][s:s + step, None])
            out[s:s + step] = part.mul_(grad)
        return out, None, None, None


def cross_entropy(logits: Any, target: Any, block_rows: int | None = None, weight: Any = None) -> tuple[Any, Any]:
    """Summed (``weight``: weighted) cross-entropy of ``logits`` against ``target`` and the count of top-1 hits (see :class:`CrossEntropy`)."""
    return CrossEntropy.apply(logits, target, block_rows, weight)


def _head_chunk(head: Any, hidden: Any, target: Any, block_rows: int | None = None, weight: Any = None) -> tuple[Any, Any]:
    return CrossEntropy.apply(head(hidden), target, block_rows, weight)


def sparse_head_loss(head: Any, hidden: Any, target: Any, chunk: int = HEAD_CHUNK,
                     block_rows: int | None = None, weight: Any = None) -> tuple[Any, Any]:
    """Summed cross-entropy and top-1 hits of ``head(hidden)`` against ``target`` (rows = trained positions).

    Only the positions that are trained go through the LM head (the assistant's tokens: about
    40 percent of a row), as plain matmuls: on a CPU this is faster than TRL's tiled kernel,
    which recomputes every tile in the backward pass and is built for Triton GPUs. Measured
    (commit 634d1dc, 2-core CPU, 0.5B, batch 2 x 1024 tokens): 32 s a step with TRL's kernel,
    27 s with full logits, less again with only the trained positions. ``block_rows`` and
    ``weight`` (one per target, optional) go to :class:`CrossEntropy`.
    """
    from torch.utils.checkpoint import checkpoint

    n = target.shape[0]
    if n <= chunk:
        return _head_chunk(head, hidden, target, block_rows, weight)
    loss = hidden.new_zeros((), dtype=torch.float32)
    hits = torch.zeros((), dtype=torch.long, device=hidden.device)
    for s in range(0, n, chunk):
        part, h = checkpoint(_head_chunk, head, hidden[s:s + chunk], target[s:s + chunk], block_rows,
                             None if weight is None else weight[s:s + chunk], use_reentrant=False)
        loss, hits = loss + part, hits + h
    return loss, hits


def add_sparse_head(model: Any) -> None:
    """Let ``model(..., labels=L, sparse_head=True)`` return the summed loss over trained positions only.

    Patched on the causal LM itself (under PEFT, under DDP), so the call still goes through
    every wrapper's forward; without ``sparse_head`` the forward is the previous one. With
    ``loss_weight=W`` (one weight per token, like the labels) the sum is weighted, and
    ``weight_sum`` is the sum of the trained positions' weights (the weighted mean's divisor).
    """
    from transformers.utils import ModelOutput

    previous = model.forward

    def forward(self: Any, *args: Any, sparse_head: bool = False, loss_weight: Any = None, **kwargs: Any) -> Any:
        if not sparse_head:
            return previous(*args, **kwargs)
        labels = kwargs.pop("labels")
        kwargs.pop("num_items_in_batch", None)
        kwargs["use_cache"] = False
        hidden = getattr(self, self.base_model_prefix)(*args, **kwargs).last_hidden_state
        target = labels[:, 1:]
        mask = target != -100
        head = self.get_output_embeddings()
        weight = None if loss_weight is None else loss_weight[:, 1:][mask].to(head.weight.device, torch.float32)
        loss, hits = sparse_head_loss(head, hidden[:, :-1][mask].to(head.weight.device), target[mask], weight=weight)
        extra = {} if weight is None else {"weight_sum": weight.sum()}
        return ModelOutput(loss=loss, n_targets=mask.sum(), n_correct=hits, **extra)

    model.forward = types.MethodType(forward, model)


def cheap_token_rows(model: Any) -> None:
    """Train PEFT's trainable token rows without rebuilding the whole matrix on every pass.

    PEFT's layer copies the full embedding (or LM-head) matrix with the trained rows written in
    on each forward (136M values for a 0.5B Qwen), and the LM head's backward then computes the
    gradient of that whole copy, a vocabulary x hidden matmul, to keep two rows of it. Here the
    frozen layer runs unchanged and only the trained rows are added (:func:`token_rows_forward`).
    Same values and gradients (a test checks). Measured (commit 82df6aa, README benchmark
    table, 12 real quickstart rows, 0.5B): 64.0 -> 71.6 tok/s, 2.67x -> 3.15x the
    reference-style Trainer.
    """
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    require_supported_peft()
    for module in model.modules():
        if isinstance(module, TrainableTokensLayer):
            module.forward = types.MethodType(token_rows_forward, module)


def token_rows_forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    """The forward :func:`cheap_token_rows` gives a PEFT ``TrainableTokensLayer`` (``self``).

    The trained rows are looked up for the embedding and their logits written into the head's
    output. Anything unusual (merged, several adapters, a scaled embedding, a biased head)
    keeps PEFT's own forward.
    """
    base, active = self.base_layer, self.active_adapters
    if self.disable_adapters or self.merged or len(active) != 1 or args or kwargs:
        return type(self).forward(self, x, *args, **kwargs)
    index = torch.tensor(self.token_indices[active[0]], device=x.device)
    delta = self.trainable_tokens_delta[active[0]]
    if isinstance(base, torch.nn.Embedding) and self._get_embed_scale() is None:
        out = base(x)
        hit = (x.unsqueeze(-1) == index).to(delta.dtype)  # one-hot over the trained tokens
        # Every position goes through the small matmul, so the rows always get a gradient
        # (zero when no trained token is in the batch) and DDP sees them used.
        return torch.where(hit.sum(-1, keepdim=True) > 0, (hit @ delta).to(out.dtype), out)
    if isinstance(base, torch.nn.Linear) and base.bias is None:
        out = base(x)
        return out.index_copy(out.dim() - 1, index, F.linear(x, delta.to(x.dtype)).to(out.dtype))
    return type(self).forward(self, x, *args, **kwargs)


def keep_mask(x: Any, p: float) -> Any:
    """A dropout keep-mask for ``x``: each element kept independently with probability 1 - p.

    ``nn.Dropout`` on a CPU draws one 32-bit random number per element from a sequential
    generator; here each 64-bit draw gives four 16-bit ones, which makes the mask 2.2x cheaper
    (p is rounded to a multiple of 1/65536: 0.05 becomes 0.050003).
    """
    n = x.numel()
    bits = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    return bits.view(torch.int16)[:n].view(x.shape) >= -32768 + round(p * 65536)


def cheap_lora(model: Any) -> int:
    """Run every plain LoRA linear layer of ``model`` with fewer passes over its activations; returns how many.

    PEFT computes ``base(x) + B(A(dropout(x))) * scaling``: the dropout draws one random number
    per input element and scales the whole input by 1/(1-p), and ``scaling`` multiplies the
    whole output, all of it again in the backward pass. With LoRA on all seven projections of
    every layer those passes cost more on a CPU than the adapter's matmuls (0.5B model: the
    dropout alone was 23 percent of a step). Here (:func:`lora_forward`) the mask comes from
    :func:`keep_mask`, and both scales multiply the rank-r activations, which is the same value
    (the adapter is linear) over 16 columns instead of up to 4,864. Measured (commit 2d820ba,
    bench_train.py, generated rows): 1.99x -> 2.42x the reference-style Trainer, together with
    the causal-only attention of the trainer's ``compute_loss``.
    """
    from peft.tuners.lora.layer import Linear

    require_supported_peft()
    layers = [m for m in model.modules() if isinstance(m, Linear)]
    for module in layers:
        module.forward = types.MethodType(lora_forward, module)
    return len(layers)


def lora_forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    """The forward :func:`cheap_lora` gives a PEFT LoRA ``Linear`` (``self``).

    Anything unusual (merged, several adapters, DoRA or another variant, extra arguments)
    keeps PEFT's own forward.
    """
    active = self.active_adapters
    name = active[0] if len(active) == 1 else None
    drop = self.lora_dropout[name] if name in self.lora_A else None
    if (self.disable_adapters or self.merged or args or kwargs or drop is None or name in self.lora_variant
            or not isinstance(drop, (torch.nn.Dropout, torch.nn.Identity))):
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    x = self._cast_input_dtype(x, self.lora_A[name].weight.dtype)
    scale = self.scaling[name]
    if self.training and isinstance(drop, torch.nn.Dropout) and drop.p > 0:
        x = torch.where(keep_mask(x, drop.p), x, 0)
        scale = scale / (1.0 - drop.p)
    return (result + self.lora_B[name](self.lora_A[name](x) * scale)).to(result.dtype)


# ----------------------------------------------------------------------------- memory


def return_freed_memory_to_the_os() -> bool:
    """Serve big CPU allocations by mmap, so activations freed after a step leave the process.

    glibc raises its mmap threshold as large blocks are freed, after which activations come from
    the heap and stay resident when freed: measured here, peak RSS 8.6 GiB instead of 6.9 GiB
    for the same steps at the same speed. Linux with glibc only; a no-op elsewhere.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 1 << 20))  # M_MMAP_THRESHOLD = 1 MiB
    except (OSError, AttributeError):
        return False
