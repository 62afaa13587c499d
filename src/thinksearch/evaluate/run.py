"""The evaluation run: every model over the eval set, one model in memory at a time, then the reports.

Run as: ``thinksearch eval --data data/eval/test.jsonl --model base=qwen2.5-coder-0.5b-instruct``
(the CLI calls :func:`evaluate`).
"""

from __future__ import annotations

import dataclasses
import gc
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from thinksearch.errors import ThinksearchError
from thinksearch.agent import Agent
from thinksearch.evaluate.agentic import (BatchingEngine, agent_settings, base_record, model_shift, run_agent,
                                          unapplied_shift_note)
from thinksearch.evaluate.batching import generate_records, sampling_for
from thinksearch.evaluate.engine_choice import choose, load_llamacpp
from thinksearch.evaluate.evalset import load_eval_set, subsample
from thinksearch.evaluate.outputs import OutputStore, generation_settings
from thinksearch.evaluate.reports import build_report, write_reports
from thinksearch.refs import ModelSpec, parse_model_specs

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.config import EvalConfig
    from thinksearch.models import ResolvedModel


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from thinksearch.progress import progress

    return progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        bar=enabled,
    )


def _load_model(spec: ModelSpec, resolved: "ResolvedModel", cfg: EvalConfig) -> tuple[Any, Any]:
    from thinksearch import models

    try:
        return models.load(resolved, dtype=cfg.dtype, device=cfg.device)
    except ThinksearchError as e:
        raise ThinksearchError(f"model '{spec.name}' ({spec.ref}) does not load: {e}") from None
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ThinksearchError(f"model '{spec.name}' ({spec.ref}) does not load: {first}") from None


def _release_memory() -> None:
    """Give a dropped model's memory back before the next model loads."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _open_backend(cfg: EvalConfig) -> Any:
    """The search backend of ``--agent``. Unlike ``ask``, a backend that does not open is an
    error: answers scored against searches that all failed would measure nothing."""
    from thinksearch.search import make_backend

    try:
        return make_backend(cfg.search)
    except ThinksearchError as e:
        raise ThinksearchError(f"--agent needs a search backend: {e} (set --search-backend / --search-index; "
                               "`thinksearch index build` makes a local index)") from None


def evaluate(cfg: EvalConfig, progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the evaluation described by ``cfg``; write and return the report (see :func:`build_report`).

    With ``cfg.agent`` each question goes through the agent loop against ``cfg.search``
    (:mod:`thinksearch.evaluate.agentic`); else the first turn is generated. Models are loaded
    one at a time and freed before the next. Outputs already saved in
    ``cfg.output_dir`` under the same settings are reused.
    """
    from thinksearch import models

    log = log or (lambda msg: None)
    specs = parse_model_specs(cfg.models)
    evalset = load_eval_set(cfg.data, cfg.corpus)
    pool = [it for it in evalset.items if it.gold] if cfg.gold_only else evalset.items
    items = subsample(pool, cfg.limit_per_type, cfg.seed)
    out_dir = Path(cfg.output_dir)
    # Resolve every reference before generating anything: a typo in the second model's adapter
    # path should not surface after the first model has run for an hour.
    resolved = {}
    for spec in specs:
        try:
            resolved[spec.name] = models.resolve(spec.ref)
        except ThinksearchError as e:
            raise ThinksearchError(f"model '{spec.name}' ({spec.ref}) does not load: {e}") from None
    if cfg.engine == "llamacpp" and not cfg.agent:
        raise ThinksearchError("--engine llamacpp evaluates through the agent loop only; add --agent, or use --engine transformers")
    choices = {s.name: choose(s.name, resolved[s.name], cfg, log) for s in specs}
    for s in specs:
        note = unapplied_shift_note(cfg, s.name, resolved[s.name].adapter)
        if note:
            log(note)
    stores = {s.name: OutputStore(out_dir, s.name, generation_settings(s, resolved[s.name], cfg, choices[s.name].name,
                                                                       choices[s.name].fingerprint), cfg.restart)
              for s in specs}
    if evalset.duplicates:
        log(f"{evalset.path}: {evalset.duplicates} repeated question(s) counted once")
    sampling = sampling_for(cfg)
    settings = agent_settings(cfg)
    backend = _open_backend(cfg) if cfg.agent else None
    with _progress(progress) as bar:
        for spec in specs:
            store = stores[spec.name]
            pending = [it for it in items if it.id not in store.done]
            task = bar.add_task(spec.name, total=len(items), completed=len(items) - len(pending), rate="")
            if not pending:
                continue
            if store.done:
                log(f"{spec.name}: resuming, {len(items) - len(pending)} of {len(items)} outputs already saved")
            choice = choices[spec.name]
            if choice.name == "llamacpp":
                model, tokenizer = None, None
                engine: Any = load_llamacpp(spec.name, choice, resolved[spec.name], cfg, settings.context_tokens, log)
            else:
                model, tokenizer = _load_model(spec, resolved[spec.name], cfg)
                engine = BatchingEngine(model, tokenizer, cfg.batch_size, cfg.continuous_batching)
            tokens, t0 = 0, time.perf_counter()

            def saved(batch: list[dict[str, Any]], store: OutputStore = store, task: Any = task) -> None:
                nonlocal tokens
                store.append(batch)
                store.done.update({r["id"]: r for r in batch})
                tokens += sum(r["completion_tokens"] for r in batch)
                rate = tokens / max(time.perf_counter() - t0, 1e-9)
                bar.update(task, advance=len(batch), rate=f"{rate:.1f} tok/s")

            try:
                if backend is None:
                    generate_records(model, tokenizer, pending, sampling, cfg.batch_size, store.key, saved,
                                     continuous=cfg.continuous_batching)
                else:
                    shift = model_shift(cfg, resolved[spec.name].adapter)
                    if shift is not None:
                        log(f"{spec.name}: decision shift {shift:+g} at the decision line (--decision-shift, or the adapter's decision.json)")
                    # The agent finds the shift itself, as ask and serve do: a calibrated 0 steers,
                    # where an explicit 0 would turn steering off.
                    agent = Agent(engine, backend, dataclasses.replace(settings, decision_shift=cfg.decision_shift,
                                                                       adapter=resolved[spec.name].adapter))
                    run_agent(agent, pending, lambda it, key=store.key: base_record(it, key), cfg.max_new_tokens,
                              4 * cfg.batch_size, saved)
            finally:
                engine.close()  # llama.cpp's server and its memory go before the next model loads
                del model, tokenizer, engine
                _release_memory()
    report = build_report(cfg, evalset, items, specs, {s.name: stores[s.name] for s in specs})
    write_reports(report, out_dir)
    return report


