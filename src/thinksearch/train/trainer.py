"""The trainer of a training run: TRL's SFTTrainer with the CPU speed-ups and the token rows' learning rate.

Imported only when a run starts (``build_trainer``): it subclasses TRL's trainer, so importing it
imports torch, transformers and trl.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer
from trl import SFTTrainer

from thinksearch.train.data import LOSS_WEIGHT
from thinksearch.train.speedups import add_sparse_head, cheap_lora, cheap_token_rows


class WithLossWeight:
    """A collator: TRL's, plus the rows' per-token loss weights laid out as TRL lays out the labels.

    TRL's collator reads only the ids and the labels; the weights are padded (or, padding-free,
    concatenated) the same way, so each weight stays beside its label. Pads get 0, and are
    not trained anyway. Rows without weights (the eval rows) go to TRL's collator unchanged.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if not examples or LOSS_WEIGHT not in examples[0]:
            return self.inner(examples)
        weights = [torch.tensor(e[LOSS_WEIGHT], dtype=torch.float32) for e in examples]
        out = self.inner([{k: v for k, v in e.items() if k != LOSS_WEIGHT} for e in examples])
        if getattr(self.inner, "padding_free", False):
            weights = [torch.cat(weights)]
        width = out["labels"].shape[1]
        out[LOSS_WEIGHT] = torch.stack([F.pad(w, (0, width - len(w))) for w in weights])
        return out


class AssistantSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer with the sparse LM head on machines without Triton (CPU).

    ``sparse`` turns on the sparse head and trainable-token patch of :mod:`.speedups`;
    ``token_lr_scale`` multiplies the learning rate of the trainable token rows. A train
    dataset with a ``loss_weight`` column (decision_weight) trains a weighted mean; it needs
    the sparse head, the only one that takes weights.
    """

    def __init__(self, *a: Any, sparse: bool = True, token_lr_scale: float = 1.0, **kw: Any) -> None:
        self.token_lr_scale = token_lr_scale
        super().__init__(*a, **kw)
        # Sharded weights (FSDP, ZeRO-3) need TRL's kernel, which gathers the LM head itself.
        self.sparse = sparse and not (self.is_fsdp_enabled or self.is_deepspeed_enabled)
        if self.train_dataset is not None and LOSS_WEIGHT in (self.train_dataset.column_names or ()):
            if not self.sparse:
                raise ValueError("per-token loss weights (decision_weight) need the sparse loss head")
            self.data_collator = WithLossWeight(self.data_collator)
        self.seen_tokens = 0
        self.hits = [0, 0]
        self.autocast_dtype = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else None
        if self.sparse:
            add_sparse_head(self.model.get_base_model())
            cheap_token_rows(self.model)  # the head's output is only the trained positions here
        if self.args.device.type == "cpu":  # on a GPU those passes are cheap and fused kernels exist
            cheap_lora(self.model)
        if self.sparse and self.autocast_dtype is not None:
            # PEFT casts each LoRA input to the adapter's fp32 and autocast casts it straight
            # back: two copies of every projection's input per pass. Our forward always runs
            # under autocast (compute_loss below), which picks the dtype per op. (Part of the
            # first benchmark, commit fb2f108: 2.28x the reference-style Trainer; not measured alone.)
            for module in self.model.modules():
                if isinstance(module, BaseTunerLayer):
                    module.cast_input_dtype_enabled = False

    def create_optimizer(self, model=None):
        # The trainable token rows get their own learning rate (the scheduler keeps the ratio).
        opt = super().create_optimizer(model)
        if self.token_lr_scale == 1.0:
            return opt
        rows = {id(p) for n, p in self.model.named_parameters() if "trainable_tokens_delta" in n}
        for group in list(opt.param_groups):
            moved = [p for p in group["params"] if id(p) in rows]
            if moved:
                group["params"] = [p for p in group["params"] if id(p) not in rows]
                opt.add_param_group({**group, "params": moved, "lr": group["lr"] * self.token_lr_scale})
        opt.param_groups[:] = [g for g in opt.param_groups if g["params"]]
        return opt

    def _set_signature_columns_if_needed(self):
        # The Trainer drops the dataset columns the model's forward does not name; keep the weights.
        super()._set_signature_columns_if_needed()
        if LOSS_WEIGHT not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, LOSS_WEIGHT]

    def _get_num_items_in_batch(self, batch_samples, device):
        n = super()._get_num_items_in_batch(batch_samples, device)
        if n is None or not batch_samples or LOSS_WEIGHT not in batch_samples[0]:
            return n
        # With weights the divisor is the sum of the trained targets' weights over the whole
        # optimizer step (every micro-batch, every rank), not their count: the loss stays a
        # weighted mean, so a step's size does not grow with the weight (learning_rate and
        # max_grad_norm keep their meaning) and the weight only shifts the balance between
        # the decision tokens and the rest. Targets are labels[:, 1:], as in the sparse head.
        total = sum((b[LOSS_WEIGHT][:, 1:] * b["labels"][:, 1:].ne(-100)).sum() for b in batch_samples)
        total = total.to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total.reshape(1)).sum()
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.sparse:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mask = inputs.get("attention_mask")
        if mask is not None and bool((mask[:, 1:] <= mask[:, :-1]).all()):
            # Right padding under a causal mask: no real token can see a pad, and pads are not
            # trained, so the padding mask changes nothing the loss uses. Without it attention
            # takes the causal kernel, 1.5x faster than the masked one on a CPU (rows of ~860;
            # commit 181c158, profiling a step of the 0.5B).
            inputs = {k: v for k, v in inputs.items() if k != "attention_mask"}
        if self.autocast_dtype is None:
            out = model(**inputs, sparse_head=True)
        else:
            with torch.autocast(self.args.device.type, dtype=self.autocast_dtype):
                out = model(**inputs, sparse_head=True)
        if num_items_in_batch is not None:
            denom = num_items_in_batch
        elif "weight_sum" in out:  # weighted (see _get_num_items_in_batch); 0 only with no target, and a loss of 0
            denom = torch.where(out.weight_sum > 0, out.weight_sum, 1.0)
        else:
            denom = out.n_targets.clamp(min=1)
        loss = out.loss / denom
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages the gradients of the ranks
        if model.training:
            local = mask.sum() if mask is not None else torch.tensor(inputs["input_ids"].numel())
            self.seen_tokens += int(self.accelerator.gather_for_metrics(local.reshape(1)).sum())
            hits = self.accelerator.gather_for_metrics(torch.stack([out.n_correct, out.n_targets]).reshape(1, 2))
            self.hits[0] += int(hits[:, 0].sum())
            self.hits[1] += int(hits[:, 1].sum())
        return (loss, out) if return_outputs else loss

    def log(self, logs, start_time=None):
        if self.sparse and "loss" in logs:
            logs["num_tokens"] = float(self.seen_tokens)  # non-pad tokens seen, like TRL's own counter
            if self.hits[1]:
                logs["mean_token_accuracy"] = self.hits[0] / self.hits[1]
            self.hits = [0, 0]
        super().log(logs, start_time)
