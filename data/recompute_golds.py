"""Recompute every gold answer that code can compute, of the eval set and of the thinking pool,
and report mismatches.

Arithmetic, unit, date and program-output golds are not trusted as typed: each such row has a
function, keyed by the row's ``id``, that derives its accepted answers: ``golds_eval.py`` for
``eval/test.jsonl``, ``golds_thinking.py`` for ``questions/thinking.jsonl``. Python snippets
are taken from the question text itself (the function checks that the snippet is in the
question) and executed, so the gold is what Python prints, not what someone remembers.

A row passes when its ``answers`` and the computed ones are the same set after the scorer's
own normalisation (:func:`thinksearch.scoring.normalize`), so an alias like "周三" for
"星期三" must be computed too; the same holds for ``wrong`` (the other option of a choice),
which a function computes beside the answers or the row must not have. Rows in ``arithmetic``
and ``programming`` must have a function unless :data:`NOT_CODE` says why not. The file is also checked with
:func:`thinksearch.gold.load_gold` (fields, ``match``, corpus passage ids).

Run as: ``PYTHONPATH=src python data/recompute_golds.py [--data data/eval/test.jsonl]
[--pool data/questions/thinking.jsonl]`` (from the repository root; exit status 1 on any mismatch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from thinksearch.errors import ThinksearchError
from thinksearch.gold import load_gold
from thinksearch.scoring import normalize

sys.path.insert(0, str(Path(__file__).parent))  # the gold tables beside this script
import golds_eval  # noqa: E402
import golds_thinking  # noqa: E402
from gold_code import Computed  # noqa: E402

Table = dict[str, Callable[[str], Computed]]

MUST_COMPUTE = ("arithmetic", "programming")


def check(path: str | Path, corpus: str | Path | None, computed: Table, not_code: dict[str, str]) -> list[str]:
    """Problems with the computed golds of a gold file, one line each (empty when all agree).

    ``computed``: row id to the function deriving its answers; ``not_code``: checkable rows of
    ``MUST_COMPUTE`` categories that have no such function, with the reason."""
    try:
        rows = load_gold(path, corpus)
    except ThinksearchError as e:
        return [str(e)]
    problems = []
    ids = {r.get("id") for r in rows}
    for stale in sorted((set(computed) | set(not_code)) - ids):
        problems.append(f"{path}: no row with id {stale!r} (the script names it)")
    for n, row in enumerate(rows, 1):
        rid = row.get("id", f"row {n}")
        if "answers" not in row:
            continue
        fn = computed.get(rid)
        if fn is None:
            if row.get("category") in MUST_COMPUTE and row["type"] == "thinking" and rid not in not_code:
                problems.append(f"{rid}: {row['category']} gold without a recompute function")
            continue
        try:
            derived = fn(row["question"])
        except Exception as e:  # a snippet that no longer runs is a finding, not a crash
            problems.append(f"{rid}: recompute failed: {type(e).__name__}: {e}")
            continue
        answers, wrong = derived if isinstance(derived, tuple) else (derived, [])
        for name, want in (("answers", answers), ("wrong", wrong)):
            have = row.get(name, [])
            if {normalize(a) for a in want} != {normalize(a) for a in have}:
                problems.append(f"{rid}: {name} {have} but code computes {want}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).parent
    parser.add_argument("--data", default=str(here / "eval" / "test.jsonl"), help="the eval set")
    parser.add_argument("--pool", default=str(here / "questions" / "thinking.jsonl"), help="the thinking pool")
    parser.add_argument("--corpus", default=str(here / "corpus" / "snapshot.jsonl"))
    args = parser.parse_args(argv)
    problems = check(args.data, args.corpus, golds_eval.COMPUTED, golds_eval.NOT_CODE)
    problems += check(args.pool, None, golds_thinking.COMPUTED, golds_thinking.NOT_CODE)
    for p in problems:
        print(p)
    n = len(golds_eval.COMPUTED) + len(golds_thinking.COMPUTED)
    print(f"{n} computed golds checked ({len(golds_eval.COMPUTED)} eval, {len(golds_thinking.COMPUTED)} thinking pool), "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
