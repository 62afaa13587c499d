"""The model engines behind the agent loop, and how one is picked.

Three engines speak the :class:`~thinksearch.engines.base.Engine` protocol: in-process
transformers (:mod:`.transformers`), any OpenAI-compatible endpoint (:mod:`.openai`) and
llama.cpp in-process (:mod:`.llamacpp`). Heavy libraries are imported when an engine is made.

Run as: ``python -c "from thinksearch.config import AgentConfig; from thinksearch.engines import pick_engine; print(pick_engine(AgentConfig()))"``.
"""

from __future__ import annotations

from typing import Any, Callable

from thinksearch.config import AgentConfig
from thinksearch.engines.base import STOP, Engine, Message
from thinksearch.engines.llamacpp import LlamaCppEngine, installed, tuned_gguf_problem
from thinksearch.engines.openai import OpenAIEngine
from thinksearch.engines.transformers import TransformersEngine
from thinksearch.errors import ThinksearchError
from thinksearch.refs import gguf_of, has_adapter

ENGINES: dict[str, Any] = {"transformers": TransformersEngine, "openai": OpenAIEngine, "llamacpp": LlamaCppEngine}


def pick_engine(cfg: AgentConfig, note: Callable[[str], None] | None = None) -> str:
    """``auto``: llama.cpp where it can run the model (a GGUF, no adapter, xllamacpp installed;
    or a current ``cfg.gguf`` of the tuned model), since it decodes several times faster on CPU
    (bench/results/infer.json); else transformers, telling ``note`` why when a gguf was asked for."""
    if cfg.engine != "auto":
        return cfg.engine
    if cfg.gguf:
        why = tuned_gguf_problem(cfg)
        if why is None:
            return "llamacpp"
        if note:
            note(f"not using --gguf: {why}; answering through transformers (thinksearch run's export stage writes a current one)")
        return "transformers"
    if cfg.adapter is None and installed():
        try:
            from thinksearch import models

            if not has_adapter(cfg.model) and gguf_of(cfg.model) is not None and (
                    cfg.model not in models.OFFLINE_MODELS or models.is_prepared(cfg.model)):
                return "llamacpp"
        except ThinksearchError:
            pass
    return "transformers"


def load_engine(cfg: AgentConfig, note: Callable[[str], None] | None = None) -> Engine:
    """The engine ``cfg`` asks for, loaded and ready (``note``: why a --gguf is not used)."""
    return ENGINES[pick_engine(cfg, note)].from_config(cfg)


__all__ = ["ENGINES", "STOP", "Engine", "LlamaCppEngine", "Message", "OpenAIEngine", "TransformersEngine",
           "gguf_of", "load_engine", "pick_engine", "tuned_gguf_problem"]
