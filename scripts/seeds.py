"""One recipe, several training seeds, the whole eval set: the figures the README's seed table shows.

At the quickstart's size (about 100 rows, a few dozen optimizer steps) two trainings that differ
only in their seed can land on opposite sides of the search decision, so a recipe is judged by
the mean and the range over seeds, each seed's figure with its 95% interval, never by one run.

Run as::

    python scripts/seeds.py configs/quickstart.yaml --seeds 42 1 2 --out runs/seeds/quickstart
    python scripts/seeds.py configs/quickstart.yaml --out runs/seeds/lr1e-4 --set train.learning_rate=1e-4

``--set`` takes the same KEY=VALUE overrides as ``thinksearch run``. What goes under ``--out``:

- ``data/``: a run directory holding the recipe's rows, synthesized once (``synth.seed``) and
  copied into every seed's directory, so seeds differ in training only;
- ``seed<N>/``: a ``thinksearch run`` directory per training seed (``train.seed = N``): adapter
  (with its calibrated decision shift, where the rows have decision lines), model.gguf, and the
  tuned model's evaluation on the whole eval file;
- ``base/``: the base model's evaluation, once (greedy answers do not depend on the training seed);
- ``seeds.json`` (or ``--json``): every seed's figures with counts and intervals, and per figure
  the mean, the range and the pooled count over seeds; the same table is printed as Markdown.

Every part resumes: rerun the same command after an interruption and finished stages are skipped.
Cost on 2 CPU cores with configs/quickstart.yaml (measured): the synthesis once (20-30 min),
then per seed training 17-19 min, export under a minute and 240 questions through llama.cpp
14-16 min; the base evaluation once, 7 min.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from thinksearch import config, pipeline  # noqa: E402
from thinksearch.config import RunConfig  # noqa: E402
from thinksearch.evaluate.answers import proportion  # noqa: E402
from thinksearch.evaluate.decision import POLICY_ROWS  # noqa: E402
from thinksearch.files import read_json, write_json_atomic  # noqa: E402

# The synthesized rows a seed's run directory gets from data/ (the synth stage then has nothing to do).
DATA_FILES = ("data.jsonl", "data.stats.json", "data.failures.jsonl", "data.report.md")
# Issue 20's bar for the first seed (the other seeds: recall >= 0.85, false searches <= 0.08).
TARGETS = {
    "fresh_data_recall": (">=", 0.90),
    "reasoning_false_search": ("<=", 0.05),
    "knowledge_wrong_unsearched": ("<=", 0.10),
    "undecided": ("<", 0.05),
}
FIGURES = {**dict(POLICY_ROWS), **pipeline.ANSWER_FIGURES}


def recipe(config_path: str, sets: Sequence[str], run_dir: Path, **fields: Any) -> RunConfig:
    """The recipe's RunConfig for one directory: the YAML, whole-eval-set defaults, the --set overrides, then ``fields``."""
    data = config.load_yaml(config_path)
    # The whole eval file unless --set says otherwise: 30 + 30 sampled questions move a rate by +-18 points.
    data = config.merge(data, {"eval": {"limit_per_type": None, "gold_only": False}})
    data = config.merge(data, config.parse_set(list(sets)))
    return config.from_dict(RunConfig, config.merge(data, {"run_dir": str(run_dir), **fields}))


def run_seeds(config_path: str, seeds: Sequence[int], out: Path, sets: Sequence[str] = (),
              base: bool = True, say: Any = print, progress: bool = True) -> dict[str, Any]:
    """Synthesize once, train and evaluate once per seed, evaluate the base once; return the figures."""
    from thinksearch.evaluate import evaluate

    data_cfg = recipe(config_path, sets, out / "data", stages=["index", "synth"])
    say(f"== data ({data_cfg.run_dir}) ==")
    pipeline.run(data_cfg, say=say, progress=progress)
    rows = out / "data" / "data.jsonl"
    if not rows.is_file():
        raise SystemExit(f"{rows}: the synthesis did not finish; rerun the same command to resume")
    for seed in seeds:
        run_dir = out / f"seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in DATA_FILES:
            if (out / "data" / name).is_file() and not (run_dir / name).exists():
                shutil.copy2(out / "data" / name, run_dir / name)
        say(f"== seed {seed} ({run_dir}) ==")
        seed_cfg = recipe(config_path, sets, run_dir, compare_base=False, train={"seed": seed})
        summary = pipeline.run(seed_cfg, say=say, progress=progress)
        if not (run_dir / "eval" / "report.json").is_file():
            raise SystemExit(f"seed {seed} stopped before its evaluation ({summary.get('stages')}); rerun to resume")
    if base:
        planned, _ = pipeline.plan(data_cfg)
        say("== base ==")
        evaluate(dataclasses.replace(planned.eval, models=[planned.eval.models[0]], output_dir=str(out / "base")),
                 progress=progress, log=say)
    return collect(out, seeds, {"config": config_path, "sets": list(sets)})


def _model_metrics(report_path: Path, name: str) -> Mapping[str, Any] | None:
    report = read_json(report_path) or {}
    return next((m["metrics"] for m in report.get("models", []) if m["name"] == name), None)


def _figures(metrics: Mapping[str, Any]) -> dict[str, Any]:
    both = {**(metrics.get("policy") or {}), **(metrics.get("answers") or {})}
    return {k: both[k] for k in FIGURES if both.get(k) and both[k].get("n")}


def collect(out: Path, seeds: Sequence[int], recipe_info: Mapping[str, Any]) -> dict[str, Any]:
    """Read every seed's report back from disk and aggregate it (what ``seeds.json`` holds)."""
    per_seed: dict[str, dict[str, Any]] = {}
    runs: dict[str, Any] = {}
    for seed in seeds:
        run_dir = out / f"seed{seed}"
        metrics = _model_metrics(run_dir / "eval" / "report.json", "tuned")
        if metrics is None:
            raise SystemExit(f"{run_dir}/eval/report.json: no evaluation of the tuned model yet")
        per_seed[str(seed)] = _figures(metrics)
        summary = read_json(run_dir / pipeline.SUMMARY_JSON) or {}
        runs[str(seed)] = {"run_dir": str(run_dir), "train": summary.get("train"),
                           "decision_shift": (summary.get("calibrate") or {}).get("shift"),
                           "minutes": {s: round(v.get("seconds", 0) / 60, 1) for s, v in summary.get("stages", {}).items()}}
    base_metrics = _model_metrics(out / "base" / "report.json", "base")
    base = _figures(base_metrics) if base_metrics else {}
    figures: dict[str, Any] = {}
    for key, label in FIGURES.items():
        values = {s: f[key] for s, f in per_seed.items() if key in f}
        if not values:
            continue
        rates = [v["rate"] for v in values.values()]
        entry: dict[str, Any] = {
            "label": label,
            "per_seed": values,
            "mean": sum(rates) / len(rates), "min": min(rates), "max": max(rates),
            # Every seed's answers pooled: the interval of the recipe's rate, seeds and questions together.
            "pooled": proportion(sum(v["k"] for v in values.values()), sum(v["n"] for v in values.values())),
            "base": base.get(key),
        }
        if key in TARGETS:
            op, bound = TARGETS[key]
            entry["target"] = f"{op} {bound}"
            entry["seeds_meeting_target"] = sum(_meets(v["rate"], op, bound) for v in values.values())
        figures[key] = entry
    rows = out / "data" / "data.jsonl"
    # Which rows every seed trained on: the table is only reproducible from the same file.
    data = {"path": str(rows), "sha256": hashlib.sha256(rows.read_bytes()).hexdigest()} if rows.is_file() else None
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **recipe_info, "data": data,
            "seeds": [int(s) for s in per_seed], "figures": figures, "runs": runs}


def _meets(rate: float, op: str, bound: float) -> bool:
    return {">=": rate >= bound, "<=": rate <= bound, "<": rate < bound}[op]


def _cell(p: Mapping[str, Any] | None) -> str:
    if not p:
        return "–"
    lo, hi = p["ci95"]
    return f"{p['k']}/{p['n']} ({100 * p['rate']:.0f}%, {100 * lo:.0f}–{100 * hi:.0f})"


def markdown(result: Mapping[str, Any]) -> str:
    """The seed table: one row per figure, one column per seed, then mean [range], pooled, base and target."""
    seeds = [str(s) for s in result["seeds"]]
    head = ["figure", *(f"seed {s}" for s in seeds), "mean [min–max]", "pooled", "base", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in result["figures"].values():
        # A tag in a label is code, or Markdown would read </thinking> as HTML and hide it.
        cells = [re.sub(r"(</?\w+>)", r"`\1`", f["label"]), *(_cell(f["per_seed"].get(s)) for s in seeds),
                 f"{100 * f['mean']:.0f}% [{100 * f['min']:.0f}–{100 * f['max']:.0f}]", _cell(f["pooled"]),
                 _cell(f["base"]), f.get("target", "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default="configs/quickstart.yaml", help="the recipe: a `thinksearch run` YAML")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2], help="training seeds (default: 42 1 2)")
    ap.add_argument("--out", required=True, type=Path, help="folder of the recipe's runs (resumable)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of the recipe, as in `thinksearch run --set` (repeatable)")
    ap.add_argument("--no-base", action="store_true", help="skip the base model's evaluation")
    ap.add_argument("--json", type=Path, help="where the figures go (default: OUT/seeds.json)")
    ap.add_argument("--collect-only", action="store_true", help="only read the finished runs under --out and write the JSON")
    ap.add_argument("--no-progress", action="store_true", help="plain progress lines instead of bars (for logs)")
    args = ap.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        ap.error(f"--seeds: each seed once, got {args.seeds}")
    if args.collect_only:
        result = collect(args.out, args.seeds, {"config": args.config, "sets": args.set})
    else:
        result = run_seeds(args.config, args.seeds, args.out, args.set, base=not args.no_base,
                           progress=not args.no_progress)
    path = args.json or args.out / "seeds.json"
    write_json_atomic(path, result)
    print(markdown(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
