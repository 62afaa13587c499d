"""How many of a data file's thinking rows end in their gold answer, scored the way the eval scores.

The synth's gold gate keeps a checked row only when its final answer matches gold; this script
checks the written rows again from outside the synth: each thinking row's question is looked up
in the pool file by its text (not through the row's meta), its final answer read from the last
assistant turn with the eval's :func:`thinksearch.scoring.final_answer` (:func:`thinksearch.synth.verify.final`), and compared with
:func:`thinksearch.scoring.matches_gold`. Counts are by ``meta.verified`` (gold, hint, none, or
"not checked" when the synth ran without gold checking) and by category, each with its 95%
interval; the rows that miss gold are listed for reading.

Run as::

    python scripts/check_rows.py runs/quickstart/data.jsonl
    python scripts/check_rows.py runs/hint/data.jsonl --pool data/questions/thinking.jsonl --json out.json
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from thinksearch import questions, scoring  # noqa: E402
from thinksearch.errors import ThinksearchError  # noqa: E402
from thinksearch.evaluate.answers import proportion  # noqa: E402
from thinksearch.files import write_json_atomic  # noqa: E402
from thinksearch.synth.output import read_rows  # noqa: E402
from thinksearch.synth.verify import final  # noqa: E402


def check(rows: Iterable[dict[str, Any]], pool: list[questions.Question]) -> dict[str, Any]:
    """Per ``meta.verified`` label and per category: thinking rows with gold whose final answer holds it."""
    gold = {q.text: q for q in pool if q.checkable}
    right: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_category: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    misses, no_gold = [], 0
    for row in rows:
        if row.get("type") != "thinking":
            continue
        question = questions.normalize(next(m["content"] for m in row["messages"] if m["role"] == "user"))
        q = gold.get(question)
        if q is None:
            no_gold += 1
            continue
        said = final(row)
        ok = scoring.matches_gold(said, q.answers, q.match)
        label = str((row.get("meta") or {}).get("verified") or "not checked")
        for tally in (right[label], right["all"], by_category[q.category or "uncategorised"]):
            tally[0] += ok
            tally[1] += 1
        if not ok:
            misses.append({"question": question, "gold": list(q.answers), "match": q.match, "verified": label,
                           "final": said})
    return {"checkable_rows": {k: proportion(*v) for k, v in sorted(right.items())},
            "by_category": {k: proportion(*v) for k, v in sorted(by_category.items())},
            "rows_without_gold": no_gold, "misses": misses}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="a synth output file (data.jsonl)")
    ap.add_argument("--pool", default=str(ROOT / "data/questions/thinking.jsonl"), help="the thinking pool with gold")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    path = Path(args.data)
    try:
        out = check(read_rows(path), questions.read_pool(args.pool))
    except ThinksearchError as e:
        sys.exit(f"check_rows: {e}")

    def fmt(p: dict[str, Any]) -> str:
        ci = p["ci95"]
        return f"{p['k']}/{p['n']}" + (f" ({p['rate']:.0%}, {ci[0]:.0%}-{ci[1]:.0%})" if ci else "")

    for name in ("checkable_rows", "by_category"):
        print(f"{name}: " + "; ".join(f"{k} {fmt(p)}" for k, p in out[name].items()))
    print(f"thinking rows whose question has no gold: {out['rows_without_gold']}")
    for m in out["misses"]:
        print(f"  miss [{m['verified']}] {m['question']} gold={'/'.join(m['gold'])} final={(m['final'] or '')[:80]!r}")
    if args.json:
        write_json_atomic(Path(args.json), {"data": str(path), **out})


if __name__ == "__main__":
    main()
