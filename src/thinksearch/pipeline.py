"""The main job: index → synth → train → calibrate → export → eval in one run directory, resumable at every stage.

Each stage is the same function its own subcommand calls (``build_index``, ``synthesize``,
``train``, ``steer.calibrate``, ``cached_gguf``, ``evaluate``); this module only decides where their files go inside the run
directory, skips what is already complete, and summarises the run in one table
(``summary.json`` / ``summary.md`` beside the artifacts).

Run as: ``thinksearch run configs/quickstart.yaml``
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping

from thinksearch.config import RunConfig
from thinksearch.errors import ThinksearchError
from thinksearch.files import jsonl_items, read_json, read_text, write_json_atomic, write_text_atomic

STATE_FILE = "run_state.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Where each stage's artifacts live inside a run directory."""

    root: Path

    @property
    def index(self) -> Path:
        return self.root / "index.sqlite"

    @property
    def search_cache(self) -> Path:
        return self.root / "search_cache.sqlite"

    @property
    def data(self) -> Path:
        return self.root / "data.jsonl"

    @property
    def failures(self) -> Path:
        return self.root / "data.failures.jsonl"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def gguf(self) -> Path:
        """The tuned model as a GGUF (the export stage), for llama.cpp in eval and ask/chat/serve."""
        return self.root / "model.gguf"

    @property
    def gguf_cache(self) -> Path:
        return self.root / "gguf-cache"


def plan(cfg: RunConfig) -> tuple[RunConfig, RunPaths]:
    """The run's stage configs with their file locations moved into the run directory.

    In a run the stages hand files to each other, so their paths are the run's, whatever the
    sections say: the data synth writes is what train reads, the adapter train writes is what
    eval compares with its base.
    """
    paths = RunPaths(Path(cfg.run_dir).expanduser())
    search = cfg.synth.search
    if search.backend == "local" and cfg.corpus:
        search = dataclasses.replace(search, index=str(paths.index))
    if search.cache is None:
        search = dataclasses.replace(search, cache=str(paths.search_cache))
    synth = dataclasses.replace(cfg.synth, output=str(paths.data), failures=str(paths.failures), search=search)
    train = dataclasses.replace(cfg.train, data=[str(paths.data)], output_dir=str(paths.adapter))
    models = [f"base={train.model}"] * cfg.compare_base + [f"tuned={train.model}+{paths.adapter}"]
    # The eval's agent loop searches the run's own index (with the run's result cache), so
    # tuned answers are scored against the same corpus the training rows were grounded in.
    agent = True if cfg.eval.agent is None else cfg.eval.agent
    evaluation = dataclasses.replace(cfg.eval, output_dir=str(paths.eval_dir), models=models, agent=agent, search=search,
                                     gguf_cache=cfg.eval.gguf_cache or str(paths.gguf_cache))
    return dataclasses.replace(cfg, synth=synth, train=train, eval=evaluation), paths


class _State:
    """Per-stage status and wall time, accumulated over every invocation of the run."""

    def __init__(self, root: Path):
        self.path = root / STATE_FILE
        self.data: dict[str, Any] = read_json(self.path) or {"stages": {}}

    def record(self, stage: str, status: str, seconds: float, note: str | None = None) -> None:
        entry = self.data["stages"].setdefault(stage, {"seconds": 0.0})
        entry["seconds"] = round(entry.get("seconds", 0.0) + seconds, 1)
        entry["status"] = status
        entry.pop("note", None)
        if note:
            entry["note"] = note
        write_json_atomic(self.path, self.data)


def run(cfg: RunConfig, say: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Run the pipeline as ``cfg`` says; return (and write) the summary."""
    cfg, paths = plan(cfg)
    paths.root.mkdir(parents=True, exist_ok=True)
    from thinksearch.config import to_dict

    write_json_atomic(paths.root / "run_config.json", to_dict(cfg))
    state = _State(paths.root)
    for stage in STAGES:
        if stage not in cfg.stages:
            continue
        if stage == "index" and not (cfg.synth.search.backend == "local" and cfg.corpus):
            continue
        say(f"── {stage} ──")
        t0 = time.perf_counter()
        status, note = "failed", None
        try:
            result = STAGES[stage](cfg, paths, say, progress)
            status, note = result if isinstance(result, tuple) else (result, None)
        finally:
            state.record(stage, status, time.perf_counter() - t0, note)
        if status == "interrupted":
            say(f"{stage} was interrupted; rerun the same command to resume")
            break
    summary = summarize(paths, state.data)
    write_json_atomic(paths.root / SUMMARY_JSON, summary)
    write_text_atomic(paths.root / SUMMARY_MD, summary_markdown(summary))
    return summary


def _index(cfg: RunConfig, paths: RunPaths, say: Callable[[str], None], progress: bool) -> str:
    from thinksearch.search.local import build_index

    report = build_index(cfg.corpus, paths.index, tokenizer=cfg.synth.search.tokenizer, progress=progress)
    for line in report.summary():
        say(line)
    return "done"


def _synth(cfg: RunConfig, paths: RunPaths, say: Callable[[str], None], progress: bool) -> str:
    from thinksearch.synth import synthesize

    stats = synthesize(cfg.synth, progress=progress)
    if stats.interrupted:
        return "interrupted"
    if not stats.complete:
        short = ", ".join(f"{k} {stats.rows_in_file.get(k, 0)}/{n}" for k, n in stats.target.items())
        if not stats.exhausted:
            raise ThinksearchError(f"synthesis stopped short ({short}); rerun the same command to resume")
        say(f"note: the question pools ran out before the targets ({short}); training on what there is")
    return "done"


def _train(cfg: RunConfig, paths: RunPaths, say: Callable[[str], None], progress: bool) -> str:
    from thinksearch.train import train

    # resume=True: a finished adapter is kept, an interrupted one continues from its checkpoint.
    train(cfg.train, resume=True)
    return "done"


def _calibrate(cfg: RunConfig, paths: RunPaths, say: Callable[[str], None], progress: bool) -> str | tuple[str, str]:
    """ADAPTER/decision.json: the shift of the search decision that eval and ask apply (steer.py)."""
    from thinksearch import steer

    why = None
    if not cfg.train.calibrate_per_kind:
        why = "train.calibrate_per_kind is 0"
    elif not steer.has_decision_lines(paths.data):
        why = "the training rows open with no decision line (synth.decision_line is off)"
    if why:
        say(f"calibrate skipped: {why}; the model decides unshifted")
        return "skipped", why
    record = steer.calibrated(paths.adapter, cfg.train.calibrate_per_kind)
    if record is None:  # none yet, or made for other weights or another size
        items = steer.calibration_items([cfg.synth.search_questions, cfg.synth.thinking_questions], paths.data,
                                        cfg.train.calibrate_per_kind, seed=cfg.train.seed)
        record = steer.calibrate(paths.adapter, cfg.train.model, items, cfg.train.calibrate_per_kind, note=say)
    say(f"decision shift {steer.describe(record)}")
    return "done"


def _export(cfg: RunConfig, paths: RunPaths, say: Callable[[str], None], progress: bool) -> str | tuple[str, str]:
    """model.gguf: the tuned model merged and exported once (the cache), for llama.cpp in eval and ask."""
    from thinksearch import gguf_cache
    from thinksearch.engines.llamacpp import installed
    from thinksearch.files import read_json

    if not installed():
        why = "xllamacpp is not installed, so nothing would run a GGUF; eval and ask use transformers"
        say(f"export skipped: {why}")
        return "skipped", why
    try:
        plan = gguf_cache.cached_gguf(cfg.train.model, paths.adapter, directory=paths.gguf_cache, say=say)
    except ThinksearchError as e:
        why = f"{e}; eval and ask use transformers"
        say(f"export skipped: {why}")
        return "skipped", why
    if (read_json(gguf_cache.fingerprint_path(paths.gguf)) or {}).get("key") != plan.key or not paths.gguf.is_file():
        gguf_cache.publish(plan, paths.gguf)
    say(f"{paths.gguf}: {plan.qtype}, adapter fingerprint {plan.adapter_fingerprint[:12]}")
    return "done"


def _eval(cfg: RunConfig, paths: RunPaths, say: Callable[[str], None], progress: bool) -> str:
    from thinksearch.evaluate import evaluate

    evaluate(cfg.eval, progress=progress, log=say)
    return "done"


STAGES: dict[str, Callable[[RunConfig, RunPaths, Callable[[str], None], bool], Any]] = {
    "index": _index, "synth": _synth, "train": _train, "calibrate": _calibrate, "export": _export, "eval": _eval,
}


# ----------------------------------------------------------------------------- summary


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    # A torn last line is synth's to repair; the summary just skips lines that do not parse.
    return [obj for _, obj in jsonl_items(read_text(path), path, errors="skip") if isinstance(obj, dict)]


def summarize(paths: RunPaths, state: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the run produced, read back from the artifacts on disk (never from memory)."""
    out: dict[str, Any] = {"run_dir": str(paths.root), "stages": (state or {}).get("stages", {})}
    rows = _jsonl(paths.data)
    if rows:
        done = {r.get("id") for r in rows}
        latest: dict[str, dict[str, Any]] = {}
        for f in _jsonl(paths.failures):
            latest[str(f.get("id"))] = f
        rejected = Counter(
            f"{f.get('stage', '?')}/{f.get('reason', '?')}" for i, f in latest.items() if i not in done
        )
        out["synth"] = {
            "rows": dict(Counter(str(r.get("type")) for r in rows)),
            "rejected": dict(rejected.most_common()),
            "search_backends": dict(Counter(str(r.get("meta", {}).get("search_backend")) for r in rows if r.get("type") == "search")),
            "path": str(paths.data),
        }
    metrics = read_json(paths.adapter / "metrics.json")
    if metrics:
        history = [h for h in metrics.get("history", []) if "loss" in h]
        out["train"] = {
            "first_loss": history[0]["loss"] if history else None,
            "last_loss": history[-1]["loss"] if history else None,
            "eval_loss": metrics.get("eval_loss"),
            "steps": metrics.get("global_step"),
            "rows": metrics.get("rows"),
            "seconds": metrics.get("train_seconds"),
            "adapter": str(paths.adapter),
        }
    from thinksearch.steer import DECISION_FILE

    decision = read_json(paths.adapter / DECISION_FILE)
    if isinstance(decision, dict) and "shift" in decision:
        out["calibrate"] = {k: decision.get(k) for k in ("shift", "questions", "unshifted", "shifted")}
    report = read_json(paths.eval_dir / "report.json")  # every output of every model: read it once
    out["engines"] = _engines(paths, out["stages"], report)
    if report:
        out["eval"] = {m["name"]: _model_figures(m["metrics"]) for m in report.get("models", [])}
        out["eval_report"] = str(paths.eval_dir / "report.md")
        out["reference"] = report.get("reference")
    return out


def _engines(paths: RunPaths, stages: Mapping[str, Any], report: Mapping[str, Any] | None) -> dict[str, str]:
    """Which engine ran each stage, read from the run's config, the export's fingerprint and the report."""
    out: dict[str, str] = {}
    run_cfg = read_json(paths.root / "run_config.json") or {}
    if "synth" in stages:
        backend = ((run_cfg.get("synth") or {}).get("teacher") or {}).get("backend")
        out["synth"] = f"teacher: {backend}" + (" (transformers)" if backend == "local" else "")
    if "train" in stages:
        out["train"] = "transformers + PEFT (LoRA)"
    if "export" in stages:
        from thinksearch.gguf_cache import fingerprint_path

        meta = read_json(fingerprint_path(paths.gguf))
        out["export"] = (f"gguf ({meta.get('qtype')}) → {paths.gguf.name}" if isinstance(meta, dict) and paths.gguf.is_file()
                         else f"skipped: {stages['export'].get('note') or 'no model.gguf'}")
    if report:
        out["eval"] = ", ".join(f"{m['name']} {m.get('engine', 'transformers')}" for m in report.get("models", []))
    return out


def _model_figures(m: Mapping[str, Any]) -> dict[str, Any]:
    cats, any_ = m["categories"], m["decision"]["any"]
    think, search = cats["thinking"], cats["search"]
    return {
        "thinking_tag": [think["tag_hit"], think["n"]],
        "search_tag": [search["tag_hit"], search["n"]],
        "false_search_rate": any_["false_search_rate"],
        "missed_search_rate": any_["missed_search_rate"],
        "search_f1": any_["f1"],
        "call_valid": [m["overall"]["call_valid"], m["overall"]["call_attempts"]],
        "thinking_well_formed": [m["overall"]["thinking_well_formed"], m["overall"]["n"]],
        "tokens_per_s": m["speed"]["tokens_per_s"],
        "answers": {k: m.get("answers", {}).get(k) for k in ANSWER_FIGURES},
        "policy": {k: m.get("policy", {}).get(k) for k in POLICY_FIGURES},
    }


# The answer figures the summary prints, in order, with their labels (report.md has them all).
ANSWER_FIGURES = {
    "thinking_accuracy": "thinking answers right (gold)",
    "grounded_answer": "search answers with the key fact",
    "abstention_unanswerable": "abstains when results lack it",
    "abstention_with_answer": "abstains with the key fact in its results",
    "answers_with_unsupported_numbers": "search answers with unsupported numbers",
    "confidently_wrong": "confidently wrong (no search, no abstention)",
}
# The search policy's headline figures (report.md has them all).
POLICY_FIGURES = {
    "fresh_data_recall": "fresh-data questions searched",
    "reasoning_false_search": "reasoning questions searched",
    "knowledge_wrong_unsearched": "knowledge wrong without a search",
    "undecided": "undecided (no search, thinking not closed)",
    "search_line_mismatch": "searches opened with the other kind's line",
}


def _ci(p: Any) -> str:
    """``k/n (rate%, 95% CI lo–hi%)`` of a proportion from the report."""
    if not p or not p.get("n"):
        return "–"
    lo, hi = p["ci95"]
    return f"{p['k']}/{p['n']} ({100 * p['rate']:.1f}%, 95% CI {100 * lo:.0f}–{100 * hi:.0f}%)"


def _frac(pair: Any) -> str:
    if not pair or pair[1] in (0, None):
        return "–"
    k, n = pair
    return f"{k}/{n} ({100 * k / n:.1f}%)"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(what, value) lines of the final table."""
    rows: list[tuple[str, str]] = []
    synth = summary.get("synth")
    if synth:
        rows.append(("rows synthesized", ", ".join(f"{k} {v}" for k, v in sorted(synth["rows"].items()))))
        rej = synth["rejected"]
        rows.append(("rejected (by reason)", ", ".join(f"{k} {v}" for k, v in rej.items()) if rej else "none"))
    tr = summary.get("train")
    if tr:
        loss = f"{tr['first_loss']:.3f} → {tr['last_loss']:.3f}" if tr["first_loss"] is not None else "–"
        if tr.get("eval_loss") is not None:
            loss += f" (holdout {tr['eval_loss']:.3f})"
        rows.append(("training loss", f"{loss}, {tr['steps']} steps"))
    cal = summary.get("calibrate")
    if cal:
        from thinksearch.steer import describe

        rows.append(("decision shift", describe(cal)))
    for name, m in (summary.get("eval") or {}).items():
        rows.append((f"{name}: <thinking> on thinking", _frac(m["thinking_tag"])))
        rows.append((f"{name}: <tool_call> on search", _frac(m["search_tag"])))
        rows.append((f"{name}: false-search / missed-search", f"{_pct(m['false_search_rate'])} / {_pct(m['missed_search_rate'])}"))
        rows.append((f"{name}: valid tool calls", _frac(m["call_valid"])))
        rows.append((f"{name}: well-formed thinking", _frac(m["thinking_well_formed"])))
        for group, figures in (("answers", ANSWER_FIGURES), ("policy", POLICY_FIGURES)):
            for key, label in figures.items():
                if (m.get(group) or {}).get(key):
                    rows.append((f"{name}: {label}", _ci(m[group][key])))
    for stage, engine in (summary.get("engines") or {}).items():
        rows.append((f"engine: {stage}", engine))
    for stage, st in summary.get("stages", {}).items():
        rows.append((f"time: {stage}", f"{st.get('seconds', 0) / 60:.1f} min ({st.get('status')})"))
    return rows


def artifact_paths(summary: Mapping[str, Any]) -> list[str]:
    root = Path(summary["run_dir"])
    candidates = [root / "data.jsonl", root / "data.report.md", root / "data.stats.json", root / "data.failures.jsonl",
                  root / "index.sqlite", root / "adapter", root / "adapter" / "loss.png", root / "model.gguf",
                  root / "eval" / "report.md", root / "eval" / "report.json", root / "eval" / "report.png",
                  root / SUMMARY_MD]
    return [str(p) for p in candidates if p.exists()]


def reference_line(ref: Any) -> str | None:
    """The reference's published figures as a sentence (what the run is compared with).

    >>> reference_line({"label": "reference (published)", "thinking": {"hits": 30, "n": 30}, "search": {"hits": 22, "n": 30}})
    'Compared with reference (published): <thinking> on thinking 30/30 (100.0%), <tool_call> on search 22/30 (73.3%).'
    """
    if not isinstance(ref, Mapping):
        return None
    parts = [f"{tag} on {kind} {_frac([ref[kind].get('hits'), ref[kind].get('n')])}"
             for kind, tag in (("thinking", "<thinking>"), ("search", "<tool_call>")) if isinstance(ref.get(kind), Mapping)]
    label = ref.get("label", "the original recipe")
    return f"Compared with {label}: {', '.join(parts)}." if parts else None


def summary_markdown(summary: Mapping[str, Any]) -> str:
    lines = [f"# thinksearch run: {summary['run_dir']}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(summary)]
    ref = reference_line(summary.get("reference"))
    if ref:
        lines += ["", ref]
    lines += ["", "Artifacts:", ""] + [f"- `{p}`" for p in artifact_paths(summary)]
    return "\n".join(lines) + "\n"


def print_summary(summary: Mapping[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"thinksearch run — {summary['run_dir']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in summary_rows(summary):
        table.add_row(k, v)
    console = Console()
    console.print(table)
    console.print("artifacts:")
    for p in artifact_paths(summary):
        # soft_wrap: a path stays on one line (copyable) however narrow the terminal or log.
        console.print(f"  {p}", soft_wrap=True, markup=False, highlight=False)
