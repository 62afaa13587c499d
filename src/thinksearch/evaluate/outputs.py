"""Saved outputs: one model's generated outputs as append-only JSONL, with the settings that made them.

A rerun resumes from what is saved, and refuses outputs made under other settings (model,
weights' fingerprint, decoding); ``--restart`` discards them. Used by
:func:`thinksearch.evaluate.evaluate`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from thinksearch import format as fmt
from thinksearch.errors import ThinksearchError
from thinksearch.files import JsonlLog, append_jsonl, read_json, write_json_atomic
from thinksearch.evaluate.agentic import model_shift
from thinksearch.steer import RULE
from thinksearch.refs import ModelSpec
from thinksearch.search.indexing import index_generation

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.config import EvalConfig
    from thinksearch.models import ResolvedModel


def _fingerprint(path: str | None, small: int = 64 << 20) -> str | None:
    """A digest of a local model or adapter directory: contents of small files, sizes of big ones.

    A retrained adapter saved over the old one changes this, so stale outputs are not reused.
    """
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        return None  # a hub id: its name is all we know
    files = sorted(x for x in (p.rglob("*") if p.is_dir() else [p]) if x.is_file() and not x.name.startswith("."))
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(p) if p.is_dir() else f.name}\0{size}\0".encode())
        if size <= small:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def generation_settings(spec: ModelSpec, resolved: "ResolvedModel", cfg: EvalConfig,
                        engine: str = "transformers", gguf: str | None = None) -> dict[str, Any]:
    """Everything that shapes an output; outputs saved under other settings are not reused.

    ``engine`` and ``gguf`` (the fingerprint of the GGUF llama.cpp ran) keep outputs of
    llama.cpp and transformers, or of two exports, from being resumed as one run.
    """
    sampled = cfg.temperature > 0
    return {
        "ref": spec.ref,
        "engine": engine,
        "gguf": gguf,
        "base": resolved.ref,
        "base_fingerprint": _fingerprint(os.path.join(resolved.path, resolved.gguf_file) if resolved.gguf_file else resolved.path),
        "adapter_fingerprint": _fingerprint(resolved.adapter),
        "dtype": cfg.dtype,
        "max_new_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p if sampled else None,
        "seed": cfg.seed if sampled else None,
        "stop": [fmt.TOOL_CLOSE, *fmt.END_OF_TURN],
        # Only when set, so the outputs saved before the option existed still resume.
        **({"repetition_penalty": cfg.repetition_penalty} if cfg.repetition_penalty != 1 else {}),
        **({"close_thinking": cfg.close_thinking} if cfg.close_thinking and cfg.agent else {}),
        **({"agent": agent_loop_settings(cfg)} if cfg.agent else {}),
        **({"decision_shift": shift, "decision_rule": RULE} if (shift := model_shift(cfg, resolved.adapter)) is not None else {}),
    }


def agent_loop_settings(cfg: EvalConfig) -> dict[str, Any]:
    """What shapes an agent-loop answer beyond decoding: the rounds and what the search returns."""
    s = cfg.search
    return {
        "max_rounds": cfg.max_rounds, "backend": s.backend, "k": s.k, "max_result_chars": s.max_result_chars,
        "max_total_chars": s.max_total_chars, "index_generation": index_generation(s.index) if s.backend == "local" else None,
        "url": s.url,
    }


def settings_key(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class _OutputLog(JsonlLog):
    corrupt = "corrupt saved output; rerun with --restart"


class OutputStore:
    """One model's outputs, appended as JSONL (flushed per batch) with its settings beside them."""

    def __init__(self, out_dir: Path, name: str, settings: dict[str, Any], restart: bool = False):
        self.dir = out_dir / "outputs"
        self.path = self.dir / f"{name}.jsonl"
        self.settings_path = self.dir / f"{name}.settings.json"
        self.settings = settings
        self.key = settings_key(settings)
        self.dir.mkdir(parents=True, exist_ok=True)
        if restart:
            self.path.unlink(missing_ok=True)
            self.settings_path.unlink(missing_ok=True)
        self.done: dict[str, dict[str, Any]] = self._load(name)
        if not self.settings_path.exists():
            write_json_atomic(self.settings_path, settings)

    def _refuse(self, name: str, detail: str) -> ThinksearchError:
        return ThinksearchError(
            f"{self.path} holds outputs of model '{name}' made with other settings ({detail}); "
            "rerun with --restart to discard them, or choose another --output-dir"
        )

    def _load(self, name: str) -> dict[str, dict[str, Any]]:
        if self.settings_path.exists():
            old = read_json(self.settings_path)
            if old != self.settings:
                keys = sorted(set(old or {}) | set(self.settings))
                diff = "; ".join(
                    f"{k}: {(old or {}).get(k)!r} → {self.settings.get(k)!r}" for k in keys
                    if (old or {}).get(k) != self.settings.get(k)
                ) if isinstance(old, dict) else "unreadable settings file"
                raise self._refuse(name, diff)
        if not self.path.exists():
            return {}
        # A crash can leave a partial last line: opening the log cuts it off (that question is
        # generated again).
        log = _OutputLog(self.path, lock=False)
        try:
            records = log.open()
        finally:
            log.close()
        done: dict[str, dict[str, Any]] = {}
        for n, rec in enumerate(records, 1):  # the store writes no blank lines: n is the line number
            if rec.get("key") != self.key:
                raise self._refuse(name, f"line {n} has settings key {rec.get('key')!r}, now {self.key!r}")
            done[rec["id"]] = rec
        return done

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        append_jsonl(self.path, records)
