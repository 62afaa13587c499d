"""Which way would a tuned adapter decide, without running the evaluation? (issue 20)

With ``synth.decision_line`` every trained trace opens with one of the fixed decision lines
(:data:`thinksearch.format.DECISION_LINES`), and the evaluated model writes one of them
first on every question. The lines share their first tokens and part where they say whether to
search. This script renders each eval question as the evaluation does (the tuned tokenizer's
chat template, the default system prompt), teacher-forces ``<thinking>`` and the shared tokens,
and reads the next-token log-probabilities of the lines' first differing tokens
(:func:`thinksearch.steer.margins`, which ``thinksearch calibrate`` uses too): one forward pass
per question instead of a whole agent loop. The greedy choice between the lines is the probed
decision; ``margin`` is log p(a search line) - log p(the no-search line).

It costs a few minutes per adapter on 2 cores where an evaluation costs 15-30, so a lever (epochs,
learning rate, seeds) can be swept over checkpoints. Where a run directory holds a finished
evaluation (``eval/outputs/tuned.jsonl``), the probe is compared with it question by question: the
line the evaluated model opened with (llama.cpp on the f16 export) and whether it searched.

    python scripts/decision_probe.py runs/quickstart runs/rnd/s2 --out runs/rnd/probe.json

An argument may be an adapter directory or a run directory (its ``adapter`` is used, and its
evaluation compared).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

KINDS = ("fresh_data", "reasoning", "knowledge")


def evaluated(run_dir: Path) -> dict[str, dict] | None:
    """The finished evaluation's verdicts by question id: the line it opened with, and whether it searched."""
    from thinksearch.evaluate.answers import answer_flags
    from thinksearch.evaluate.decision import opening_line

    path = run_dir / "eval" / "outputs" / "tuned.jsonl"
    if not path.is_file():
        return None
    verdicts = {}
    for line in path.open(encoding="utf-8"):
        r = json.loads(line)
        verdicts[r["id"]] = {"opened": opening_line(r), "searched": bool(answer_flags(r)["searched"])}
    return verdicts


def auc(pos: list[float], neg: list[float]) -> float | None:
    """How often a fresh-data question outranks a reasoning one: the ranking, apart from where the line is drawn."""
    if not pos or not neg:
        return None
    return round(sum((x > y) + 0.5 * (x == y) for x in pos for y in neg) / (len(pos) * len(neg)), 4)


def summarize(items, probes: list[dict], verdicts: dict | None, shift: float | None = None) -> dict:
    """Counts of probed search decisions per kind (with Wilson intervals), and agreement with the eval.

    ``search`` is the model's own choice (the likeliest line). With the adapter's calibrated
    ``shift`` (``thinksearch calibrate``), ``shifted`` counts the decisions the evaluation takes
    at this same token: the search lines' summed probability against the no-search line's, the
    shift added (:func:`thinksearch.steer.margin`).

    Kinds are the eval's own (:func:`thinksearch.evaluate.decision.policy_kind`); a thinking
    question of no known category counts only in the agreement, as in the eval's figures.
    """
    from thinksearch.evaluate.answers import proportion
    from thinksearch.evaluate.decision import policy_kind
    from thinksearch.steer import searched

    counts, agree = Counter(), Counter()
    margins: dict[str | None, list[float]] = {k: [] for k in (*KINDS, None)}
    for it, p in zip(items, probes):
        k = policy_kind(it.type, it.category)
        counts[(k, "n")] += 1
        search = max(p["logp"], key=p["logp"].get) != "thinking"
        p["search"] = search
        counts[(k, "search")] += search
        margins[k].append(p["margin"])
        counts[("all", "off_path")] += not p["top_is_a_line"]
        if verdicts and it.id in verdicts:
            v = verdicts[it.id]
            agree["n"] += 1
            agree["line"] += (v["opened"] not in (None, "thinking")) == search
            agree["searched"] += v["searched"] == search
            if k:
                agree["eval_searched_" + k] += v["searched"]
    summary = {k: proportion(counts[(k, "search")], counts[(k, "n")]) for k in KINDS}
    summary["median_margin"] = {k: statistics.median(margins[k]) if margins[k] else None for k in KINDS}
    summary["auc_fresh_vs_reasoning"] = auc(margins["fresh_data"], margins["reasoning"])
    summary["off_path"] = counts[("all", "off_path")]
    if shift is not None:
        scored = [(policy_kind(it.type, it.category), p["margin"]) for it, p in zip(items, probes)]
        summary["shifted"] = {"shift": shift, **{k: proportion(*c) for k, c in searched(scored, shift).items()}}
    if agree:
        summary["agreement"] = dict(agree)
    return summary


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("adapters", nargs="+", type=Path, help="adapter directories (or run directories holding adapter/)")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="the base the adapters were trained on")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "eval" / "test.jsonl", help="the eval set")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, required=True, help="JSON path (rewritten after each adapter)")
    args = ap.parse_args(argv)

    from thinksearch import models
    from thinksearch.evaluate.evalset import load_eval_set
    from thinksearch.steer import margins, saved_shift

    items = list(load_eval_set(args.data).items)
    # The tokenizer is the base model's: an adapter changes no token, and the eval renders with it too.
    base, tok = models.load(args.model)
    result = {"model": args.model, "data": str(args.data), "questions": len(items), "adapters": []}
    for a in args.adapters:
        run_dir = a if (a / "adapter" / "adapter_config.json").is_file() else None
        adapter = a / "adapter" if run_dir else a
        t0 = time.perf_counter()
        model = models.apply_adapter(copy.deepcopy(base), str(adapter)).merge_and_unload().eval()
        probes = margins(model, tok, items, args.batch_size)
        del model
        entry = {"adapter": str(a), "seconds": round(time.perf_counter() - t0, 1),
                 **summarize(items, probes, evaluated(run_dir) if run_dir else None, saved_shift(adapter)),
                 "questions": [{"id": it.id, **p} for it, p in zip(items, probes)]}
        result["adapters"].append(entry)
        print(json.dumps({k: v for k, v in entry.items() if k != "questions"}, ensure_ascii=False), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
