"""The Trainer callbacks of a training run: checkpoint sealing and the progress line.

Imported only when a run starts (``build_trainer``), so ``import thinksearch.train`` and
``thinksearch --help`` do not import transformers.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from thinksearch.train.checkpoints import seal_checkpoint


class Seal(TrainerCallback):
    """Seal each checkpoint once every process has written its part of it."""

    def on_save(self, args, state, control, **kw):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        args.distributed_state.wait_for_everyone()
        if state.is_world_process_zero and ckpt.is_dir():
            seal_checkpoint(ckpt, state.global_step)
        args.distributed_state.wait_for_everyone()


class ProgressBar(TrainerCallback):
    """One line: steps, loss, eval loss, tokens/s, elapsed and ETA (main process only)."""

    def __init__(self) -> None:
        self.progress = None
        self.task = None
        self.first: tuple[float, float] | None = None

    def on_train_begin(self, args, state, control, **kw):
        if not state.is_world_process_zero:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        from thinksearch.progress import progress

        self.progress = progress(
            TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("eval {task.fields[eval]}"),
            TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step,
                                           loss="-", eval="-", tps="-")
        self.progress.start()

    def on_step_end(self, args, state, control, **kw):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kw):
        if self.progress is None or not logs:
            return
        fields: dict[str, str] = {}
        if "loss" in logs:
            fields["loss"] = f"{logs['loss']:.4f}"
        if "eval_loss" in logs:
            fields["eval"] = f"{logs['eval_loss']:.4f}"
        if "num_tokens" in logs:
            now, n = time.perf_counter(), float(logs["num_tokens"])
            if self.first is None:
                self.first = (now, n)
            elif now > self.first[0]:
                fields["tps"] = f"{(n - self.first[1]) / (now - self.first[0]):,.0f}"
        self.progress.update(self.task, **fields)

    def on_train_end(self, args, state, control, **kw):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None
