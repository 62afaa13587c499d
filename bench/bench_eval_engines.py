"""Benchmark: evaluation through llama.cpp (a GGUF export, 8 parallel slots) against transformers (fp32,
continuous batching, batch 8), same model, same questions, same decoding.

Full run (the offline 0.5B model, all 240 questions of data/eval/test.jsonl, 512 new tokens,
up to 3 agent rounds as ``thinksearch eval --agent`` does)::

    python bench/bench_eval_engines.py --adapter runs/quickstart/adapter

(without ``--adapter``: the base model alone). Run time: not measured yet. The quick run
scales to nothing (a random 2-layer model), so the estimate comes from bench/results/eval.json
instead: transformers fp32, batch 8, wrote 16 x 96 tokens in 25 s on 2 idle cores (at most
~60 tok/s). 240 questions of up to 512 tokens, plus a second round for those that search, is
some 60-120k tokens: roughly 30-60 min for the transformers half, the llama.cpp half a
fraction of that, a minute for the GGUF export; twice as long on a busy machine.
``--questions 32 --max-new-tokens 256`` gives a first figure in about a tenth of the time.
``--quick`` (the tiny test model, ~40 s on 2 busy cores, half of it the two engines) checks the script and
measures nothing real.

Both engines answer every question through the agent loop (:mod:`thinksearch.evaluate.agentic`,
the same :func:`run_agent` that ``thinksearch eval --agent`` uses), greedy, with a search
backend that returns the same fixed passages for every query: search costs nothing and both
engines read the same tool turns, so the time is the models' alone.

1. Speed: questions per minute, wall and process CPU seconds (llama.cpp's threads run in this
   process, so they count), generated tokens. ratio = llama.cpp q/min ÷ transformers q/min
   (target 3x, issue 18).
2. Agreement on the first turn: how often the two make the same search decision (a tool call
   or not) and the same ``<thinking>`` decision (opened or not), as counts, rates and 95%
   Wilson intervals (target 95%), with up to 5 disagreements shown.

The GGUF llama.cpp runs is the base (+ ``--adapter``, merged) exported at ``--qtype`` (default
what ``thinksearch eval`` exports a tuned model to, ``gguf_cache.QTYPE``: f16 since q8_0 lost
decisions here).
``--qtype q8_0 f16`` runs llama.cpp once per qtype against a single transformers run (the slow
half): the JSON's ``by_qtype`` has each one's speed and agreement, the headline is the first.
Agreement alone, on the whole set: ``--max-rounds 1`` (the first turn is all it compares).
With an adapter the export goes through the evaluation's own GGUF cache, so a later
``thinksearch eval`` of the same adapter reuses it.

JSON: ``bench/results/eval_engines.json`` (``--quick``: ``eval_engines_quick.json``), or ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]

from common import RESULTS, write_result  # noqa: E402

BATCH = 8
SHOWN_DISAGREEMENTS = 5
TRUNCATE = 300  # characters of each output kept in a shown disagreement


class SameResults:
    """A search backend answering every query with the same passages, instantly: the benchmark
    times the models, and both engines must read identical tool turns."""

    name = "fixed"

    def search(self, query: str, k: int = 5) -> list:
        from thinksearch.search.base import Result

        passages = [
            ("金价走势", "国际金价本周接近每盎司3500美元，创历史新高，分析人士认为避险需求推动了上涨。", "2025-04-23"),
            ("比特币行情", "比特币价格今日在6万美元附近波动，24小时成交额约300亿美元。", "2025-04-22"),
            ("天气预报", "北京明天多云转晴，气温12到24摄氏度，北风二级。", "2025-04-21"),
        ]
        return [Result(t, s, f"https://example.org/{i}", d, "新闻") for i, (t, s, d) in enumerate(passages)][:k]


def questions(n: int | None, data: Path) -> tuple[list, str]:
    """The first ``n`` questions, thinking and search interleaved so a small ``n`` has both kinds."""
    from thinksearch import evaluate as ev

    items = ev.load_eval_set(data).items
    per = {t: [i for i in items if i.type == t] for t in ev.TYPES}
    longest = max(len(v) for v in per.values())
    mixed = [v[k] for k in range(longest) for v in per.values() if k < len(v)]
    source = str(data.relative_to(ROOT) if data.is_relative_to(ROOT) else data)
    return mixed[:n] if n else mixed, source


def quick_model(tmp: Path) -> tuple[str, str, Path]:
    """The tiny test model, a random LoRA adapter on it and its reference GGUF (what the offline
    alias's GGUF is to the real model): (base, adapter, base GGUF)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_gguf_cache import make_adapter
    from test_gguf_export import reference_gguf
    from tiny import save_tiny

    from thinksearch import models

    base = save_tiny(tmp / "tiny")
    model, tok = models.load(str(base), dtype="float32", device="cpu")
    like = reference_gguf(model, tok, tmp / "tiny.gguf")
    return str(base), str(make_adapter(base, tmp / "adapter", seed=5)), like


def gguf_for(base: str, adapter: str | None, like: Path | None, qtype: str, tmp: Path) -> tuple[Path, str]:
    """The GGUF llama.cpp runs and how it was made.

    Always an export at ``qtype``, even without an adapter: the offline alias's own file is
    Q4_K_M, and the question is what q8_0 (or f16) does, not that file.
    """
    from thinksearch import gguf_cache
    from thinksearch.gguf_export import export_gguf

    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    t0 = time.perf_counter()
    if adapter:
        # The evaluation's cache (the temp dir with --quick): a repeat run skips the export, and
        # `thinksearch eval` of the same adapter reuses this file.
        directory = tmp / "gguf-cache" if like is not None and like.is_relative_to(tmp) else None
        p = gguf_cache.cached_gguf(base, adapter, like=like, qtype=qtype, directory=directory, say=say)
        return p.path, f"{qtype} export of base + adapter through the GGUF cache ({time.perf_counter() - t0:.1f} s)"
    say(f"exporting {base} to GGUF ({qtype}) in a temporary folder")
    out = export_gguf(base, tmp / f"base-{qtype}.gguf", like=like, qtype=qtype, progress=False)  # type: ignore[arg-type]
    return out, f"{qtype} export of the base ({time.perf_counter() - t0:.1f} s)"


def warm_up(engine: Any, max_new_tokens: int = 4) -> None:
    """First-call setup off the clock, on questions not in the set: llama.cpp gets one on every
    slot, so no timed question pays for a slot's first use."""
    from thinksearch.agent import build_messages
    from thinksearch.generation import Sampling

    convs = [build_messages(f"热身问题 {i}：你好") for i in range(BATCH)]
    engine.generate(convs, Sampling(max_new_tokens=max_new_tokens))


def run_engine(engine: Any, items: list, cfg: Any) -> tuple[dict[str, dict], dict[str, Any]]:
    """Every question through the agent loop on ``engine``: records by id, and the figures."""
    from thinksearch.agent import Agent
    from thinksearch.evaluate.agentic import agent_settings, base_record, run_agent

    warm_up(engine)
    agent = Agent(engine, SameResults(), agent_settings(cfg))
    records: list[dict] = []
    t0, c0 = time.perf_counter(), time.process_time()
    run_agent(agent, items, lambda it: base_record(it, "bench"), cfg.max_new_tokens, 4 * cfg.batch_size, records.extend)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    tokens = sum(r["completion_tokens"] for r in records)
    rounds = sum(len(r["agent"]["rounds"]) for r in records)
    return {r["id"]: r for r in records}, {
        "engine": engine.name, "questions": len(records), "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
        "completion_tokens": tokens, "rounds": rounds,
        "searches": sum(len(r["agent"]["searches"]) for r in records),
        "tokens_per_s": round(tokens / seconds, 2), "questions_per_min": round(60 * len(records) / seconds, 2),
    }


def decisions(rec: dict) -> dict[str, bool]:
    """The first turn's two decisions, as the evaluation's metrics read them."""
    from thinksearch.evaluate.metrics import question_flags

    f = question_flags(rec["type"], rec["output"])
    return {"search": bool(f["did_search"]), "thinking": bool(f["tag_thinking"])}


def agreement(items: list, ours: dict[str, dict], base: dict[str, dict]) -> dict[str, Any]:
    """Same search decision, same thinking decision, both, and identical first turns."""
    from thinksearch.evaluate.answers import proportion

    same = {"search": 0, "thinking": 0, "both": 0, "identical_first_turn": 0}
    rates = {"llamacpp": {"search": 0, "thinking": 0}, "transformers": {"search": 0, "thinking": 0}}
    shown = []
    for it in items:
        a, b = ours[it.id], base[it.id]
        da, db = decisions(a), decisions(b)
        for k in ("search", "thinking"):
            same[k] += da[k] == db[k]
            rates["llamacpp"][k] += da[k]
            rates["transformers"][k] += db[k]
        same["both"] += da == db
        same["identical_first_turn"] += a["output"] == b["output"]
        if da != db and len(shown) < SHOWN_DISAGREEMENTS:
            shown.append({"id": it.id, "type": it.type, "question": it.question,
                          "llamacpp": {**da, "output": a["output"][:TRUNCATE]},
                          "transformers": {**db, "output": b["output"][:TRUNCATE]}})
    n = len(items)
    return {
        **{k: proportion(v, n) for k, v in same.items()},
        "decision_rates": {e: {k: proportion(v, n) for k, v in r.items()} for e, r in rates.items()},
        "disagreements_shown": shown,
    }


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import torch

    from thinksearch import models
    from thinksearch.config import EvalConfig
    from thinksearch.evaluate.agentic import BatchingEngine, agent_settings
    from thinksearch.engines.llamacpp import LlamaCppEngine
    from thinksearch.gguf_export import base_gguf

    if args.quick:
        base, adapter, like = quick_model(tmp)
        adapter = args.adapter or adapter
    else:
        base, adapter, like = models.DEFAULT_ALIAS, args.adapter, base_gguf(models.DEFAULT_ALIAS)
    items, source = questions(args.questions, args.data)
    cfg = EvalConfig(max_new_tokens=args.max_new_tokens, max_rounds=args.max_rounds, batch_size=BATCH,
                     agent=True, dtype="float32", device="cpu")
    print(f"{base}{' + ' + adapter if adapter else ''}: {len(items)} questions from {source}, "
          f"{cfg.max_new_tokens} new tokens, up to {cfg.max_rounds} rounds, batch {BATCH}", file=sys.stderr)
    resolved = models.resolve(base, adapter, prepare_alias=False)
    # llama.cpp first, each GGUF closed before the next and before transformers loads: one model
    # in memory at a time, as in eval. The transformers half, the slow one, runs once for all qtypes.
    runs: dict[str, tuple[dict, dict]] = {}
    for qtype in args.qtype:
        gguf, made = gguf_for(base, adapter, like, qtype, tmp)
        engine = LlamaCppEngine(gguf, models.load_tokenizer(resolved), context_length=agent_settings(cfg).context_tokens,
                                parallel=BATCH)
        try:
            recs, ours = run_engine(engine, items, cfg)
        finally:
            engine.close()
        ours.update(gguf=gguf.name, qtype=qtype, made=made, parallel_slots=BATCH, threads="all cores (os.cpu_count())")
        print(f"  llama.cpp {qtype}: {ours}", file=sys.stderr)
        runs[qtype] = recs, ours

    model, tok = models.load(base, adapter, dtype=cfg.dtype, device="cpu")
    engine = BatchingEngine(model, tok, BATCH, continuous=True)
    base_recs, baseline = run_engine(engine, items, cfg)
    baseline.update(dtype=cfg.dtype, batch_size=BATCH, continuous_batching=True, torch_threads=torch.get_num_threads())
    print(f"  transformers: {baseline}", file=sys.stderr)
    del model, engine
    by_qtype = {q: {"ours": ours, "agreement": agreement(items, recs, base_recs)} for q, (recs, ours) in runs.items()}
    return {"base": base, "adapter": adapter, "items": items, "source": source, "max_new_tokens": cfg.max_new_tokens,
            "max_rounds": cfg.max_rounds, "baseline": baseline, "by_qtype": by_qtype}


def save(args: argparse.Namespace, r: dict[str, Any]) -> Path:
    baseline, headline = r["baseline"], r["by_qtype"][args.qtype[0]]
    ours, agree = headline["ours"], headline["agreement"]
    ratio = ours["questions_per_min"] / baseline["questions_per_min"]
    for side in r["by_qtype"].values():
        o = side["ours"]
        o["ratio"] = round(o["questions_per_min"] / baseline["questions_per_min"], 3)
        o["cpu_ratio"] = round(baseline["cpu_seconds"] / o["cpu_seconds"], 3)
        o["tokens_per_s_ratio"] = round(o["tokens_per_s"] / baseline["tokens_per_s"], 3)
    both = agree["both"]
    ci = both["ci95"] or [0, 0]
    notes = (
        f"Greedy, same {len(r['items'])} questions through the agent loop (thinksearch.evaluate.agentic.run_agent), "
        f"max_new_tokens {r['max_new_tokens']}, up to {r['max_rounds']} rounds, a fixed search backend (the same "
        "passages for every query, so only the models are timed), one after the other in one process. "
        f"ratio = llama.cpp questions/min ({args.qtype[0]} GGUF, {BATCH} parallel slots) / transformers questions/min "
        f"(float32, continuous batching, batch {BATCH}); cpu_ratio the same with process CPU seconds. Each engine "
        "first answers 8 warm-up questions not in the set; llama.cpp keeps its prompt cache on, as thinksearch eval "
        "does (it reuses the shared system prompt and each question's earlier rounds; transformers' continuous "
        "batching shares the system prompt within a call). The engines can take different numbers of rounds and "
        "tokens where their decisions differ: tokens_per_s_ratio is the per-token figure. "
        f"Agreement (first turn): same search and thinking decision on {both['k']}/{both['n']} "
        f"({100 * (both['rate'] or 0):.1f}%, 95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%) at {args.qtype[0]}; "
        "by_qtype has the speed and agreement of every qtype run (--qtype q8_0 f16) against the one transformers run. "
        "The transformers model is the base as thinksearch loads it (the offline alias's GGUF dequantized to float32) "
        "plus the adapter; the llama.cpp model is that, merged and exported at the qtype. Shared 2-core machine: "
        "absolute times are noisy, the ratio is what counts.")
    if args.quick:
        notes = "Tiny random-weight test model: checks the script, measures nothing real. " + notes
    out = args.out or RESULTS / ("eval_engines_quick.json" if args.quick else "eval_engines.json")
    return write_result(
        out.stem, baseline=baseline, ours=ours, ratio=ratio, target=3.0, notes=notes, out_dir=out.parent,
        extra={
            "model": "tiny (random weights)" if args.quick else r["base"],
            "adapter": r["adapter"] and ("tiny random LoRA" if args.quick and not args.adapter else r["adapter"]),
            "questions": len(r["items"]), "question_source": r["source"],
            "question_types": {t: sum(i.type == t for i in r["items"]) for t in ("thinking", "search")},
            "max_new_tokens": r["max_new_tokens"], "max_rounds": r["max_rounds"], "qtype": args.qtype[0],
            "by_qtype": r["by_qtype"],
            "agreement": agree, "agreement_target": 0.95,
            "agreement_meets_target": (both["rate"] or 0) >= 0.95,
        },
    )


def main(argv: list[str] | None = None) -> Path:
    from thinksearch.gguf_cache import QTYPE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny in-process model and adapter: checks the script, measures nothing real")
    ap.add_argument("--questions", type=int, default=None, help="default: all of --data (--quick: 16)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="per round; default 512 as thinksearch eval (--quick: 8)")
    ap.add_argument("--max-rounds", type=int, default=None, help="agent rounds per question; default 3 as thinksearch eval (--quick: 2)")
    ap.add_argument("--adapter", default=None, help="LoRA adapter directory on the base; default: the base alone (--quick: a tiny random one)")
    ap.add_argument("--qtype", choices=("q8_0", "f16"), nargs="+", default=[QTYPE],
                    help="what the GGUF is exported as (gguf_export.export_gguf); several: each runs through llama.cpp against "
                         "one transformers run, the first gives the headline ratio and agreement")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "eval" / "test.jsonl")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/eval_engines.json; --quick: eval_engines_quick.json)")
    args = ap.parse_args(argv)
    args.questions = args.questions or (16 if args.quick else None)
    args.max_new_tokens = args.max_new_tokens or (8 if args.quick else 512)
    args.max_rounds = args.max_rounds or (2 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="bench-eval-engines-") as tmp:
        return save(args, measure(args, Path(tmp)))


if __name__ == "__main__":
    main()
