"""Measurement of the search rows' relevance gate on the shipped corpus (issue 19, part 4).

Every question of the training search pool (data/questions/search.jsonl) is searched, as its
own query, in a local index of the shipped corpus (data/corpus/snapshot.jsonl), k results as
the quickstart asks for. Counted per category: questions with at least one result, and
questions with at least one result the gate (:mod:`thinksearch.synth.relevance`) keeps.
baseline = every result counts as relevant (the synth before the gate); ours = the gate. The
"ratio" is the share of questions that keep a relevant result under the gate (how many search
rows can be grounded rather than abstain). Both word splitters are measured (jieba when
rjieba is installed, and the bigram fallback), and a few thresholds around the default, with
cases on both sides printed for reading; so is the rule without its proper-noun check, with
the cases that check drops.

Run as: ``python bench/bench_relevance.py`` (writes bench/results/relevance.json).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from thinksearch.search import segment  # noqa: E402
from thinksearch.search.local import LocalBackend, build_index  # noqa: E402
from thinksearch.synth import relevance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = (0.4, 0.5, 0.6, 0.75, 1.0)


def measure(pool: list[dict], backend: LocalBackend, splitter: str, k: int) -> dict:
    per_threshold = {t: Counter() for t in THRESHOLDS}
    coverage_only: Counter = Counter()  # the rule without its proper-noun check, at the default threshold
    cases = []
    any_result: Counter = Counter()
    for q in pool:
        results = backend.search(q["question"], k)
        any_result[q["category"]] += bool(results)
        terms = relevance.key_terms(q["question"], splitter)
        texts = [relevance.result_text(r) for r in results]
        scores = [relevance.coverage(terms, t) for t in texts]
        named = [relevance.names_found(terms, t) for t in texts]
        for t in THRESHOLDS:
            per_threshold[t][q["category"]] += any(s >= t and ok for s, ok in zip(scores, named)) if terms else bool(results)
        coverage_only[q["category"]] += any(s >= relevance.THRESHOLD for s in scores) if terms else bool(results)
        cases.append({"question": q["question"], "category": q["category"], "terms": [t.word for t in terms],
                      "names": [t.word for t in terms if t.name],
                      "results": [{"title": r.title, "coverage": round(s, 2), "names_found": ok}
                                  for r, s, ok in zip(results, scores, named)]})
    return {"any_result": any_result, "per_threshold": per_threshold, "coverage_only": coverage_only, "cases": cases}


def _relevant(r: dict) -> bool:
    return r["coverage"] >= relevance.THRESHOLD and r["names_found"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=3, help="results per query (the quickstart's search.k)")
    ap.add_argument("--cases", type=int, default=12, help="cases printed on each side")
    args = ap.parse_args()
    pool = [json.loads(line) for line in (ROOT / "data/questions/search.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    n = len(pool)
    cats = Counter(q["category"] for q in pool)
    figures: dict = {}
    kept_cases: dict = {}
    splitters = ["jieba", "bigram"] if segment.jieba_available() else ["bigram"]
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index.sqlite"
        build_index([ROOT / "data/corpus/snapshot.jsonl"], index)
        backend = LocalBackend(index, snippet_chars=200)
        for splitter in splitters:
            m = measure(pool, backend, splitter, args.k)
            figures[splitter] = {
                "questions_with_results": sum(m["any_result"].values()),
                "questions_with_a_relevant_result": {str(t): sum(c.values()) for t, c in m["per_threshold"].items()},
                "without_the_proper_noun_check": sum(m["coverage_only"].values()),
                "by_category": {c: {"questions": cats[c], "with_results": m["any_result"][c],
                                    "relevant": m["per_threshold"][relevance.THRESHOLD][c]} for c in sorted(cats)},
            }
            kept_cases[splitter] = m["cases"]
    main_splitter = splitters[0]
    cases = kept_cases[main_splitter]
    ok = [c for c in cases if any(_relevant(r) for r in c["results"])]
    no = [c for c in cases if not any(_relevant(r) for r in c["results"])]
    # Results the coverage alone would keep and the proper-noun check drops: read them.
    by_names = [c for c in cases if any(r["coverage"] >= relevance.THRESHOLD and not r["names_found"] for r in c["results"])]
    rng = random.Random(0)
    shown = {"kept": rng.sample(ok, min(args.cases, len(ok))), "rejected": rng.sample(no, min(args.cases, len(no))),
             "dropped_by_the_proper_noun_check": rng.sample(by_names, min(args.cases, len(by_names)))}
    for side, picked in shown.items():
        print(f"--- {side}")
        for c in picked:
            print(c["category"], c["question"], c["terms"], c["names"],
                  [(r["title"][:30], r["coverage"], r["names_found"]) for r in c["results"]])
    relevant_n = figures[main_splitter]["questions_with_a_relevant_result"][str(relevance.THRESHOLD)]
    write_result(
        "relevance",
        baseline={"rule": "every result counts as relevant", "questions": n,
                  "questions_with_a_relevant_result": figures[main_splitter]["questions_with_results"]},
        ours={"rule": f"key-term coverage >= {relevance.THRESHOLD} and every proper noun named ({main_splitter} words)",
              "questions": n, "questions_with_a_relevant_result": relevant_n,
              "without_the_proper_noun_check": figures[main_splitter]["without_the_proper_noun_check"],
              "questions_where_the_check_drops_a_result": len(by_names)},
        ratio=relevant_n / n, target=0.5,
        notes=("a measurement, not a speed-up: ratio = share of the training search pool's questions (searched "
               "as their own query) that keep at least one relevant result; the rest would be abstention rows. "
               "target 0.5: at least half the search rows can be grounded on the shipped corpus"),
        extra={"k": args.k, "threshold": relevance.THRESHOLD, "splitters": figures, "cases": shown},
    )


if __name__ == "__main__":
    main()
