"""llama.cpp in this process through the prebuilt ``xllamacpp`` wheel: the fastest CPU engine for GGUF models."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from thinksearch.config import AgentConfig
from thinksearch.engines.openai import OpenAIEngine, prompt_tokenizer
from thinksearch.errors import ThinksearchError
from thinksearch.refs import gguf_of

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase


def installed() -> bool:
    """Whether xllamacpp is installed (found, not imported: importing it loads llama.cpp)."""
    return importlib.util.find_spec("xllamacpp") is not None


def tuned_gguf_problem(cfg: AgentConfig) -> str | None:
    """Why llama.cpp cannot run ``cfg.gguf`` in place of the model + adapter; None when it can."""
    from thinksearch.gguf_cache import is_current
    from thinksearch.refs import split_adapter

    if not installed():
        return "xllamacpp is not installed (pip install 'thinksearch[llamacpp]')"
    return is_current(cfg.gguf or "", cfg.adapter or split_adapter(cfg.model)[1])


LLAMACPP_MISSING = "pip install 'thinksearch[llamacpp]'"


def start_server(gguf: Path, threads: int | None = None, context_length: int = 4096, parallel: int = 1,
                 cache_prompt: bool = True, who: str = "the llamacpp engine") -> Any:
    """Start llama.cpp's OpenAI-compatible server in this process on 127.0.0.1 (a free port).

    ``parallel`` slots decode concurrent requests together, each with ``context_length``
    tokens; ``listening_address`` of the returned ``xllamacpp.Server`` is its base URL.
    Shared by the engine (agent, eval, serve) and the llamacpp teacher.
    """
    try:
        import xllamacpp
    except ImportError:
        raise ThinksearchError(f"{who} needs xllamacpp: {LLAMACPP_MISSING}") from None
    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_ctx = context_length * parallel  # llama.cpp splits the context between its slots
    p.n_parallel = parallel
    p.cpuparams.n_threads = threads or os.cpu_count() or 1
    p.cpuparams_batch.n_threads = threads or os.cpu_count() or 1
    p.hostnames = ["127.0.0.1"]
    p.port = 0
    p.verbosity = 0
    # Reusing the KV cache of a shared prefix makes each round of the agent loop cheap
    # (the next prompt extends the last); benchmarks turn it off to time real prefills.
    p.cache_prompt = cache_prompt
    try:
        return xllamacpp.Server(p)
    except RuntimeError as e:
        raise ThinksearchError(f"llama.cpp could not load {gguf}: {e} (is it a complete GGUF of a model llama.cpp supports?)") from None


class LlamaCppEngine(OpenAIEngine):
    """llama.cpp in this process (the prebuilt ``xllamacpp`` wheel), spoken to over its own
    OpenAI-compatible server on 127.0.0.1 with the completions API.

    Only GGUF models: a tuned model gets here as a GGUF of the merged model (see README).
    """

    REPETITION_PENALTY = "repeat_penalty"  # llama.cpp's name (over the last 64 tokens by default)
    # llama.cpp reports as many as asked, so the decision lines' tokens are read unless they are
    # far down the list (OpenAI's API stops at 20).
    TOP_LOGPROBS = 1000

    def __init__(self, gguf: Path, tokenizer: "PreTrainedTokenizerBase", threads: int | None = None,
                 context_length: int = 4096, parallel: int = 1, cache_prompt: bool = True):
        self._server = start_server(gguf, threads, context_length, parallel, cache_prompt)
        super().__init__(self._server.listening_address + "/v1", tokenizer, api="completions",
                         context_length=context_length, concurrency=parallel)
        self.name = f"llamacpp ({gguf.name})"

    def _logprob_params(self, tokens: Sequence[int]) -> dict[str, Any]:
        # llama.cpp reports no log-probabilities for a token that ends inside a character, so
        # the one token generated is pinned to the first asked for (whole characters: the
        # decision lines' tokens, steer.steering). What it reports is the model's own
        # distribution, taken before logit_bias is applied.
        return {"logit_bias": {str(tokens[0]): 100}} if tokens else {}

    @classmethod
    def from_config(cls, cfg: AgentConfig) -> "LlamaCppEngine":
        if cfg.gguf:  # the tuned model exported: used only while it matches the adapter
            why = tuned_gguf_problem(cfg)
            if why:
                raise ThinksearchError(f"--gguf: {why}; rerun thinksearch run (its export stage rewrites it) or use --engine transformers")
        gguf = Path(cfg.gguf).expanduser() if cfg.gguf else gguf_of(cfg.model)
        if gguf is None:
            raise ThinksearchError(f"the llamacpp engine needs a GGUF model; {cfg.model!r} is not a .gguf file "
                                   "or a prepared offline alias (a tuned model: merge it, then convert the merged directory to GGUF)")
        tokenizer = prompt_tokenizer(cfg.model, required=True)
        return cls(gguf, tokenizer, cfg.threads, cfg.context_tokens)  # type: ignore[arg-type]

    def close(self) -> None:
        super().close()
        self._server = None
