"""Set up a training run: the precision, the LoRA config, TRL's arguments, the data, and the trainer.

Light to import: torch, transformers, peft and trl are imported inside the functions, and the
modules that subclass their classes (:mod:`.callbacks`, :mod:`.trainer`, :mod:`.speedups`) only
inside :func:`build_trainer`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Sequence

from thinksearch import config as config_mod
from thinksearch import models
from thinksearch.config import TrainConfig
from thinksearch.errors import ThinksearchError
from thinksearch.train.checkpoints import CHECKPOINTS
from thinksearch.train.data import LOSS_WEIGHT, Encoded, Prepared, prepare, read_rows


def pick_precision(choice: str) -> str:
    """'bf16', 'fp16' or 'fp32' for this machine (``auto``: the fastest one the hardware computes natively)."""
    import torch

    cuda = torch.cuda.is_available()
    if choice == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if models.cpu_has_bf16() else "fp32"
    if choice == "fp16" and not cuda:
        raise ThinksearchError("--precision fp16 needs a GPU; on CPU use bf16 (if the CPU has AVX512-BF16/AMX) or fp32")
    return choice


def linear_module_names(model: Any) -> list[str]:
    """Names (last component) of the model's linear layers: what target_modules may list."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                   if isinstance(mod, torch.nn.Linear) and name})


def trainable_token_ids(tokenizer: Any, tokens: Sequence[str]) -> list[int]:
    """Ids of the ``tokens`` that are single tokens of this tokenizer (the others are skipped)."""
    ids = []
    for t in tokens:
        enc = tokenizer(t, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            ids.append(enc[0])
    return ids


def lora_config(cfg: TrainConfig, model: Any, token_ids: Sequence[int] = (), lm_head: bool = True) -> Any:
    """The PEFT LoraConfig of a run, refusing target module names the model doesn't have.

    ``token_ids`` get trainable rows in the input embeddings and, with ``lm_head`` where the LM
    head is not tied to them, in the LM head as well. Why: in Qwen2.5-Coder-0.5B-Instruct the LM-head row of
    ``<tool_call>`` is 0.93 cosine-similar to ``<|im_start|>``'s and never wins; after LoRA
    alone the tuned model wrote ``<|im_start|>`` where its calls should start.
    """
    from peft import LoraConfig

    targets: str | list[str]
    if cfg.target_modules == ["all-linear"]:
        targets = "all-linear"
    else:
        have = linear_module_names(model)
        unknown = [m for m in cfg.target_modules if m not in have]
        if unknown:
            raise config_mod.FieldError(
                "target_modules",
                f"unknown module {', '.join(map(repr, unknown))} for {cfg.model} "
                f"(its linear modules: {', '.join(have)}; or all-linear)", "train")
        targets = list(cfg.target_modules)
    tokens: dict[str, list[int]] | None = None
    if token_ids:
        names = {id(mod): name for name, mod in model.named_modules()}
        tokens = {names[id(model.get_input_embeddings())].rsplit(".", 1)[-1]: list(token_ids)}
        if lm_head and not getattr(model.config, "tie_word_embeddings", False):
            tokens[names[id(model.get_output_embeddings())].rsplit(".", 1)[-1]] = list(token_ids)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM", trainable_token_indices=tokens)


def _dataset(rows: Sequence[Encoded], decision_weight: float = 1.0) -> Any:
    """The rows as a dataset; with a decision_weight other than 1, each token's loss weight too."""
    from datasets import Dataset

    columns: dict[str, Any] = {
        "input_ids": [r.input_ids for r in rows],
        "assistant_masks": [r.assistant_masks for r in rows],
    }
    if decision_weight != 1.0:
        # No column at 1.0: the batches and the loss are then exactly those of a run without the feature.
        columns[LOSS_WEIGHT] = [[decision_weight if d else 1.0 for d in r.decision_mask] for r in rows]
    return Dataset.from_dict(columns)


def sft_args(cfg: TrainConfig, run_dir: Path, precision: str, has_eval: bool, resuming: bool = False) -> Any:
    """TRL's SFTConfig for a run (checkpoints go to RUN_DIR/checkpoints)."""
    import torch
    from trl import SFTConfig

    accel = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    eval_steps = cfg.eval_steps or cfg.save_steps
    return SFTConfig(
        output_dir=str(run_dir / CHECKPOINTS),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        eval_on_start=has_eval and not resuming,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not accel,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        packing=cfg.packing,
        padding_free=cfg.padding_free,
        # Rows were measured already (too long ones are skipped, never cut); packing needs the sequence length.
        max_length=cfg.max_length if cfg.packing else None,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        log_level="warning",
    )


def load_data(cfg: TrainConfig) -> tuple[models.ResolvedModel, Any, Prepared]:
    """Read, check and encode the rows of a run with the base model's tokenizer (no weights loaded)."""
    rows, bad = read_rows(cfg.data, cfg.skip_bad_rows)
    resolved = models.resolve(cfg.model)
    if resolved.adapter:
        raise ThinksearchError(
            f"'{cfg.model}' carries an adapter; train from a base model (merge the adapter first: thinksearch merge)")
    tokenizer = models.load_tokenizer(resolved)
    tokenizer.padding_side = "right"
    decision_tokens = cfg.decision_tokens if cfg.decision_weight != 1.0 else None
    return resolved, tokenizer, prepare(tokenizer, rows, cfg.max_length, cfg.eval_fraction, cfg.seed, bad,
                                        decision_tokens)


def build_trainer(cfg: TrainConfig, resolved: models.ResolvedModel, tokenizer: Any, data: Prepared, args: Any,
                  precision: str, callbacks: Sequence[Any] = (), sparse_head: bool | None = None) -> Any:
    """Load the base model and wrap it, the rows and the LoRA config into TRL's SFTTrainer.

    ``sparse_head`` picks the loss head: the sparse one (plain matmuls over the trained
    positions) or TRL's fused Triton kernel; None: fused where CUDA and Triton are present,
    unless token rows or decision weights need the sparse one.
    """
    import torch
    from transformers import PrinterCallback

    from thinksearch.train.callbacks import ProgressBar, Seal
    from thinksearch.train.speedups import require_supported_peft, return_freed_memory_to_the_os
    from thinksearch.train.trainer import AssistantSFTTrainer

    require_supported_peft()  # before the model loads: the trainer patches PEFT internals
    weighted = cfg.decision_weight != 1.0
    if args.use_cpu:
        return_freed_memory_to_the_os()
    model = _load_for_training(resolved, precision)
    token_ids = trainable_token_ids(tokenizer, cfg.trainable_tokens)
    # The trainer finds out itself that it is sharded (and then uses TRL's head), but the LoRA
    # config must know before it exists: accelerate launch sets these for FSDP and DeepSpeed.
    sharded = any(os.environ.get(f"ACCELERATE_USE_{v}", "").lower() in ("1", "true") for v in ("FSDP", "DEEPSPEED"))
    if sparse_head is None:
        # Trainable LM-head rows need the sparse head: TRL's fused kernel reads lm_head.weight
        # directly and would neither see nor train them.
        fused_available = torch.cuda.is_available() and importlib.util.find_spec("triton") is not None
        # Decision weights too: the fused kernel takes no per-token weights.
        sparse_head = not sharded and (bool(token_ids) or not fused_available or weighted)
    if weighted and (sharded or not sparse_head):
        raise config_mod.FieldError(
            "decision_weight", "needs the sparse loss head, which FSDP/DeepSpeed sharding and TRL's fused kernel "
            "do not use; leave decision_weight at 1.0 there", "train")
    peft_cfg = lora_config(cfg, model, token_ids, lm_head=sparse_head and not sharded)
    trainer = AssistantSFTTrainer(
        # The eval rows carry no weights: the held-out loss stays the plain mean, comparable across weights.
        model=model, args=args, train_dataset=_dataset(data.train, cfg.decision_weight),
        eval_dataset=_dataset(data.eval) if data.eval else None,
        processing_class=tokenizer, peft_config=peft_cfg,
        callbacks=[Seal(), ProgressBar(), *callbacks],
        sparse=sparse_head, token_lr_scale=cfg.trainable_tokens_lr_scale,
    )
    trainer.remove_callback(PrinterCallback)  # our bar shows the logs; no dict dumps on stdout
    return trainer


def _load_for_training(resolved: models.ResolvedModel, precision: str) -> Any:
    """The base model for LoRA training, on CPU (the trainer moves it to the device).

    Frozen base weights are stored in the compute dtype when it is a 16-bit one: autocast would
    cast every fp32 weight to bf16 on each forward anyway, so keeping them in bf16 saves half
    the weight memory and the casts; the LoRA weights stay fp32 (PEFT upcasts adapters), so
    the optimizer still updates full-precision values.
    """
    dtype = {"bf16": "bfloat16", "fp16": "float32", "fp32": "float32"}[precision]
    model, _ = models.load(resolved, dtype=dtype, device="cpu")
    model.config.use_cache = False
    return model

