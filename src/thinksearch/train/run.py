"""The training run: ``train()`` end to end, its metrics, the loss plot and the terminal summary.

``train()`` decides what to do with the run directory (:mod:`.checkpoints`), reads and encodes
the rows (:mod:`.data`), builds TRL's SFTTrainer with the CPU speed-ups (:mod:`.build`), trains,
and writes the adapter, metrics.json, loss.png and run.json. Under ``accelerate launch`` each
process runs this same code (DDP, FSDP or DeepSpeed, as accelerate's config says) and the
processes must end with the same adapter (a sha256 per rank).

Run as: ``thinksearch train --data synthetic_data.jsonl --output-dir qwen_lora_model``
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from thinksearch import models
from thinksearch.config import TrainConfig
from thinksearch.errors import ThinksearchError
from thinksearch.files import write_json_atomic
from thinksearch.train.build import build_trainer, load_data, pick_precision, sft_args
from thinksearch.train.checkpoints import (CHECKPOINTS, LOSS_PNG, METRICS_FILE, RUN_FILE, check_output_dir,
                                           find_resume_checkpoint, read_json_object, utc_now, write_config)
from thinksearch.train.data import Prepared

MAX_LISTED_SKIPS = 100


@dataclass
class TrainResult:
    """What :func:`train` did: the run directory, its metrics, and notes for the user."""

    output_dir: Path
    metrics: dict[str, Any]
    is_main: bool = True
    notes: list[str] = field(default_factory=list)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
          callbacks: Sequence[Any] = ()) -> TrainResult:
    """Fit a LoRA adapter as ``cfg`` says; write the run directory; return its metrics.

    ``resume`` continues an interrupted run from its newest whole checkpoint (a run directory
    that holds no run yet is simply started); ``overwrite`` replaces a previous run.
    ``callbacks`` are extra ``transformers.TrainerCallback`` objects.
    """
    run_dir = Path(cfg.output_dir).expanduser()
    action = check_output_dir(cfg, resume, overwrite)
    if action == "complete":
        note = f"{run_dir} is already complete; nothing to resume"
        if _is_main_env():
            _console().print(f"[yellow]note:[/] {note}")
        return TrainResult(run_dir, read_json_object(run_dir / METRICS_FILE) or {}, _is_main_env(), [note])

    resolved, tokenizer, data = load_data(cfg)
    precision = pick_precision(cfg.precision)
    args = sft_args(cfg, run_dir, precision, bool(data.eval), action == "resume")
    _ = args.device  # sets up accelerate's state (the process group under accelerate launch)
    state = args.distributed_state
    is_main = state.is_main_process
    notes: list[str] = []
    if resume and action == "new":
        notes.append(f"nothing to resume in {run_dir}; starting a new run")

    ckpt: Path | None = None
    if action == "resume":
        run = read_json_object(run_dir / RUN_FILE) or {}
        if run.get("data_fingerprint") not in (None, data.fingerprint):
            raise ThinksearchError(
                f"--resume: the training data changed since {run_dir} was started (other rows or another "
                "tokenizer); resume with the same data or start over with --overwrite")
        ckpt, stale, notes = find_resume_checkpoint(run_dir / CHECKPOINTS)
        if ckpt is None:
            notes.append("no whole checkpoint yet; training starts from the beginning")
    state.wait_for_everyone()
    if is_main:
        if action == "overwrite":
            shutil.rmtree(run_dir)
        if action == "resume":
            for p in stale:
                shutil.rmtree(p, ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, cfg)
        run = read_json_object(run_dir / RUN_FILE) if action == "resume" else None
        write_json_atomic(run_dir / RUN_FILE, {
            "status": "running", "model": cfg.model, "data_fingerprint": data.fingerprint,
            "started": (run or {}).get("started") or utc_now(), "resumed": utc_now() if ckpt else None,
        })
        for n in notes:
            _console().print(f"[yellow]note:[/] {n}")
    state.wait_for_everyone()

    trainer = build_trainer(cfg, resolved, tokenizer, data, args, precision, callbacks)
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    seconds = time.perf_counter() - t0
    final_eval = trainer.evaluate() if data.eval else {}

    from accelerate.utils import gather_object
    from peft import get_peft_model_state_dict

    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    sharded = str(trainer.accelerator.distributed_type) in ("DistributedType.FSDP", "DistributedType.DEEPSPEED")
    digest = adapter_digest(get_peft_model_state_dict(peft_model)) if not sharded else None
    rank_digests = gather_object([digest]) if state.num_processes > 1 else [digest]

    metrics = _metrics(cfg, trainer, out, final_eval, data, seconds, precision, ckpt, rank_digests)
    trainer.save_model(str(run_dir))  # adapter + tokenizer (main process writes)
    if is_main:
        write_json_atomic(run_dir / models.ADAPTER_META, {
            "base_model": cfg.model, "base_signature": models.base_signature(peft_model.get_base_model().config),
        })
        write_json_atomic(run_dir / METRICS_FILE, metrics)
        plot_loss(metrics["history"], run_dir / LOSS_PNG, title=f"LoRA on {cfg.model}")
        if not cfg.keep_checkpoints:
            shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
        run = read_json_object(run_dir / RUN_FILE) or {}
        write_json_atomic(run_dir / RUN_FILE, {**run, "status": "complete", "finished": utc_now()})
    state.wait_for_everyone()
    if len(set(rank_digests)) > 1:
        raise ThinksearchError(f"the {len(rank_digests)} processes ended with different adapters "
                               f"({', '.join(d[:12] if d else '?' for d in rank_digests)}); the run is not consistent")
    return TrainResult(run_dir, metrics, is_main, notes)


def end_process_group() -> None:
    """Tear down the process group ``accelerate launch`` set up, if any, before the process exits.

    Left to the interpreter's shutdown, gloo's worker threads can outlive it and abort the
    process (SIGABRT, "terminate called without an active exception") after a run that
    succeeded, which the launcher then reports as a failed run.
    """
    import sys

    dist = sys.modules.get("torch.distributed")  # never imported: there is no group to end
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _is_main_env() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def adapter_digest(state_dict: Mapping[str, Any]) -> str:
    """sha256 over the adapter's tensors (sorted by name): equal on every rank after a DDP step."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _metrics(cfg: TrainConfig, trainer: Any, out: Any, final_eval: Mapping[str, Any], data: Prepared,
             seconds: float, precision: str, ckpt: Path | None, rank_digests: list[str | None]) -> dict[str, Any]:
    state = trainer.state
    history = []
    for entry in state.log_history:
        if "loss" in entry or "eval_loss" in entry:
            history.append({k: entry[k] for k in ("step", "epoch", "loss", "eval_loss", "learning_rate",
                                                   "grad_norm", "num_tokens") if k in entry})
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h for h in history if "eval_loss" in h]
    # The trainer counts the non-pad tokens seen in this session (summed over ranks); a resumed run's
    # history also holds the steps before the interruption, with the earlier session's count.
    start = int(ckpt.name.split("-")[1]) if ckpt else 0
    session_tokens = next((h.get("num_tokens", 0) for h in reversed(history) if "loss" in h and h["step"] > start), 0)
    train_seconds = float(out.metrics.get("train_runtime", seconds))
    counts: dict[str, int] = {}
    for s in data.skipped:
        counts[s.reason] = counts.get(s.reason, 0) + 1
    return {
        "base_model": cfg.model,
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "epochs": round(float(state.epoch or 0), 4),
        "train_loss": out.training_loss,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "eval_loss_start": evals[0]["eval_loss"] if evals and evals[0].get("step", 0) == 0 else None,
        "eval_loss": final_eval.get("eval_loss"),
        "train_seconds": round(train_seconds, 3),
        "tokens": {
            "train_rows": sum(len(e.input_ids) for e in data.train),
            "train_assistant": sum(sum(e.assistant_masks) for e in data.train),
            # The tokens weighted by decision_weight (None when it is 1.0 and they are not looked for).
            "train_decision": (sum(sum(e.decision_mask) for e in data.train)
                               if cfg.decision_weight != 1.0 else None),
            "processed": int(session_tokens),
        },
        "tokens_per_s": round(session_tokens / train_seconds, 2) if train_seconds > 0 else None,
        "rows": {"read": data.rows_read, "train": len(data.train), "eval": len(data.eval),
                 "skipped": dict(sorted(counts.items()))},
        "skipped_rows": [s.as_dict() for s in data.skipped[:MAX_LISTED_SKIPS]],
        "precision": precision,
        "world_size": trainer.accelerator.num_processes,
        "effective_batch": cfg.batch_size * cfg.grad_accum * trainer.accelerator.num_processes,
        "resumed_from": ckpt.name if ckpt else None,
        "adapter_sha256": rank_digests[0],
        "rank_adapter_sha256": rank_digests,
        "history": history,
    }


def plot_loss(history: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> None:
    """Training loss per step (and eval loss where measured) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    train_pts = [(h["step"], h["loss"]) for h in history if "loss" in h]
    eval_pts = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if train_pts:
        ax.plot(*zip(*train_pts), label="train loss", lw=1.4)
    if eval_pts:
        ax.plot(*zip(*eval_pts), "o--", label="eval loss (holdout)", lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary(result: TrainResult) -> str:
    """A few lines for the terminal after a run."""
    m = result.metrics
    if not m:
        return str(result.output_dir)
    rows = m.get("rows", {})
    skipped = rows.get("skipped") or {}
    lines = [
        f"adapter: {result.output_dir}",
        f"steps: {m.get('global_step')}  epochs: {m.get('epochs')}  loss: {_f(m.get('first_loss'))} -> "
        f"{_f(m.get('last_loss'))}  eval loss: {_f(m.get('eval_loss_start'))} -> {_f(m.get('eval_loss'))}",
        f"rows: {rows.get('train')} train, {rows.get('eval')} eval, "
        f"skipped: {', '.join(f'{v} {k}' for k, v in skipped.items()) or 'none'}",
        f"tokens/s: {m.get('tokens_per_s')}  time: {m.get('train_seconds')} s  precision: {m.get('precision')}",
    ]
    for s in m.get("skipped_rows", [])[:5]:
        lines.append(f"  skipped {s['where']}: {s['reason']} ({s['detail']})")
    return "\n".join(lines)


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"
