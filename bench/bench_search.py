"""Benchmark of the local search index on a generated Chinese corpus: build time, latency, recall@10.

The corpus is generated here, seeded: 50,000 documents of ~200 characters made of real
Chinese words (two-character words of the jieba dictionary built from the 3,755 common
GB2312 characters, drawn with a Zipf law, with function words and punctuation between them).
For each of ``--queries`` queries, three mid-frequency words are planted in one target
document and pairs of them in six distractor documents; half the queries are the three words
separated by spaces (a keyword query), half are run together in a question
(``关于AB的C是什么``), where word boundaries must be found. recall@10 is the share of queries
whose target is in the top 10.

Both word splitters build an index from the same files and answer the same queries in the
same run: baseline = bigram (no extra package), ours = jieba (the default when rjieba is
installed). Absolute times are noisy on a shared machine; compare the two side by side.

Run as: ``python bench/bench_search.py`` (``--quick`` for a 2,000-document check).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from thinksearch.search import segment  # noqa: E402
from thinksearch.search.local import LocalBackend, build_index  # noqa: E402

TARGETS = {"build_s": 30.0, "median_ms": 5.0}
FUNCTION_WORDS = ["的", "了", "是", "在", "和", "有", "也", "就", "都", "与", "对", "从", "将", "被", "把"]
QUESTION_FORMS = ["关于{a}{b}的{c}是什么", "{a}和{b}对{c}有什么影响", "{a}{b}{c}最新情况", "为什么{a}会{b}{c}"]


def vocabulary(seed: int, n_first: int = 1200) -> list[str]:
    """Two-character dictionary words whose first character is one of ``n_first`` common characters."""
    import rjieba

    chars = []
    for hi in range(0xB0, 0xD8):  # GB2312 level 1: the 3,755 most common characters
        for lo in range(0xA1, 0xFF):
            try:
                chars.append(bytes([hi, lo]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    rng = random.Random(seed)
    firsts = rng.sample(chars, n_first)
    # Words jieba itself keeps whole: real text is mostly such words (rare dictionary entries
    # that jieba splits even alone would make the corpus unlike real text).
    words = sorted({w for a in firsts for b in chars if rjieba.has_word(w := a + b) and rjieba.cut(w) == [w]})
    rng.shuffle(words)  # rank order for the Zipf law
    return words


def generate(n_docs: int, n_queries: int, seed: int, out_dir: Path) -> list[dict]:
    """Write the corpus as JSONL files under ``out_dir``; return the queries with their target ids."""
    import numpy as np

    words = vocabulary(seed)
    rng = np.random.default_rng(seed)
    weights = 1.0 / (np.arange(len(words)) + 10.0)
    weights /= weights.sum()

    per_doc = 84  # 4 title words + 80 body words
    picks = rng.choice(len(words), size=(n_docs, per_doc), p=weights)  # one draw: choice() with p is slow per call
    extras = rng.random((n_docs, per_doc))
    fillers = rng.integers(len(FUNCTION_WORDS), size=(n_docs, per_doc))

    def text(i: int, lo: int, hi: int) -> list[str]:
        out: list[str] = []
        for j in range(lo, hi):
            out.append(words[picks[i, j]])
            if extras[i, j] < 0.25:
                out.append(FUNCTION_WORDS[fillers[i, j]])
            elif extras[i, j] < 0.33:
                out.append("，" if j % 5 else "。")
        return out

    docs = []
    for i in range(n_docs):
        docs.append({"id": i, "title": "".join(text(i, 0, 4)).strip("，。"), "body": text(i, 4, per_doc)})
    # Plant the query words: mid-frequency words (ranks 500–5000), three per target document.
    plan = random.Random(seed + 1)
    queries = []
    used = plan.sample(range(n_docs), n_queries * 7)
    for q in range(n_queries):
        a, b, c = (words[r] for r in plan.sample(range(500, min(5000, len(words))), 3))
        target, distractors = used[q * 7], used[q * 7 + 1 : q * 7 + 7]
        for doc_id, planted in [(target, (a, b, c))] + [(d, plan.sample((a, b, c), 2)) for d in distractors]:
            body = docs[doc_id]["body"]
            for w in planted:
                body.insert(plan.randrange(len(body) + 1), w)
        if q % 2 == 0:
            query = f"{a} {b} {c}"
        else:
            query = plan.choice(QUESTION_FORMS).format(a=a, b=b, c=c)
        queries.append({"query": query, "target": f"doc-{target}"})
    out_dir.mkdir(parents=True, exist_ok=True)
    per_file = 5000
    for f in range(0, n_docs, per_file):
        with open(out_dir / f"part-{f // per_file:03d}.jsonl", "w", encoding="utf-8") as fh:
            for d in docs[f : f + per_file]:
                fh.write(json.dumps({"title": d["title"], "text": "".join(d["body"]),
                                     "url": f"doc-{d['id']}", "source": "bench"}, ensure_ascii=False) + "\n")
    return queries


def measure(corpus: Path, index: Path, tokenizer: str, queries: list[dict]) -> dict:
    report = build_index([corpus], index, tokenizer=tokenizer)
    backend = LocalBackend(index)
    for q in queries[:20]:  # warm the page cache and the word splitter
        backend.search(q["query"], 10)
    times, hits, rr = [], 0, 0.0
    for q in queries:
        t0 = time.perf_counter()
        results = backend.search(q["query"], 10)
        times.append((time.perf_counter() - t0) * 1000)
        rank = next((i for i, r in enumerate(results, 1) if r.url == q["target"]), 0)
        hits += rank > 0
        rr += 1 / rank if rank else 0.0
    times.sort()
    return {
        "tokenizer": tokenizer,
        "build_s": round(report.seconds, 2),
        "passages": report.passages_total,
        "index_mb": round(index.stat().st_size / 2**20, 1),
        "median_ms": round(statistics.median(times), 3),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 3),
        "recall@10": round(hits / len(queries), 4),
        "mrr@10": round(rr / len(queries), 4),
        "queries": len(queries),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="2,000 documents, 100 queries; writes no JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.docs, args.queries = 2000, 100
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        queries = generate(args.docs, args.queries, args.seed, tmp / "corpus")
        print(f"generated {args.docs} documents, {len(queries)} queries in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        baseline = measure(tmp / "corpus", tmp / "bigram.sqlite", "bigram", queries)
        print("bigram:", baseline, file=sys.stderr)
        ours = measure(tmp / "corpus", tmp / "jieba.sqlite", "jieba", queries)
        print("jieba: ", ours, file=sys.stderr)
    if args.quick:
        print(json.dumps({"baseline": baseline, "ours": ours}, ensure_ascii=False, indent=2))
        return 0
    for fig in (baseline, ours):
        fig["meets_targets"] = fig["build_s"] < TARGETS["build_s"] and fig["median_ms"] < TARGETS["median_ms"]
    default = segment.resolve("auto")
    dflt = ours if default == "jieba" else baseline
    # The issue sets absolute targets, not a ratio: `ratio` is the default splitter's headroom
    # against them (>= 1 meets both); the jieba-vs-bigram comparison is under `comparison`.
    headroom = min(TARGETS["build_s"] / dflt["build_s"], TARGETS["median_ms"] / dflt["median_ms"])
    write_result(
        "search", baseline, ours, ratio=headroom, target=1.0,
        notes=("baseline = bigram splitting, ours = jieba splitting, same corpus and queries, same run. "
               f"ratio = headroom of the default splitter ({default}) against the issue's targets: "
               "min(30 s / build_s, 5 ms / median_ms); >= 1 meets both. "
               "Shared 2-core machine: absolute times are noisy, compare the two side by side."),
        extra={
            "targets": TARGETS,
            "default_tokenizer": default,
            "comparison": {
                "query_speed_jieba_over_bigram": round(baseline["median_ms"] / ours["median_ms"], 3),
                "build_speed_jieba_over_bigram": round(baseline["build_s"] / ours["build_s"], 3),
                "recall_jieba_minus_bigram": round(ours["recall@10"] - baseline["recall@10"], 4),
            },
            "corpus": {"docs": args.docs, "queries": args.queries, "seed": args.seed, "chars_per_doc": "~200"},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
