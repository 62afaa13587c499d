"""The ``thinksearch`` command line: parses flags and calls the package's functions.

Run as: ``thinksearch --help``. Each subcommand's logic lives in its module; heavy imports
(torch, transformers) happen inside the functions, so ``--help`` answers instantly.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from thinksearch import __version__
from thinksearch.errors import ThinksearchError


def _models(args: argparse.Namespace) -> int:
    from thinksearch import models

    if args.models_command == "list":
        rows = models.list_models()
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
            return 0
        from rich.console import Console
        from rich.table import Table

        table = Table("alias", "installed", "prepared", "description / path")
        for r in rows:
            where = r["path"] if r["installed"] else f"pip install 'thinksearch[{r['extra']}]'"
            table.add_row(r["alias"], "yes" if r["installed"] else "no", "yes" if r["prepared"] else "no",
                          f"{r['description']}\n{where}".strip())
        Console().print(table)
        return 0
    # prepare
    for alias in args.alias:
        if alias in models.OFFLINE_MODELS and not models.is_prepared(alias):
            print(f"preparing {alias}: assemble, verify, convert (about a minute, once) …", file=sys.stderr)
        path = models.prepare(alias, force=args.force)
        print(path)
    return 0


# ---- index (search) ------------------------------------------------------------------



# ---- synth ---------------------------------------------------------------------------



# ---- train / merge -------------------------------------------------------------------



# ---- ask / chat / serve --------------------------------------------------------------



# ---- eval ----------------------------------------------------------------------------


def _eval(args: argparse.Namespace) -> int:
    from thinksearch import config as cfg
    from thinksearch.config import EvalConfig
    from thinksearch.evaluate import evaluate, percent

    conf = cfg.build(EvalConfig, args.config, "eval", cfg.overrides_from_args(args, EvalConfig))
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


    # synth


    # train / merge


    # ask / chat / serve


    # eval
    from thinksearch.config import EvalConfig, add_flags

    p = sub.add_parser("eval", help="evaluate models: tag hit rates, search decisions, call validity, reports")
    p.add_argument("--config", metavar="YAML", help="config file; its eval: section sets the defaults")
    add_flags(p, EvalConfig)
    p.add_argument("--model", dest="models", action="append", default=argparse.SUPPRESS, metavar="NAME=REF",
                   help="a model to evaluate (repeat for several); REF+ADAPTER_DIR adds a LoRA adapter")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_eval)


    # run


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
