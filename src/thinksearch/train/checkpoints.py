"""The run directory of a training run: its files, its config, and checkpoints sealed for ``--resume``.

A run directory holds the adapter (safetensors + adapter_config.json + thinksearch_adapter.json),
the tokenizer, the resolved config (train_config.yaml), metrics.json, loss.png, run.json (status,
model, data fingerprint) and, while training, checkpoints/. Every checkpoint is sealed with the
size and sha256 of its files once it is complete, so ``--resume`` can tell an interrupted save
(skipped) from a damaged one (a clear error).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from thinksearch import config as config_mod
from thinksearch.config import TrainConfig
from thinksearch.errors import ConfigError, ThinksearchError
from thinksearch.files import read_json, write_json_atomic, write_text_atomic

RUN_FILE = "run.json"
CONFIG_FILE = "train_config.yaml"
METRICS_FILE = "metrics.json"
LOSS_PNG = "loss.png"
CHECKPOINTS = "checkpoints"
SEAL_FILE = "thinksearch_checkpoint.json"
# Settings that may differ when a run is resumed: they change neither the data, nor the
# optimizer's path, nor the number of steps.
RESUME_MAY_CHANGE = frozenset({
    "output_dir", "logging_steps", "save_steps", "save_total_limit", "keep_checkpoints", "eval_steps",
    "gradient_checkpointing", "precision", "padding_free", "skip_bad_rows",
})


def read_json_object(path: Path) -> dict[str, Any] | None:
    data = read_json(path)
    return data if isinstance(data, dict) else None


def saved_config(output_dir: str | Path) -> dict[str, Any] | None:
    """The config a run directory was started with (None if it holds no readable one)."""
    try:
        data = config_mod.load_yaml(Path(output_dir).expanduser() / CONFIG_FILE)
    except ConfigError:  # missing, unreadable, not YAML or not a mapping: no run to resume from
        return None
    section = data.get("train")
    return dict(section) if isinstance(section, dict) else None


def resolve_config(config_path: str | Path | None, overrides: Mapping[str, Any], resume: bool = False) -> TrainConfig:
    """The train config from YAML + flags; with ``resume``, the run's saved config is the base layer.

    So ``thinksearch train --output-dir RUN --resume`` alone continues RUN with its own settings.
    """
    cfg = config_mod.build(TrainConfig, config_path, "train", overrides)
    if not resume:
        return cfg
    saved = saved_config(cfg.output_dir)
    if saved is None:
        return cfg
    data: dict[str, Any] = {}
    if config_path is not None:
        data = dict(config_mod.load_yaml(config_path).get("train") or {})
    known = {f for f in TrainConfig.__dataclass_fields__}
    base = {k: v for k, v in saved.items() if k in known}
    return config_mod.from_dict(TrainConfig, config_mod.merge(config_mod.merge(base, data), overrides), "train")


def check_output_dir(cfg: TrainConfig, resume: bool, overwrite: bool) -> str:
    """Decide what to do with the run directory: 'new', 'resume', 'overwrite' or 'complete'.

    Read-only: every process calls it before any of them writes.
    """
    out = Path(cfg.output_dir).expanduser()
    if resume and overwrite:
        raise ThinksearchError("--resume and --overwrite contradict each other; give one")
    if out.exists() and not out.is_dir():
        raise ThinksearchError(f"output directory {out} is a file")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    run = read_json_object(out / RUN_FILE)
    if run is None:
        raise ThinksearchError(
            f"output directory {out} holds files that are not a thinksearch training run; "
            "choose an empty or new directory (--output-dir)")
    if overwrite:
        return "overwrite"
    if not resume:
        started = run.get("started", "?")
        raise ThinksearchError(
            f"output directory {out} already holds a training run ({run.get('status', '?')}, started {started}, "
            f"model {run.get('model', '?')}); pass --resume to continue it or --overwrite to replace it")
    saved = saved_config(out) or {}
    now = config_mod.to_dict(cfg)
    diff = [k for k in now if k not in RESUME_MAY_CHANGE and k in saved and saved[k] != now[k]]
    if diff:
        shown = "; ".join(f"{k}: {saved[k]!r} then, {now[k]!r} now" for k in diff[:4])
        raise ThinksearchError(
            f"--resume: {out} was started with other settings ({shown}); resume with the same settings "
            "or start over with --overwrite")
    return "complete" if run.get("status") == "complete" else "resume"


# ----------------------------------------------------------------------------- checkpoints


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def seal_checkpoint(ckpt: Path, global_step: int) -> None:
    """Record the size and sha256 of every file of a finished checkpoint (written last, atomically)."""
    files = {}
    for p in sorted(ckpt.rglob("*")):
        if p.is_file() and p.name != SEAL_FILE and not p.name.startswith(f".{SEAL_FILE}"):
            files[str(p.relative_to(ckpt))] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    write_json_atomic(ckpt / SEAL_FILE, {"global_step": global_step, "files": files})


def checkpoint_problem(ckpt: Path) -> tuple[str, str] | None:
    """None if the checkpoint is whole; else ('incomplete' | 'corrupted', what is wrong)."""
    seal_path = ckpt / SEAL_FILE
    if not seal_path.exists():
        return "incomplete", "it was never sealed (interrupted while saving)"
    seal = read_json_object(seal_path)
    if seal is None or not isinstance(seal.get("files"), dict):
        return "corrupted", f"{SEAL_FILE} is unreadable"
    for name, want in sorted(seal["files"].items()):
        p = ckpt / name
        if not p.is_file():
            return "corrupted", f"{name} is missing"
        size = p.stat().st_size
        if size != want.get("size"):
            what = "truncated" if size < want.get("size", 0) else "longer than when it was saved"
            return "corrupted", f"{name} is {what} ({size} of {want.get('size')} bytes)"
        if _sha256(p) != want.get("sha256"):
            return "corrupted", f"{name} does not match its checksum"
    return None


def list_checkpoints(ckdir: Path) -> list[Path]:
    found = []
    if ckdir.is_dir():
        for p in ckdir.iterdir():
            step = p.name.removeprefix("checkpoint-")
            if p.is_dir() and p.name.startswith("checkpoint-") and step.isdigit():
                found.append((int(step), p))
    return [p for _, p in sorted(found)]


def find_resume_checkpoint(ckdir: Path) -> tuple[Path | None, list[Path], list[str]]:
    """The newest whole checkpoint, the incomplete ones newer than it, and notes for the user.

    A checkpoint left half-written by an interruption is passed over (its files are useless);
    a sealed checkpoint whose files changed since is an error, never silently skipped.
    """
    notes: list[str] = []
    stale: list[Path] = []
    cks = list_checkpoints(ckdir)
    for i in range(len(cks) - 1, -1, -1):
        ck = cks[i]
        problem = checkpoint_problem(ck)
        if problem is None:
            return ck, stale, notes
        kind, what = problem
        if kind == "incomplete":
            notes.append(f"{ck.name} is incomplete ({what}); it is discarded")
            stale.append(ck)
            continue
        older = next((c for c in reversed(cks[:i]) if checkpoint_problem(c) is None), None)
        fallback = f"resume from {older.name}" if older else "start from the beginning"
        raise ThinksearchError(
            f"checkpoint {ck} is corrupted: {what}; delete that directory to {fallback}, "
            "or start over with --overwrite")
    return None, stale, notes


def utc_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    import yaml

    text = "# Resolved config of this run; reuse it with: thinksearch train --config THIS_FILE\n"
    text += yaml.safe_dump({"train": config_mod.to_dict(cfg)}, allow_unicode=True, sort_keys=False)
    write_text_atomic(run_dir / CONFIG_FILE, text)
