"""Which engine evaluates each model with ``--agent``: llama.cpp on a GGUF where it can, else transformers.

llama.cpp decodes the same model several times faster on a CPU (bench/results/infer.json) and
runs ``batch_size`` questions in parallel slots. It needs a GGUF: an offline alias has one, a
``.gguf`` reference is one, and a tuned model (alias or .gguf + adapter) gets one from
:mod:`thinksearch.gguf_cache`. A model directory or hub id has none, and stays on transformers.
The choice and the GGUF's fingerprint go into the saved outputs' settings, so outputs of one
engine (or of a stale export) are never resumed under another.

Used by :func:`thinksearch.evaluate.run.evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from thinksearch.errors import ThinksearchError

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.config import EvalConfig
    from thinksearch.gguf_cache import Plan
    from thinksearch.models import ResolvedModel


@dataclass(frozen=True)
class EngineChoice:
    """The engine for one model, and the GGUF llama.cpp runs (a ready file, or an export to make)."""

    name: Literal["llamacpp", "transformers"]
    gguf: Path | None = None
    export: "Plan | None" = None
    fingerprint: str | None = None
    """The GGUF's identity in the saved outputs' settings (the cache key of an export)."""
    why_not_llamacpp: str | None = None


def _gguf_plan(resolved: "ResolvedModel", cfg: "EvalConfig") -> tuple[Path | None, "Plan | None", str]:
    """(ready GGUF, export plan, fingerprint) for a model; raises with the reason it has none."""
    from thinksearch import gguf_cache
    from thinksearch.evaluate.outputs import _fingerprint
    from thinksearch.refs import OFFLINE_MODELS, gguf_of

    if resolved.adapter:
        p = gguf_cache.plan(resolved.ref, resolved.adapter, directory=cfg.gguf_cache)
        return None, p, p.key
    if resolved.kind == "gguf":
        path = Path(resolved.path) / str(resolved.gguf_file)
        return path, None, _fingerprint(str(path)) or ""
    if resolved.kind == "alias":
        path = gguf_of(resolved.ref)
        if path is None:
            raise ThinksearchError(f"the GGUF of '{resolved.ref}' is not on disk (thinksearch models prepare {resolved.ref})")
        return path, None, OFFLINE_MODELS[resolved.ref].sha256[:16]
    raise ThinksearchError(f"'{resolved.ref}' is a {'model directory' if resolved.kind == 'dir' else 'hub id'}, not a GGUF")


def choose(name: str, resolved: "ResolvedModel", cfg: "EvalConfig", log: Callable[[str], None]) -> EngineChoice:
    """The engine ``cfg.engine`` asks for model ``name``; ``auto`` falls back to transformers with one
    line to ``log`` saying why, an explicit ``llamacpp`` that cannot run is an error."""
    if not cfg.agent or cfg.engine == "transformers":
        return EngineChoice("transformers")
    try:
        from thinksearch.engines.llamacpp import installed

        if not installed():
            raise ThinksearchError("xllamacpp is not installed (pip install 'thinksearch[llamacpp]')")
        gguf, export, fingerprint = _gguf_plan(resolved, cfg)
    except ThinksearchError as e:
        if cfg.engine == "llamacpp":
            raise ThinksearchError(f"--engine llamacpp cannot evaluate model '{name}': {e}; "
                                   "use --engine transformers (or auto)") from None
        log(f"{name}: evaluated through transformers, not llama.cpp: {e}")
        return EngineChoice("transformers", why_not_llamacpp=str(e))
    return EngineChoice("llamacpp", gguf, export, fingerprint)


def load_llamacpp(name: str, choice: EngineChoice, resolved: "ResolvedModel", cfg: "EvalConfig",
                  context_tokens: int, log: Callable[[str], None]) -> Any:
    """The llama.cpp engine on the model's GGUF (exported first if need be), ``batch_size`` slots."""
    from thinksearch import gguf_cache, models
    from thinksearch.engines.llamacpp import LlamaCppEngine

    gguf = choice.gguf
    if gguf is None:
        assert choice.export is not None
        made = gguf_cache.cached_gguf(choice.export.base, choice.export.adapter, like=choice.export.like,
                                      directory=choice.export.path.parent, say=log)
        if made.key != choice.fingerprint:  # the settings key names the adapter as it was at the start
            raise ThinksearchError(f"model '{name}': adapter '{resolved.adapter}' changed during the evaluation; run it again")
        gguf = made.path
    fix = (f"delete {gguf} (and {gguf.with_suffix('.json').name}) so it is exported again" if choice.export
           else f"run thinksearch models prepare {resolved.ref} --force" if resolved.kind == "alias"
           else "replace it with a complete GGUF")
    try:
        # The prompt is rendered with the base's tokenizer and chat template, as in training.
        tokenizer = models.load_tokenizer(resolved)
        return LlamaCppEngine(gguf, tokenizer, context_length=context_tokens, parallel=cfg.batch_size)
    except (ThinksearchError, OSError, ValueError) as e:
        detail = " ".join(str(e).split())  # one line, whatever llama.cpp or the GGUF reader printed
        raise ThinksearchError(f"model '{name}': {detail}; {fix}, or evaluate with --engine transformers") from None
