"""The eval set's computed golds (data/eval/test.jsonl), keyed by row id; checked by
data/recompute_golds.py."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import itertools
import json
import math
import os
import tempfile
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Callable

from gold_code import Computed, choice, evaluated, num, run_printed, snippet_of, weekday_names


def rope_pieces(folds: int) -> int:
    """Pieces of a rope folded in half ``folds`` times and cut once through the middle."""
    length = Fraction(1, 2**folds)
    cuts = {length / 2}
    for _ in range(folds):  # unfold: each cut point also appears mirrored in the other half
        cuts |= {2 * length - c for c in cuts}
        length *= 2
    return len(cuts) + 1


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


def phone_plan(q: str) -> tuple[list[str], list[str]]:
    used = 45
    a = 58 + 3 * max(0, used - 30)
    b = 88
    assert a != b
    plans = (["套餐A", "A套餐"], ["套餐B", "B套餐"])
    return choice(*plans) if a < b else choice(*reversed(plans))


def coat(q: str) -> tuple[list[str], list[str]]:
    price = Decimal(800)
    a = price * Decimal("0.75")
    b = price - 150 * (price // 500 > 0)
    assert a != b
    return choice(["A店"], ["B店"]) if a < b else choice(["B店"], ["A店"])


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


COMPUTED: dict[str, Callable[[str], Computed]] = {
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
