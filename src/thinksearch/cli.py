"""The ``thinksearch`` command line: parses flags and calls the package's functions.

Run as: ``thinksearch --help``. Each subcommand's logic lives in its module; heavy imports
(torch, transformers) happen inside the functions, so ``--help`` answers instantly.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Callable, Sequence

from thinksearch import __version__
from thinksearch import config
from thinksearch.config import (AgentConfig, EvalConfig, RunConfig, SearchConfig, ServeConfig, SynthConfig,
                                TrainConfig, add_flags, build, overrides_from_args)
from thinksearch.errors import ThinksearchError

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.agent import Agent


def _models(args: argparse.Namespace) -> int:
    from thinksearch import models

    if args.models_command == "list":
        rows = models.list_models()
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
            return 0
        from rich.console import Console

        from thinksearch.terminal import print_models

        print_models(rows, Console())
        return 0
    # prepare
    for alias in args.alias:
        if alias in models.OFFLINE_MODELS and not models.is_prepared(alias):
            print(f"preparing {alias}: assemble, verify, convert (about a minute, once) …", file=sys.stderr)
        path = models.prepare(alias, force=args.force)
        print(path)
    return 0


# ---- index (search) ------------------------------------------------------------------


def _index(args: argparse.Namespace) -> int:
    if args.index_command == "build":
        from thinksearch.search.local import build_index

        over = {k: v for k, v in (("index", args.out), ("tokenizer", args.tokenizer),
                                  ("passage_chars", args.passage_chars)) if v is not None}
        cfg = build(SearchConfig, args.config, "search", over)
        report = build_index(args.corpus, cfg.index, tokenizer=cfg.tokenizer,
                             passage_chars=cfg.passage_chars, progress=sys.stderr.isatty())
        print("\n".join(report.summary()))
        return 0
    # search: show the tool turn exactly as a model would get it (or the raw results as JSON)
    from thinksearch import format as fmt
    from thinksearch.search.local import LocalBackend

    if args.k <= 0:
        raise ThinksearchError(f"-k must be > 0, got {args.k}")
    cfg = SearchConfig()
    results = LocalBackend(args.index, snippet_chars=cfg.max_result_chars).search(args.query, args.k)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], ensure_ascii=False, indent=2))
    else:
        print(fmt.render_results(results, cfg.max_result_chars, cfg.max_total_chars))
    return 0


# ---- synth ---------------------------------------------------------------------------


def _synth(args: argparse.Namespace) -> int:
    from thinksearch.synth import synthesize

    cfg = build(SynthConfig, args.config, "synth", overrides_from_args(args, SynthConfig))
    if args.report_only:
        return _synth_report(cfg)
    stats = synthesize(cfg, progress=not args.no_progress)
    from rich.console import Console

    Console().print(stats.table())
    if stats.exhausted:
        print(f"warning: the {' and '.join(stats.exhausted)} pool ran out before the requested count", file=sys.stderr)
    return 0


def _synth_report(cfg: SynthConfig) -> int:
    from pathlib import Path

    from thinksearch.synth.report import pool_categories, write_data_report

    if not Path(cfg.output).is_file():  # most likely a wrong --output / config: say so, not "no rows"
        raise ThinksearchError(f"data file not found: {cfg.output} (pass the synth run's --output or --config)")
    path = write_data_report(cfg.output, pool_categories({"thinking": cfg.thinking_questions,
                                                          "search": cfg.search_questions}))
    print(f"wrote {path}")
    return 0


# ---- train / merge -------------------------------------------------------------------


def _train(args: argparse.Namespace) -> int:
    from thinksearch import train

    cfg = train.resolve_config(args.config, overrides_from_args(args, TrainConfig), resume=args.resume)
    result = train.train(cfg, resume=args.resume, overwrite=args.overwrite)
    train.end_process_group()
    if result.is_main:
        print(train.summary(result))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from thinksearch import train

    print(train.merge(args.adapter, args.out, base=args.base, dtype=args.dtype, overwrite=args.overwrite))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from thinksearch import models, steer

    if args.per_kind <= 0:
        raise ThinksearchError(f"--per-kind must be > 0, got {args.per_kind}")
    adapter = Path(args.adapter)
    model = args.model or models.adapter_base(adapter)
    items = steer.calibration_items(args.pools, args.data, args.per_kind, seed=args.seed)
    record = steer.calibrate(adapter, model, items, args.per_kind, note=lambda m: print(m, file=sys.stderr))
    print(f"decision shift {steer.describe(record)}")
    print(adapter / steer.DECISION_FILE)
    return 0


# ---- ask / chat / serve --------------------------------------------------------------


def _agent_config(args: argparse.Namespace) -> AgentConfig:
    return build(AgentConfig, args.config, "agent", overrides_from_args(args, AgentConfig))


def _load_agent(cfg: AgentConfig) -> "Agent":
    from rich.console import Console

    from thinksearch.agent import load_agent, pick_engine

    err = Console(stderr=True)
    if sys.stderr.isatty():
        err.print(f"loading {cfg.model} ({pick_engine(cfg)} engine) …", style="dim", markup=False)
    return load_agent(cfg, warn=lambda m: err.print(f"warning: {m}", style="yellow", markup=False))


def _ask(args: argparse.Namespace) -> int:
    from rich.console import Console

    from thinksearch import terminal

    question = sys.stdin.read() if args.question == "-" else args.question
    if not question.strip():
        raise ThinksearchError("the question is empty")
    agent = _load_agent(_agent_config(args))
    try:
        terminal.ask(agent, question.strip(), Console(), as_json=args.json)
    finally:
        agent.close()
    return 0


def _chat(args: argparse.Namespace) -> int:
    from rich.console import Console

    from thinksearch import terminal

    agent = _load_agent(_agent_config(args))
    try:
        terminal.chat(agent, Console())
    finally:
        agent.close()
    return 0


def _export_gguf(args: argparse.Namespace) -> int:
    from thinksearch.gguf_export import export_gguf

    out = export_gguf(args.model, args.out, like=args.like, adapter=args.adapter, qtype=args.qtype,
                      progress=sys.stderr.isatty())
    print(out)
    print(f"run it with llama.cpp: thinksearch ask --model {out} \"…\"  (or llama-server -m {out} --jinja)\n"
          f"with Ollama: cd {out.parent} && ollama create thinksearch -f Modelfile && ollama run thinksearch", file=sys.stderr)
    return 0


def _export_data(args: argparse.Namespace) -> int:
    from thinksearch.exports import export_data

    result = export_data(args.data, args.out, args.format, skip_bad=args.skip_bad_rows)
    for note in result.skipped:
        print(f"skipped {note}", file=sys.stderr)
    print(f"exported {result.rows} rows ({args.format}):")
    for f in result.files:
        print(f"  {f}")
    return 0


def _view(args: argparse.Namespace) -> int:
    from thinksearch.view import build_view

    print(build_view(args.run_dir, args.out))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from thinksearch.serve import serve

    scfg = build(ServeConfig, args.config, "serve", overrides_from_args(args, ServeConfig))
    serve(_agent_config(args), scfg, say=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


# ---- eval ----------------------------------------------------------------------------


def _eval(args: argparse.Namespace) -> int:
    from thinksearch.evaluate import evaluate, percent

    conf = build(EvalConfig, args.config, "eval", overrides_from_args(args, EvalConfig))
    report = evaluate(conf, progress=not args.no_progress, log=lambda msg: print(msg, file=sys.stderr))
    for m in report["models"]:
        cats = m["metrics"]["categories"]
        d = m["metrics"]["decision"]["any"]
        print(f"{m['name']}: thinking {cats['thinking']['tag_hit']}/{cats['thinking']['n']} "
              f"({percent(cats['thinking']['tag_hit_rate'])}), search {cats['search']['tag_hit']}/{cats['search']['n']} "
              f"({percent(cats['search']['tag_hit_rate'])}), search F1 {percent(d['f1'])}, "
              f"false search {percent(d['false_search_rate'])}")
    out = conf.output_dir.rstrip("/")
    print(f"reports: {out}/report.json {out}/report.md {out}/report.png")
    return 0


# ---- run -----------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from thinksearch import pipeline

    data = config.load_yaml(args.config)
    data = config.merge(data, config.parse_set(args.set))
    if args.run_dir:
        data["run_dir"] = args.run_dir
    cfg = config.from_dict(RunConfig, data)
    summary = pipeline.run(cfg, progress=not args.no_progress)
    pipeline.print_summary(summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thinksearch",
        description="Teach a small chat model to think in <thinking> tags and to call a search tool.",
    )
    parser.add_argument("--version", action="version", version=f"thinksearch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list and prepare offline models")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    pl = msub.add_parser("list", help="show the offline aliases and whether they are prepared")
    pl.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pp = msub.add_parser("prepare", help="assemble, verify and convert an offline model (once)")
    pp.add_argument("alias", nargs="+", help="offline alias, e.g. qwen2.5-coder-0.5b-instruct")
    pp.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    p.set_defaults(func=_models)

    # index (search)
    p = sub.add_parser("index", help="build and try the local search index (SQLite FTS5)")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    pb = isub.add_parser("build", help="index .jsonl/.md/.txt files and folders (incremental on rebuild)")
    pb.add_argument("corpus", nargs="+", help="files or folders of .jsonl, .md, .txt")
    pb.add_argument("--out", help="index file to create or update (default: search.index of --config, else index.sqlite)")
    pb.add_argument("--tokenizer", choices=["auto", "jieba", "bigram"],
                    help="word splitting for Chinese: jieba (thinksearch[jieba]) or character bigrams; "
                         "auto = jieba if installed (an existing index keeps its own)")
    pb.add_argument("--passage-chars", type=int, help="cut longer documents into passages of this size (default 800, or what an existing index uses)")
    pb.add_argument("--config", help="YAML config whose search section gives the defaults")
    ps = isub.add_parser("search", help="query an index; prints what a model would see")
    ps.add_argument("index", help="index file built by `thinksearch index build`")
    ps.add_argument("query", help="search words, e.g. \"北京 天气\"")
    ps.add_argument("-k", type=int, default=5, help="number of results (default 5)")
    ps.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_index)

    # synth
    p = sub.add_parser("synth", help="write SFT rows with a teacher model (stage 1; resumable)",
                       description="Question pools → teacher → quality-gated SFT rows (JSONL). "
                       "Rerunning the same command resumes where it stopped.")
    p.add_argument("--config", metavar="YAML", help="YAML file with a 'synth:' section; flags override it")
    p.add_argument("--no-progress", action="store_true", help="plain progress lines every 30 s instead of a bar (for logs)")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild <output>.report.md from the rows already written (no teacher is started)")
    add_flags(p, SynthConfig)
    p.set_defaults(func=_synth)

    # train / merge
    p = sub.add_parser(
        "train", help="fit a LoRA adapter on synthesized rows",
        description="Fit a LoRA adapter on synthesized rows (loss on the assistant's tokens only). "
                    "Scale out with: accelerate launch -m thinksearch train ...")
    p.add_argument("--config", help="YAML config file (its train: section); flags override it")
    add_flags(p, TrainConfig)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output-dir from its newest whole checkpoint (its saved settings apply)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --output-dir")
    p.set_defaults(func=_train)

    p = sub.add_parser("merge", help="fold a LoRA adapter into its base model (a plain transformers model directory)")
    p.add_argument("adapter", help="adapter directory (the output directory of thinksearch train)")
    p.add_argument("--out", required=True, help="directory to write the merged model to")
    p.add_argument("--base", help="base model reference (default: the one recorded in the adapter)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="dtype of the saved weights (auto: the base model's own)")
    p.add_argument("--overwrite", action="store_true", help="replace a merged model already in --out")
    p.set_defaults(func=_merge)

    p = sub.add_parser("calibrate", help="choose a tuned adapter's search-decision shift on held-out pool questions",
                       description="Probe the adapter at its decision line on pool questions it was not trained on, "
                                   "pick the shift with the best fresh-data recall minus reasoning false searches, and "
                                   "write ADAPTER/decision.json, which eval, ask, chat and serve then apply.")
    p.add_argument("adapter", help="adapter directory trained on rows with decision lines (synth.decision_line)")
    p.add_argument("--data", required=True, nargs="+", help="the training rows: their questions are left out")
    p.add_argument("--pools", nargs="+", default=["data/questions/search.jsonl", "data/questions/thinking.jsonl"],
                   help="question pools with categories to draw from (default: the shipped ones)")
    p.add_argument("--per-kind", type=int, default=60, help="fresh-data and reasoning questions, each (default: 60)")
    p.add_argument("--model", help="base model reference (default: the one recorded in the adapter)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw from the pools (default: 0)")
    p.set_defaults(func=_calibrate)

    # ask / chat / serve
    p = sub.add_parser("ask", help="answer one question: think, search if needed, answer (streamed)")
    p.add_argument("question", help="the question ('-' reads it from stdin)")
    p.add_argument("--config", help="YAML config; its 'agent' section sets these flags' defaults")
    p.add_argument("--json", action="store_true", help="print the whole result (rounds, searches, tokens, timings) as JSON")
    add_flags(p, AgentConfig)
    p.set_defaults(func=_ask)

    p = sub.add_parser("chat", help="interactive chat with thinking and search (/clear, /quit; Ctrl-C stops an answer)")
    p.add_argument("--config", help="YAML config; its 'agent' section sets these flags' defaults")
    add_flags(p, AgentConfig)
    p.set_defaults(func=_chat)

    p = sub.add_parser("serve", help="OpenAI-compatible server (/v1/chat/completions, /v1/models) on 127.0.0.1")
    p.add_argument("--config", help="YAML config; its 'agent' and 'serve' sections set these flags' defaults")
    add_flags(p, AgentConfig)
    add_flags(p, ServeConfig)
    p.set_defaults(func=_serve)

    p = sub.add_parser("export-gguf", help="write a tuned model (base+adapter or merged) as a GGUF that llama.cpp runs")
    p.add_argument("model", help="model reference: ALIAS+ADAPTER_DIR, an adapter directory, or a merged model directory")
    p.add_argument("--out", required=True, help="the .gguf file to write")
    p.add_argument("--adapter", help="LoRA adapter directory put on MODEL before export")
    p.add_argument("--like", help="the base model's GGUF, whose metadata (tokenizer, chat template) is copied "
                                  "(default: the offline alias's GGUF when MODEL is built on it)")
    p.add_argument("--qtype", choices=["q8_0", "f16", "f32"], default="q8_0", help="weight format (default q8_0)")
    p.set_defaults(func=_export_gguf)

    p = sub.add_parser("export-data", help="write training rows for LLaMA-Factory, TRL, OpenAI fine-tuning or the reference layout")
    p.add_argument("data", nargs="+", help="rows from thinksearch synth (JSONL) or the reference layout (JSON array)")
    p.add_argument("--format", required=True, choices=["llamafactory", "trl", "openai", "reference"],
                   help="llamafactory: sharegpt + dataset_info.json; trl: messages + tools (datasets / SFTTrainer); "
                        "openai: chat fine-tuning JSONL; reference: synthetic_data.json")
    p.add_argument("--out", required=True, help="directory to write into (a LLaMA-Factory data dir keeps its other datasets)")
    p.add_argument("--skip-bad-rows", action="store_true", help="leave out rows that break the format (listed) instead of stopping")
    p.set_defaults(func=_export_data)

    p = sub.add_parser("view", help="one static HTML page of a run: training rows, base vs tuned eval outputs, loss curve")
    p.add_argument("run_dir", help="a run directory of thinksearch run (data.jsonl, adapter/, eval/)")
    p.add_argument("--out", help="the HTML file to write (default: RUN_DIR/view.html)")
    p.set_defaults(func=_view)

    # eval
    p = sub.add_parser("eval", help="evaluate models: tag hit rates, search decisions, call validity, reports")
    p.add_argument("--config", metavar="YAML", help="config file; its eval: section sets the defaults")
    add_flags(p, EvalConfig)
    p.add_argument("--model", dest="models", action="append", default=argparse.SUPPRESS, metavar="NAME=REF",
                   help="a model to evaluate (repeat for several); REF+ADAPTER_DIR adds a LoRA adapter")
    p.add_argument("--no-progress", action="store_true", help="plain progress lines every 30 s instead of a bar (for logs)")
    p.set_defaults(func=_eval)

    # run
    p = sub.add_parser("run", help="the main job: index → synth → train → eval in one resumable run directory")
    p.add_argument("config", nargs="?", default="configs/quickstart.yaml",
                   help="YAML with the run's fields and one section per stage (default: configs/quickstart.yaml)")
    p.add_argument("--run-dir", help="override run_dir from the YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any field, e.g. --set train.epochs=1 --set synth.num_search=20 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="plain progress lines every 30 s instead of bars (for logs)")
    p.set_defaults(func=_run)


    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ThinksearchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
