"""The data report: ``data.report.md`` beside ``data.jsonl``, for a person deciding whether to train on it.

``data.stats.json`` says what one run did; this report says what the whole file holds, so it
is rebuilt from every row of ``data.jsonl`` (a resumed run's report covers the earlier runs'
rows too). It gives:

- rows by type and category;
- verified / hint / unverified shares (``meta.verified``; "not checked" when gold checking was off);
- pass@1 / pass@k per category (``gold`` in ``data.stats.json``: the last run's tries only);
- rejections by reason (every attempt in ``data.failures.jsonl``, and the last run's counts);
- search rows: answers that abstain (:func:`thinksearch.scoring.abstains` on the final answer;
  those the relevance gate had code write, ``meta.answer: abstained``)
  and rows whose reasoning is the code template (:func:`.rows.template_reasoning`), by category;
- 10 rows picked with a fixed seed (the same rows on every rebuild of the same file), in full.

``thinksearch synth`` writes it at the end of every run; to rebuild it alone:
``thinksearch synth --config configs/quickstart.yaml --report-only`` (or call
:func:`write_data_report` with the data file's path).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from thinksearch import scoring
from thinksearch.files import read_json, read_log, write_text_atomic
from thinksearch.synth.output import reference_messages, sibling
from thinksearch.synth.rows import ABSTAINED, TEMPLATE_REPAIR
from thinksearch.synth.verify import UNCATEGORISED, final, question

SAMPLES = 10
SAMPLE_SEED = 0
VERIFIED_LABELS = ("gold", "hint", "none", "not checked")

Categories = Callable[[str, str], "str | None"]
"""``(type, question) → category`` for rows that do not carry ``meta.category`` (older rows)."""


def _read(path: Path) -> list[dict[str, Any]]:
    # A report must never stop a run or a rebuild: an unreadable log counts as empty here.
    try:
        return read_log(path) if path.is_file() else []
    except Exception:  # noqa: BLE001 - corrupt line, permission: the run names those itself
        return []


def _stats(path: Path) -> dict[str, Any]:
    data = read_json(path)
    return data if isinstance(data, dict) else {}


def is_template(row: Mapping[str, Any]) -> bool:
    repairs = ((row.get("meta") or {}).get("gates") or {}).get("repairs") or []
    return any(str(r).startswith(TEMPLATE_REPAIR) for r in repairs)


def verified(row: Mapping[str, Any]) -> str:
    return str((row.get("meta") or {}).get("verified") or "not checked")


def category(row: Mapping[str, Any], categories: Categories | None = None) -> str:
    got = (row.get("meta") or {}).get("category")
    if not got and categories is not None:
        got = categories(str(row.get("type")), question(row))
    return str(got or UNCATEGORISED)


def fence(text: str) -> str:
    """A backtick fence longer than any backtick run in ``text``, so the text cannot close it.

    >>> fence("plain"), fence("a ``` b ```` c")
    ('```', '`````')
    """
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "–"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def sample(rows: Sequence[dict[str, Any]], n: int = SAMPLES, seed: int = SAMPLE_SEED) -> list[int]:
    """Indices of ``n`` rows picked with ``seed``, in file order (the same file gives the same rows)."""
    return sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))


def render_row(row: Mapping[str, Any], number: int, categories: Categories | None = None) -> list[str]:
    """One row in full: each message's role, then its content (tool calls written in) in a fence."""
    meta = row.get("meta") or {}
    label = f"{row.get('type')}, {category(row, categories)}, verified: {verified(row)}"
    if is_template(row):
        label += ", template reasoning"
    out = [f"### {number}. `{row.get('id')}` ({label})", ""]
    if meta.get("search_query"):
        out += [f"Query: {meta['search_query']}", ""]
    for m in reference_messages(row.get("messages", [])):
        f = fence(m["content"])
        out += [f"**{m['role']}**", "", f, m["content"], f, ""]
    return out


def report_markdown(rows: Sequence[dict[str, Any]], stats: Mapping[str, Any], failures: Sequence[Mapping[str, Any]],
                    title: str, categories: Categories | None = None) -> str:
    lines = [f"# Data report: {title}", ""]
    if not rows:
        lines += ["There are no rows in this data file yet.", ""]
    else:
        by_type = Counter(str(r.get("type")) for r in rows)
        lines += [f"{len(rows)} rows: " + ", ".join(f"{n} {t}" for t, n in sorted(by_type.items())) + ".", ""]
        lines += ["## Rows by type and category", ""]
        cats = Counter((str(r.get("type")), category(r, categories)) for r in rows)
        lines += _table(["type", "category", "rows"], [(t, c, n) for (t, c), n in sorted(cats.items())])

        thinking = [r for r in rows if r.get("type") == "thinking"]
        if thinking:
            got = Counter(verified(r) for r in thinking)
            lines += ["## Verification of thinking rows", "",
                      "`meta.verified`: gold (final answer matches gold), hint (reached gold after a hint), "
                      "none (no gold to check), not checked (gold checking was off).", ""]
            lines += _table(["rows", *VERIFIED_LABELS],
                            [[len(thinking)] + [f"{got[k]} ({_pct(got[k], len(thinking))})" for k in VERIFIED_LABELS]])
        search = [r for r in rows if r.get("type") == "search"]
        if search:
            checked = [r for r in search if verified(r) == "gold"]
            grounded = sum((r.get("meta") or {}).get("answer") != ABSTAINED for r in checked)
            lines += ["## Verification of search rows", "",
                      f"{len(checked)} of {len(search)} search rows ({_pct(len(checked), len(search))}) were checked "
                      f"against the pool's gold (`synth.search_gold`): {grounded} state the key fact, "
                      f"{len(checked) - grounded} abstain because the corpus or the results lack it. "
                      "The others rest on the relevance gate alone.", ""]

    gold = stats.get("gold") or {}
    if gold.get("by_category"):
        k = gold.get("k", "k")
        lines += ["## Gold-checked sampling", "", f"pass@1 / pass@{k} per category, of the questions tried in the "
                  "last run (`gold` in data.stats.json; earlier runs' tries are not in it).", ""]
        table = [(c, v.get("tried"), f"{v.get('pass_at_1')} ({_pct(v.get('pass_at_1', 0), v.get('tried', 0))})",
                  f"{v.get('pass_at_k')} ({_pct(v.get('pass_at_k', 0), v.get('tried', 0))})")
                 for c, v in gold["by_category"].items()]
        lines += _table(["category", "tried", "pass@1", f"pass@{k}"], table)
        if gold.get("never_matched"):
            lines += [f"Never matched gold: {', '.join(gold['never_matched'])}.", ""]

    probed = [(r["meta"]["knowledge_probe"], r.get("type")) for r in rows if (r.get("meta") or {}).get("knowledge_probe")]
    if probed:
        lines += ["## Knowledge boundary", "",
                  "Stable-knowledge questions the student answered before their row was written "
                  "(`synth.knowledge_probe`), by how often it was right, and the rows they became: "
                  "a search row where it did not know the answer.", ""]
        got = Counter((p["right"], p["of"], t) for p, t in probed)
        keys = sorted({(right, of) for right, of, _ in got})
        lines += _table(["right", "thinking rows", "search rows"],
                        [(f"{right} of {of}", got[right, of, "thinking"], got[right, of, "search"]) for right, of in keys])
    lines += _rejections(stats, failures)
    search = [r for r in rows if r.get("type") == "search"]
    if search:
        lines += ["## Search rows", "",
                  "Abstaining: the final answer says the results do not hold what was asked (`scoring.abstains`); "
                  "of those, written by code: no result concerned the question (the relevance gate), so the answer "
                  "is the code's abstention naming the query. "
                  "Template: the row's reasoning is the code-written template, not the teacher's.", ""]
        table = []
        for c in sorted({category(r, categories) for r in search}):
            mine = [r for r in search if category(r, categories) == c]
            table.append(_search_line(c, mine))
        if len(table) > 1:
            table.append(_search_line("**all**", search))
        lines += _table(["category", "rows", "abstaining", "of which written by code", "template reasoning"], table)

    if rows:
        picked = sample(rows)
        lines += [f"## {len(picked)} random rows", "",
                  f"Picked with seed {SAMPLE_SEED}: the same file gives the same rows.", ""]
        for n, i in enumerate(picked, 1):
            lines += render_row(rows[i], n, categories)
    return "\n".join(lines).rstrip() + "\n"


def _search_line(name: str, rows: Sequence[dict[str, Any]]) -> list[Any]:
    abstaining = sum(scoring.abstains(final(r)) for r in rows)
    by_code = sum((r.get("meta") or {}).get("answer") == ABSTAINED for r in rows)
    template = sum(is_template(r) for r in rows)
    return [name, len(rows), f"{abstaining} ({_pct(abstaining, len(rows))})", by_code,
            f"{template} ({_pct(template, len(rows))})"]


def _rejections(stats: Mapping[str, Any], failures: Sequence[Mapping[str, Any]]) -> list[str]:
    # data.stats.json only knows the last run; the failures log holds every attempt of every run,
    # so both are shown: a resumed run's counts alone would hide the earlier rejections.
    run = Counter({**(stats.get("rejected") or {}), **(stats.get("failed") or {})})
    logged: Counter = Counter()
    types: dict[str, set[str]] = {}
    transient = set(stats.get("failed") or {})
    for f in failures:
        label = f"{f.get('stage')}/{f.get('reason')}"
        logged[label] += 1
        types.setdefault(label, set()).add(str(f.get("type")))
        if f.get("transient"):
            transient.add(label)
    out = ["## Rejections", ""]
    if not run and not logged:
        return out + ["None recorded.", ""]
    out += ["Every attempt in data.failures.jsonl (all runs), and the last run's counts from data.stats.json. "
            "Transient: a teacher or search error, asked again on a rerun.", ""]
    table = [(label, ", ".join(sorted(types.get(label, ()))), "yes" if label in transient else "no", logged[label], run[label])
             for label in sorted(set(run) | set(logged), key=lambda x: (-logged[x] - run[x], x))]
    return out + _table(["stage/reason", "type", "transient", "in failures file", "last run"], table)


def write_data_report(data_path: str | Path, categories: Categories | None = None) -> Path:
    """Write ``<data>.report.md`` beside ``data_path`` from the whole file and its stats and
    failures siblings; returns its path. A missing or empty data file gives a report saying so."""
    data_path = Path(data_path)
    rows = _read(data_path)
    stats = _stats(sibling(data_path, ".stats.json"))
    failures = _read(sibling(data_path, ".failures.jsonl"))
    dest = sibling(data_path, ".report.md")
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest, report_markdown(rows, stats, failures, data_path.name, categories))
    return dest


def pool_categories(paths: Mapping[str, str | Path | None]) -> Categories:
    """A :data:`Categories` lookup from pool files (``{type: path}``); unreadable pools give none."""
    from thinksearch import questions as qs
    from thinksearch.files import shipped

    known: dict[tuple[str, str], str] = {}
    for kind, path in paths.items():
        try:
            entries = qs.read_pool(shipped(path)) if path else []
        except Exception:  # noqa: BLE001 - a missing pool only loses the category column
            entries = []
        for e in entries:
            if e.category:
                known[(kind, qs.key(e.text))] = e.category
    return lambda kind, text: known.get((kind, qs.key(text)))
