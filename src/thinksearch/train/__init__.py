"""Stage 2: fit a LoRA adapter on synthesized rows, and merge it into a full model.

The rows are rendered through the base model's chat template and masked so that the loss falls
only on what the assistant says; TRL's ``SFTTrainer`` fits a PEFT LoRA adapter on them. Batches
are padded to their own longest row (rows of similar length are grouped), optionally packed or
padding-free; nothing is ever cut.

Measured on the 2-core AVX512-BF16/AMX machine this was built on (bench/bench_train.py, 0.5B
model, rows of about 700 tokens): bf16 autocast with the frozen weights stored in bf16 trains
1.4x faster than fp32 weights under autocast and takes less memory, so ``precision: auto`` picks
it wherever the hardware computes bf16; TRL's fused LM head (a Triton kernel) costs 1.8x the CPU
time of projecting only the trained positions, so CPUs get that sparse head instead.

The modules, in the order a run uses them:

- :mod:`.data`: read and check rows (``file:line`` errors), render them, mask the assistant's tokens.
- :mod:`.checkpoints`: the run directory, its saved config, checkpoints sealed for ``--resume``.
- :mod:`.build`: precision, LoRA config, TRL's arguments, and the trainer of a run.
- :mod:`.speedups`: the CPU speed-ups (blockwise cross-entropy, sparse LM head, leaner PEFT
  layers), each with the measurement behind it; the PEFT versions they are tested with.
- :mod:`.callbacks` and :mod:`.trainer`: the Trainer callbacks and TRL's trainer with the speed-ups.
- :mod:`.run`: ``train()`` itself, its metrics, the loss plot and the summary.
- :mod:`.merging`: ``merge()``, the adapter folded into a full model.

This package imports no torch: :mod:`.speedups`, :mod:`.callbacks` and :mod:`.trainer` subclass
torch, transformers and trl classes, so they are imported only when a run builds its trainer,
and their names are reached here through ``__getattr__`` (``thinksearch --help`` stays instant).

Run as: ``thinksearch train --data synthetic_data.jsonl --output-dir qwen_lora_model``
"""

from __future__ import annotations

import importlib
from typing import Any

from thinksearch.train.build import (build_trainer, linear_module_names, load_data, lora_config, pick_precision,
                                     sft_args, trainable_token_ids)
from thinksearch.train.checkpoints import (CHECKPOINTS, CONFIG_FILE, LOSS_PNG, METRICS_FILE, RESUME_MAY_CHANGE,
                                           RUN_FILE, SEAL_FILE, check_output_dir, checkpoint_problem,
                                           find_resume_checkpoint, list_checkpoints, resolve_config, saved_config,
                                           seal_checkpoint)
from thinksearch.train.data import (LOSS_WEIGHT, ROLES, BadRow, Encoded, Prepared, Row, Skip, assistant_spans,
                                    check_row, decision_positions, encode, holdout_size, prepare, read_rows)
from thinksearch.train.merging import MERGED_META, merge
from thinksearch.train.run import (MAX_LISTED_SKIPS, TrainResult, adapter_digest, end_process_group, plot_loss,
                                   summary, train)

# Names of the modules that import torch, transformers or trl, imported on first use.
_HEAVY = {
    "speedups": ("CE_ROWS", "HEAD_CHUNK", "SUPPORTED_PEFT", "CrossEntropy", "add_sparse_head", "cheap_lora",
                 "cheap_token_rows", "cross_entropy", "keep_mask", "lora_forward", "require_supported_peft",
                 "sparse_head_loss", "token_rows_forward"),
    "callbacks": ("ProgressBar", "Seal"),
    "trainer": ("AssistantSFTTrainer",),
}
_HEAVY_NAME = {name: module for module, names in _HEAVY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HEAVY_NAME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "BadRow", "CHECKPOINTS", "CONFIG_FILE", "Encoded", "LOSS_PNG", "LOSS_WEIGHT", "MAX_LISTED_SKIPS", "MERGED_META", "METRICS_FILE",
    "Prepared", "RESUME_MAY_CHANGE", "ROLES", "RUN_FILE", "Row", "SEAL_FILE", "Skip", "TrainResult", "adapter_digest",
    "assistant_spans", "build_trainer", "check_output_dir", "check_row", "checkpoint_problem", "decision_positions", "encode",
    "end_process_group",
    "find_resume_checkpoint", "holdout_size", "linear_module_names", "list_checkpoints", "load_data", "lora_config",
    "merge", "pick_precision", "plot_loss", "prepare", "read_rows", "resolve_config", "saved_config",
    "seal_checkpoint", "sft_args", "summary", "train", "trainable_token_ids", *_HEAVY_NAME,
]
