"""Write the questions of some categories from a pool that the given data files do not hold yet.

More rows of one kind on top of a finished run (issue 20's "more rows" lever): synthesize rows
from the subset only, then append them to the run's data and train on the whole::

    python scripts/pool_subset.py data/questions/thinking.jsonl --categories knowledge science \\
        --exclude runs/k/data.jsonl --out runs/kx/knowledge_pool.jsonl
    thinksearch synth --config configs/quickstart.yaml --thinking-questions runs/kx/knowledge_pool.jsonl \\
        --num-thinking 48 --num-search 0 --knowledge-probe 4 --output runs/kx/extra.jsonl \\
        --failures runs/kx/extra.failures.jsonl --search-index runs/k/index.sqlite
    cat runs/k/data.jsonl runs/kx/extra.jsonl > runs/kx/data.jsonl

Questions are compared in :func:`thinksearch.questions.key` form, so a row whose question
differs only in spaces or punctuation counts as held. The pool's lines are written unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from thinksearch import questions  # noqa: E402
from thinksearch.errors import ThinksearchError  # noqa: E402
from thinksearch.synth.output import read_rows  # noqa: E402
from thinksearch.synth.verify import question  # noqa: E402


def held(data_files: Sequence[Path]) -> set[str]:
    """The question keys of the rows in these synth output files (their first user turn)."""
    return {questions.key(question(row)) for path in data_files for row in read_rows(path)}


def subset(pool: Path, categories: Sequence[str], exclude: set[str], gold_only: bool = True) -> list[str]:
    """The pool's JSONL lines of these categories whose question is not in ``exclude``
    (with ``gold_only``, only those carrying gold answers: the knowledge probe needs them)."""
    if pool.suffix.lower() != ".jsonl":
        raise ThinksearchError(f"{pool}: expected a .jsonl pool (one question object a line)")
    known = {q.category for q in questions.read_pool(pool)}
    unknown = sorted(set(categories) - known)
    if unknown:
        raise ThinksearchError(f"--categories: {', '.join(unknown)} not in {pool}; it has {', '.join(sorted(c or '-' for c in known))}")
    lines = []
    for line in pool.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        if obj.get("category") in categories and questions.key(obj["question"]) not in exclude \
                and (obj.get("answers") or not gold_only):
            lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pool", type=Path, help="a JSONL question pool (e.g. data/questions/thinking.jsonl)")
    ap.add_argument("--categories", nargs="+", required=True, help="the categories to keep")
    ap.add_argument("--exclude", nargs="*", type=Path, default=[], help="synth output files whose questions to leave out")
    ap.add_argument("--with-ungolded", action="store_true", help="keep questions without gold answers too")
    ap.add_argument("--out", type=Path, required=True, help="where the subset goes (JSONL)")
    args = ap.parse_args(argv)
    try:
        lines = subset(args.pool, args.categories, held(args.exclude), gold_only=not args.with_ungolded)
    except ThinksearchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    print(f"wrote {len(lines)} questions to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
