"""Merged GGUFs of tuned models, exported once per adapter and reused while the adapter is unchanged.

llama.cpp runs only GGUF, so a tuned model (base + LoRA adapter) is merged and exported
(:func:`thinksearch.gguf_export.export_gguf`) before llama.cpp can evaluate or serve it. An
export of the 0.5B model takes about a minute; the cache keeps it, keyed by a fingerprint of
what determines its weights: the adapter's files (sha256), the base GGUF and the quantization.
A retrained adapter has another fingerprint, so a stale export is never found, let alone used.

A cache entry is ``KEY.gguf`` plus ``KEY.json`` (what it was made from), in
``RUN_DIR/gguf-cache`` inside a run, else ``$THINKSEARCH_HOME/gguf-cache``. A copy elsewhere
(the run's ``model.gguf``) carries its fingerprint in ``model.gguf.fingerprint.json``; it is
used only while :func:`is_current` says the adapter still matches it.

Run as: ``python -c "from thinksearch.gguf_cache import cached_gguf; print(cached_gguf('qwen2.5-coder-0.5b-instruct', 'runs/quickstart/adapter'))"``
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from thinksearch.errors import ThinksearchError
from thinksearch.files import read_json, write_json_atomic

QTYPE = "f16"
"""What evaluation and the run's export stage write. f16, not q8_0: on all 240 eval questions a
tuned model's first-turn decisions matched the fp32 transformers model on 239 with f16 and on
222 with q8_0 (issue 18's target is 95%), and f16 still ran 3.2x transformers against q8_0's
3.7x (bench/results/eval_engines_agreement.json, eval_engines_qtypes.json)."""
# Bumped when export_gguf changes what it writes for the same inputs, so older exports are redone.
EXPORT_VERSION = 1
FINGERPRINT_SUFFIX = ".fingerprint.json"


def adapter_fingerprint(adapter: str | Path) -> str:
    """sha256 over the adapter files that make its weights: adapter_config.json and the weight files.

    The training run's other files (metrics, plots, checkpoints being pruned) change without
    changing the model, and must not make a good export look stale.
    """
    root = Path(adapter).expanduser()
    files = sorted(p for p in root.iterdir() if p.is_file() and (
        p.name == "adapter_config.json" or p.suffix in (".safetensors", ".bin")))
    if not any(p.name == "adapter_config.json" for p in files):
        raise ThinksearchError(f"adapter '{adapter}' is not a LoRA adapter directory (no adapter_config.json)")
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def base_id(like: Path) -> str:
    """Who the base GGUF is: an offline alias's file by its published sha256 (hashing 500 MB on
    every eval would cost seconds), any other file by name, size and modification time."""
    from thinksearch.refs import OFFLINE_MODELS, home

    for m in OFFLINE_MODELS.values():
        if like.resolve() == (home() / "models" / f"{m.alias}.gguf").resolve() and like.stat().st_size == m.size:
            return f"sha256:{m.sha256}"
    st = like.stat()
    return f"{like.resolve()}:{st.st_size}:{st.st_mtime_ns}"


@dataclass(frozen=True)
class Plan:
    """The export a tuned model needs: its cache key and where the entry lives."""

    base: str
    adapter: str
    like: Path
    key: str
    adapter_fingerprint: str
    qtype: str
    path: Path

    @property
    def ready(self) -> bool:
        return self.path.is_file() and self.path.with_suffix(".json").is_file()

    def meta(self) -> dict[str, object]:
        return {"key": self.key, "base": self.base, "adapter": self.adapter, "adapter_fingerprint": self.adapter_fingerprint,
                "base_gguf": base_id(self.like), "qtype": self.qtype, "export_version": EXPORT_VERSION}


def cache_dir(run_dir: str | Path | None = None) -> Path:
    from thinksearch.refs import home

    return Path(run_dir).expanduser() / "gguf-cache" if run_dir else home() / "gguf-cache"


def plan(base_ref: str, adapter: str | Path, like: str | Path | None = None, qtype: str = QTYPE,
         directory: str | Path | None = None) -> Plan:
    """The cache entry for ``base_ref`` + ``adapter`` (nothing is exported; see :func:`cached_gguf`).

    ``like``: the base's GGUF (default: the offline alias's, or ``base_ref`` itself when it is a .gguf).
    """
    from thinksearch.gguf_export import base_gguf

    like_path = Path(like).expanduser() if like else base_gguf(base_ref)
    if like_path is None or not like_path.is_file():
        raise ThinksearchError(f"no GGUF of the base model {base_ref!r} to export the tuned model into "
                               "(an offline alias, prepared, or a .gguf file is needed)")
    fp = adapter_fingerprint(adapter)
    key = hashlib.sha256(json.dumps([fp, base_id(like_path), qtype, EXPORT_VERSION]).encode()).hexdigest()[:16]
    root = Path(directory).expanduser() if directory else cache_dir()
    return Plan(base_ref, str(Path(adapter).expanduser()), like_path, key, fp, qtype, root / f"{key}.gguf")


def cached_gguf(base_ref: str, adapter: str | Path, like: str | Path | None = None, qtype: str = QTYPE,
                directory: str | Path | None = None, say: Callable[[str], None] | None = None) -> Plan:
    """The merged GGUF of ``base_ref`` + ``adapter``, exported on first use and reused after.

    The file appears complete or not at all (exported in a temporary folder, then renamed), so
    an interrupted export is redone. Older exports of the same adapter folder are removed.
    """
    from thinksearch.gguf_export import export_gguf

    p = plan(base_ref, adapter, like, qtype, directory)
    if p.ready:
        return p
    (say or (lambda m: None))(f"exporting {base_ref}+{adapter} to GGUF ({qtype}), once for this adapter: {p.path}")
    p.path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=p.path.parent, prefix=".export-") as tmp:
        out = export_gguf(base_ref, Path(tmp) / "model.gguf", like=p.like, adapter=str(adapter),
                          qtype=qtype, progress=False)  # type: ignore[arg-type]
        # An adapter rewritten while it was read (a training run saving over it) would leave an
        # export that matches neither version: refuse it rather than cache it under the old key.
        if adapter_fingerprint(adapter) != p.adapter_fingerprint:
            raise ThinksearchError(f"adapter '{adapter}' changed while it was being exported; run again once it is saved")
        os.replace(out, p.path)
    _drop_older(p)
    write_json_atomic(p.path.with_suffix(".json"), p.meta())
    return p


def _drop_older(p: Plan) -> None:
    """Remove entries for the same adapter folder made from earlier versions of it: a run that
    retrains would otherwise leave a 500 MB file per training behind."""
    for meta_path in p.path.parent.glob("*.json"):
        meta = read_json(meta_path)
        if isinstance(meta, dict) and meta.get("adapter") == p.adapter and meta.get("key") != p.key:
            meta_path.unlink(missing_ok=True)
            meta_path.with_suffix(".gguf").unlink(missing_ok=True)


# ----------------------------------------------------------------------------- copies outside the cache


def fingerprint_path(gguf: str | Path) -> Path:
    gguf = Path(gguf)
    return gguf.with_name(gguf.name + FINGERPRINT_SUFFIX)


def publish(p: Plan, dest: str | Path) -> Path:
    """Put the cached GGUF at ``dest`` (a hard link where the file system allows, else a copy),
    with its fingerprint file beside it; both appear atomically."""
    dest = Path(dest).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(p.path, tmp)
        except OSError:
            shutil.copyfile(p.path, tmp)
        # The old fingerprint goes first and the new one comes last: a reader in between sees a
        # GGUF without a fingerprint (not used), never an old GGUF under the new fingerprint.
        fingerprint_path(dest).unlink(missing_ok=True)
        os.replace(tmp, dest)
        write_json_atomic(fingerprint_path(dest), p.meta())
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def is_current(gguf: str | Path, adapter: str | Path | None) -> str | None:
    """Why ``gguf`` must not stand in for the model with ``adapter``; None when it may.

    Without an adapter the file is taken as it is; with one, its fingerprint file must name
    the adapter's current fingerprint.
    """
    gguf = Path(gguf).expanduser()
    if not gguf.is_file():
        return f"{gguf} does not exist"
    if adapter is None:
        return None
    meta = read_json(fingerprint_path(gguf))
    if not isinstance(meta, dict) or "adapter_fingerprint" not in meta:
        return f"{gguf} has no fingerprint file ({fingerprint_path(gguf).name}), so it may be of another adapter"
    try:
        now = adapter_fingerprint(adapter)
    except (ThinksearchError, OSError) as e:
        return f"cannot fingerprint the adapter: {e}"
    if meta["adapter_fingerprint"] != now:
        return f"{gguf} is stale: adapter '{adapter}' changed since it was exported"
    return None
