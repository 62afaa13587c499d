"""How many of a data file's rows agree with the pools' gold, scored the way the eval scores.

The synth's gold gate keeps a checked row only when its final answer matches gold; this script
checks the written rows again from outside the synth: each thinking row's question is looked up
in the pool file by its text (not through the row's meta), its final answer read from the last
assistant turn with the eval's :func:`thinksearch.scoring.final_answer` (:func:`thinksearch.synth.verify.final`), and compared with
:func:`thinksearch.scoring.matches_gold`; a row whose trace computes results must also compute
gold (:func:`thinksearch.synth.verify.derives_gold`). Counts are by ``meta.verified`` (gold, hint, none, or
"not checked" when the synth ran without gold checking) and by category, each with its 95%
interval; the rows that miss gold are listed for reading.

Search rows are checked against the search pool's gold the same way: a question the corpus
answers (``answerable``) should get its key fact or an abstention (the fact was not in what the
search returned), one it cannot answer an abstention (:func:`thinksearch.scoring.abstains`);
anything else, a stated answer without the key fact, is listed as a miss.

Run as::

    python scripts/check_rows.py runs/quickstart/data.jsonl
    python scripts/check_rows.py runs/hint/data.jsonl --pool data/questions/thinking.jsonl --json out.json
    python scripts/check_rows.py runs/quickstart/data.jsonl --search-pool data/questions/search.jsonl
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from thinksearch import questions, scoring  # noqa: E402
from thinksearch.errors import ThinksearchError  # noqa: E402
from thinksearch.evaluate.answers import proportion  # noqa: E402
from thinksearch.files import write_json_atomic  # noqa: E402
from thinksearch.synth.output import read_rows  # noqa: E402
from thinksearch.synth.verify import derives_gold, final, holds_gold, trace  # noqa: E402


def _rows_with_gold(rows: Iterable[dict[str, Any]], kind: str, gold: dict[str, questions.Question]
                    ) -> Iterator[tuple[dict[str, Any], str, questions.Question | None]]:
    """Each row of type ``kind`` with its normalised question and that question's gold (None: none)."""
    for row in rows:
        if row.get("type") == kind:
            question = questions.normalize(next(m["content"] for m in row["messages"] if m["role"] == "user"))
            yield row, question, gold.get(question)


def check(rows: Iterable[dict[str, Any]], pool: list[questions.Question]) -> dict[str, Any]:
    """Per ``meta.verified`` label and per category: thinking rows with gold whose final answer holds it."""
    right: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_category: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    misses, no_gold = [], 0
    for row, question, q in _rows_with_gold(rows, "thinking", {q.text: q for q in pool if q.checkable}):
        if q is None:
            no_gold += 1
            continue
        said = final(row)
        answered, derived = holds_gold(said, q, question), derives_gold(trace(row), q)
        ok = answered and derived
        label = str((row.get("meta") or {}).get("verified") or "not checked")
        for tally in (right[label], right["all"], by_category[q.category or "uncategorised"]):
            tally[0] += ok
            tally[1] += 1
        if not ok:
            misses.append({"question": question, "gold": list(q.answers), "match": q.match, "verified": label,
                           "final": said, "miss": "answer" if not answered else "trace"})
    return {"checkable_rows": {k: proportion(*v) for k, v in sorted(right.items())},
            "by_category": {k: proportion(*v) for k, v in sorted(by_category.items())},
            "rows_without_gold": no_gold, "misses": misses}


def check_search(rows: Iterable[dict[str, Any]], pool: list[questions.Question]) -> dict[str, Any]:
    """Search rows whose question has gold, by what the final answer does: states the key fact,
    abstains, or neither (a miss), split by whether the corpus answers the question."""
    counts: dict[str, int] = defaultdict(int)
    misses = []
    for row, question, q in _rows_with_gold(rows, "search", {q.text: q for q in pool if q.answerable is not None}):
        if q is None:
            counts["without gold"] += 1
            continue
        said = final(row) or ""
        fact = bool(q.answerable) and scoring.matches_gold(said, q.answers, q.match)
        got = "key fact" if fact else "abstains" if scoring.abstains(said) else "miss"
        counts[f"{'answerable' if q.answerable else 'unanswerable'}: {got}"] += 1
        if got == "miss":
            misses.append({"question": question, "gold": list(q.answers) or None, "final": said})
    return {"counts": dict(sorted(counts.items())), "misses": misses}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="a synth output file (data.jsonl)")
    ap.add_argument("--pool", default=str(ROOT / "data/questions/thinking.jsonl"), help="the thinking pool with gold")
    ap.add_argument("--search-pool", default=str(ROOT / "data/questions/search.jsonl"), help="the search pool with gold")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    path = Path(args.data)
    try:
        rows = read_rows(path)
        out = check(rows, questions.read_pool(args.pool))
        out["search"] = check_search(rows, questions.read_pool(args.search_pool))
    except ThinksearchError as e:
        sys.exit(f"check_rows: {e}")

    def fmt(p: dict[str, Any]) -> str:
        ci = p["ci95"]
        return f"{p['k']}/{p['n']}" + (f" ({p['rate']:.0%}, {ci[0]:.0%}-{ci[1]:.0%})" if ci else "")

    for name in ("checkable_rows", "by_category"):
        print(f"{name}: " + "; ".join(f"{k} {fmt(p)}" for k, p in out[name].items()))
    print(f"thinking rows whose question has no gold: {out['rows_without_gold']}")
    for m in out["misses"]:
        print(f"  miss ({m['miss']}) [{m['verified']}] {m['question']} gold={'/'.join(m['gold'])} final={(m['final'] or '')[:80]!r}")
    print("search rows: " + "; ".join(f"{k} {n}" for k, n in out["search"]["counts"].items()))
    for m in out["search"]["misses"]:
        print(f"  miss [search] {m['question']} gold={'/'.join(m['gold'] or ['unanswerable'])} final={m['final'][:80]!r}")
    if args.json:
        write_json_atomic(Path(args.json), {"data": str(path), **out})


if __name__ == "__main__":
    main()
