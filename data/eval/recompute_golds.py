"""Recompute every gold answer of the eval set that code can compute, and report mismatches.

Arithmetic, unit, date and program-output golds are not trusted as typed: each such row has a
function below, keyed by the row's ``id``, that derives its accepted answers. Python snippets
are taken from the question text itself (the function checks that the snippet is in the
question) and executed, so the gold is what Python prints, not what someone remembers.

A row passes when its ``answers`` and the computed ones are the same set after the scorer's
own normalisation (:func:`thinksearch.scoring.normalize`), so an alias like "周三" for
"星期三" must be computed too. Rows in ``arithmetic`` and ``programming`` must have a
function unless :data:`NOT_CODE` says why not. The file is also checked with
:func:`thinksearch.gold.load_gold` (fields, ``match``, corpus passage ids).

Run as: ``PYTHONPATH=src python data/eval/recompute_golds.py [--data data/eval/test.jsonl]``
(from the repository root; exit status 1 on any mismatch).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import itertools
import json
import math
import os
import sys
import tempfile
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Callable

from thinksearch.errors import ThinksearchError
from thinksearch.gold import load_gold
from thinksearch.scoring import normalize

WEEKDAYS = "一二三四五六日"


def num(x: Decimal | Fraction | int) -> str:
    """A number as a gold string: no trailing zeros, no exponent."""
    if isinstance(x, Fraction):
        assert x.denominator in (1, 2, 4, 5, 8, 10, 20, 25, 50, 100), x  # a terminating decimal
        x = Decimal(x.numerator) / Decimal(x.denominator)
    return format(Decimal(x).normalize(), "f")


def weekday_names(day: dt.date) -> list[str]:
    w = WEEKDAYS[day.weekday()]
    return [f"星期{w}", f"周{w}", f"礼拜{w}"]


def snippet_of(question: str, code: str) -> str:
    if code not in question:
        raise AssertionError(f"snippet {code!r} is not in the question")
    return code


def run_printed(question: str, code: str) -> str:
    """What ``code`` (a snippet of the question) prints, without the final newline."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(snippet_of(question, code), {})  # our own data file's snippets, never model output
    return out.getvalue().rstrip("\n")


def evaluated(question: str, expr: str) -> object:
    return eval(snippet_of(question, expr), {})  # our own data file's expressions


# ----------------------------------------------------------------------------- per-row computations


def rope_pieces(folds: int) -> int:
    """Pieces of a rope folded in half ``folds`` times and cut once through the middle."""
    length = Fraction(1, 2**folds)
    cuts = {length / 2}
    for _ in range(folds):  # unfold: each cut point also appears mirrored in the other half
        cuts |= {2 * length - c for c in cuts}
        length *= 2
    return len(cuts) + 1


def choice_phrases(names: list[str]) -> list[str]:
    """The ways the gold accepts for "pick this one" (a bare "A店" would also match the question)."""
    out = []
    for n in names:
        out += [f"选{n}", f"选择{n}", f"去{n}", f"{n}更便宜", f"{n}更省", f"{n}更划算", f"{n}便宜", f"{n}划算"]
    return out


def thief(q: str) -> list[str]:
    people = "甲乙丙"
    fits = []
    for t in people:
        said = [t != "甲", t == "甲", t != "丙"]  # 甲: 我不是; 乙: 甲是; 丙: 我不是
        if sum(said) == 1:
            fits.append(t)
    assert len(fits) == 1
    t = fits[0]
    return [f"小偷是{t}", f"{t}是小偷", f"{t}就是小偷"]


def race_winner(q: str) -> list[str]:
    fits = []
    for order in itertools.permutations("甲乙丙丁"):
        rank = {p: i + 1 for i, p in enumerate(order)}
        if rank["甲"] not in (1, 4) and rank["乙"] == 3 and rank["丙"] < rank["丁"]:
            fits.append(order[0])
    assert len(set(fits)) == 1
    w = fits[0]
    return [f"{w}第一", f"{w}是第一", f"第一名是{w}", f"{w}跑了第一", f"{w}获得第一", f"{w}得了第一"]


def next_in_sequence(q: str) -> list[str]:
    seq = [3, 5, 9, 17, 33]
    assert all(b == 2 * a - 1 for a, b in zip(seq, seq[1:]))  # differences double
    return [str(2 * seq[-1] - 1)]


def balls_for_two_white(q: str) -> list[str]:
    black, white, need = 4, 5, 2
    # Worst case: every black ball comes out first.
    return [str(black + need)] if need <= white else []


def ratio_abc(q: str) -> list[str]:
    a_b, b_c = Fraction(2, 3), Fraction(4, 5)
    a, b, c = a_b * b_c, b_c, Fraction(1)
    scale = math.lcm(a.denominator, b.denominator)
    parts = [int(x * scale) for x in (a, b, c)]
    g = math.gcd(*parts)
    return [":".join(str(p // g) for p in parts)]


def arrival(q: str) -> list[str]:
    t = dt.datetime(2000, 1, 1, 15, 45) + dt.timedelta(hours=2, minutes=35)
    h12 = t.hour - 12
    return [f"{h12}点{t.minute}分", f"{h12}:{t.minute:02d}", f"{t.hour}:{t.minute:02d}", f"{t.hour}点{t.minute}分"]


def phone_plan(q: str) -> list[str]:
    used = 45
    a = 58 + 3 * max(0, used - 30)
    b = 88
    assert a != b
    return choice_phrases(["套餐A", "A套餐"] if a < b else ["套餐B", "B套餐"])


def coat(q: str) -> list[str]:
    price = Decimal(800)
    a = price * Decimal("0.75")
    b = price - 150 * (price // 500 > 0)
    assert a != b
    return choice_phrases(["A店"] if a < b else ["B店"])


def file_read_bug(q: str) -> list[str]:
    code = snippet_of(q, 'with open("a.txt") as f: data = f.read; print(len(data))')
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        os.chdir(tmp)  # contextlib.chdir needs Python 3.11; the project supports 3.10
        try:
            Path("a.txt").write_text("hello", encoding="utf-8")
            try:
                exec(code, {})
            except TypeError:
                pass
            else:
                raise AssertionError("the buggy snippet ran without error")
            exec(code.replace("f.read;", "f.read();"), {})  # the fix the gold names works
        finally:
            os.chdir(here)
    return ["read()", "没有调用", "没有加括号", "缺少括号", "少了括号"]


def setdefault_dict(q: str) -> list[str]:
    env: dict = {}
    exec(snippet_of(q, 'd = {}; d.setdefault("a", []).append(1)'), env)
    return [repr(env["d"]), json.dumps(env["d"])]


def floor_division(q: str) -> list[str]:
    printed = run_printed(q, "print(10 // 3, 10 % 3, -7 // 2)")
    return [printed, ", ".join(printed.split())]


COMPUTED: dict[str, Callable[[str], list[str]]] = {
    "think-arithmetic-01": lambda q: [num((Decimal(480) - 80 * (480 >= 400)) * Decimal("0.95"))],
    "think-arithmetic-02": lambda q: weekday_names(dt.date(2000, 3, 1)),
    "think-arithmetic-03": lambda q: [num(Decimal(13) + (10 - 3) * Decimal("2.3"))],
    "think-arithmetic-04": lambda q: [str(next(y for y in range(100) if 36 + y == 3 * (8 + y)))],
    "think-arithmetic-05": lambda q: [num(Decimal("1.5") * 1000 / 50)],
    "think-arithmetic-06": lambda q: [num(Decimal(25) - 2 * (Decimal(25) - Decimal("13.5")))],
    "think-arithmetic-07": lambda q: [num(Fraction(27 - 3 * 5, 2))],
    "think-arithmetic-08": lambda q: [num(5000 * Decimal("0.92") ** 2)],
    "think-arithmetic-09": lambda q: [str(sum(range(1, 100, 2)))],
    "think-arithmetic-10": lambda q: [num(Decimal("3.14") * 10 / Decimal("6.28"))],  # closed loop: pots = gaps
    "think-arithmetic-11": ratio_abc,
    "think-arithmetic-12": lambda q: [num(Fraction(200, 3 - 1))],
    "think-arithmetic-13": lambda q: [str((dt.date(2024, 12, 25) - dt.date(2024, 3, 1)).days)],
    "think-arithmetic-14": lambda q: [num(Fraction(72 * 1000, 3600))],
    "think-arithmetic-15": lambda q: [num(Decimal("1.2") * Decimal("0.5") * Decimal("0.8") * 1000)],
    "think-logic-01": thief,
    "think-logic-02": lambda q: [str(4 + d) for d in (-1, 0, 1)],  # cut through 2, 1 or 0 corners
    "think-logic-04": balls_for_two_white,
    "think-logic-05": next_in_sequence,
    "think-logic-06": lambda q: [str(math.factorial(5 - 1))],
    "think-logic-10": race_winner,
    "think-logic-12": lambda q: [str(rope_pieces(3))],
    "think-everyday-11": coat,
    "think-everyday-12": lambda q: [num(Fraction(1500, 1000) * Fraction(4, 60))],
    "think-everyday-13": arrival,
    "think-everyday-14": lambda q: [str(5000 // 80)],
    "think-everyday-15": phone_plan,
    "think-knowledge-05": lambda q: [str(24 * 60)],
    "think-programming-01": lambda q: [run_printed(q, 'print(3 * "ab" + "c")')],
    "think-programming-02": lambda q: [repr(evaluated(q, "[i for i in range(10) if i % 3 == 0]"))],
    "think-programming-03": file_read_bug,
    "think-programming-05": setdefault_dict,
    "think-programming-08": lambda q: [str(int("11111111", 2))],
    "think-programming-11": lambda q: [repr(evaluated(q, "round(2.5)"))],
    "think-programming-13": lambda q: [repr(evaluated(q, 'len(set("mississippi"))'))],
    "think-programming-14": lambda q: [repr(evaluated(q, "list(reversed(range(1, 5)))"))],
    "think-programming-15": floor_division,
    "think-programming-16": lambda q: [str(evaluated(q, "'-'.join(['a', 'b', 'c'])"))],
}

NOT_CODE = {
    "think-programming-04": "complexity of merge sort: a fact, not an output",
    "think-programming-06": "JavaScript, not Python",
    "think-programming-09": "why string += is slow: an explanation",
    "think-programming-10": "data structures behind BFS/DFS: a fact",
}
"""Checkable rows in ``arithmetic`` / ``programming`` whose gold is no computation, and why."""

MUST_COMPUTE = ("arithmetic", "programming")


def check(path: str | Path, corpus: str | Path | None) -> list[str]:
    """Problems with the computed golds of a gold file, one line each (empty when all agree)."""
    try:
        rows = load_gold(path, corpus)
    except ThinksearchError as e:
        return [str(e)]
    problems = []
    ids = {r.get("id") for r in rows}
    for stale in sorted((set(COMPUTED) | set(NOT_CODE)) - ids):
        problems.append(f"{path}: no row with id {stale!r} (the script names it)")
    for n, row in enumerate(rows, 1):
        rid = row.get("id", f"row {n}")
        if "answers" not in row:
            continue
        fn = COMPUTED.get(rid)
        if fn is None:
            if row.get("category") in MUST_COMPUTE and row["type"] == "thinking" and rid not in NOT_CODE:
                problems.append(f"{rid}: {row['category']} gold without a recompute function")
            continue
        try:
            computed = fn(row["question"])
        except Exception as e:  # a snippet that no longer runs is a finding, not a crash
            problems.append(f"{rid}: recompute failed: {type(e).__name__}: {e}")
            continue
        want = {normalize(a) for a in computed}
        have = {normalize(a) for a in row["answers"]}
        if want != have:
            problems.append(f"{rid}: answers {row['answers']} but code computes {computed}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).with_name("test.jsonl")))
    parser.add_argument("--corpus", default=str(Path(__file__).parents[1] / "corpus" / "snapshot.jsonl"))
    args = parser.parse_args(argv)
    problems = check(args.data, args.corpus)
    for p in problems:
        print(p)
    print(f"{len(COMPUTED)} computed golds checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
