"""The thinking pool's computed golds (data/questions/thinking.jsonl), keyed by row id; checked
by data/recompute_golds.py.

Each function derives a row's accepted answers from the numbers of its question (arithmetic,
units, dates, brute-forced logic puzzles) or by running the Python the question quotes.
"""

from __future__ import annotations

import calendar
import datetime as dt
import itertools
import math
import stat
from decimal import Decimal
from fractions import Fraction
from typing import Callable

from gold_code import (Computed, choice, evaluated, fraction_names, harmonic_mean, limit, num, run_printed, snippet_of,
                       stated, weekday_names)

D = Decimal
WEDNESDAY = dt.date(2024, 1, 3)
assert WEDNESDAY.weekday() == 2


def chickens_rabbits(q: str) -> list[str]:
    heads, feet = 35, 94
    (c, r), = [(c, heads - c) for c in range(heads + 1) if 2 * c + 4 * (heads - c) == feet]
    return [str(c), str(r)]


def pens_and_books(q: str) -> list[str]:
    (pen, book), = [(p, p + 2) for p in range(20) if 3 * p + 2 * (p + 2) == 19]
    return [str(pen), str(book)]


def up_then_down(q: str) -> tuple[list[str], list[str]]:
    price = D(100) * D("1.1") * D("0.9")
    assert price < 100
    return ["低了", "比原价低", "更低", "低于原价", "降低了"], ["高了", "比原价高", "更高", "高于原价", "不变"]


def clock_angle(q: str) -> list[str]:
    hour, minute = 3, 15
    angle = abs((hour * 30 + D(minute) / 2) - minute * 6)
    return [num(min(angle, 360 - angle))]


def bottles(q: str) -> list[str]:
    drunk = empties = 30 // 3
    while empties >= 4:
        new = empties // 4
        drunk, empties = drunk + new, empties % 4 + new
    return [str(drunk)]


def linear_pair(q: str) -> list[str]:
    (x, y), = [(x, 10 - x) for x in range(-20, 21) if x - (10 - x) == 4]
    return [f"x={x}", f"y={y}"]


def shampoo(q: str) -> tuple[list[str], list[str]]:
    big, small = D(45) / 750, D(14) / 200
    assert big != small
    return choice(["大瓶"], ["小瓶"]) if big < small else choice(["小瓶"], ["大瓶"])


def leap_february(q: str) -> list[str]:
    assert calendar.isleap(2024)
    return ["闰年", str(calendar.monthrange(2024, 2)[1])]


def original_fraction(q: str) -> list[str]:
    (x,), = [{Fraction(n, d)} for d in range(2, 50) for n in range(1, d)
             if math.gcd(n, d) == 1 and Fraction(n + 1, d) == Fraction(1, 2) and Fraction(n, d + 1) == Fraction(1, 3)]
    return fraction_names(x)


def last_standing(q: str) -> list[str]:
    line = list(range(1, 101))
    while len(line) > 1:
        line = line[1::2]  # those who call out an even number stay
    return [str(line[0])]


def three_digit_numbers(q: str) -> list[str]:
    made = [int("".join(p)) for p in itertools.permutations("678")]
    return [str(len(made)), str(max(made))]


def girls(q: str) -> list[str]:
    n = Fraction(20 * (82 - 79), 85 - 82)  # the boys' deficit below the mean, made up by the girls' surplus
    return [f"女生{verb}{n}{unit}" for verb in ("有", "", "共") for unit in "人名"]  # "20" alone is the boys' count


def paper_folds(q: str) -> list[str]:
    mm = D("0.1") * 2**10
    return [num(mm), num(mm / 10)]  # millimetres or centimetres


def parking(q: str) -> list[str]:
    hours = D("4.5")
    return [num(5 + 3 * math.ceil(hours - 1))]


def hundred_million_seconds(q: str) -> list[str]:
    years = D(10**8) / (365 * 24 * 3600)
    return [num(round(years, 2)), num(round(years, 1))]


def wheel(q: str) -> list[str]:
    metres = [D("3.14") * D("0.7") * 100, round(D(math.pi) * D("0.7") * 100, 1)]
    return [num(m) for m in metres] + [num(round(metres[0]))]


def discount_for_profit(q: str) -> list[str]:
    rate = Fraction(60 * 6, 5) / 90  # price for 20% profit on cost 60, over the marked 90
    tenths = rate * 10
    assert tenths.denominator == 1
    return [f"{tenths}折", f"{'零一二三四五六七八九'[int(tenths)]}折", f"{int(rate * 100)}%"]


def installments(q: str) -> list[str]:
    each = D(2999) / 12
    return [num(round(each, 2)), num(round(each, 1)), num(round(each))]


def three_ages(q: str) -> list[str]:
    (a, b, c), = [(c + 10, c + 5, c) for c in range(60) if (c + 10) + (c + 5) + c == 60]
    return [str(a), str(b), str(c)]


def square_root_of_49(q: str) -> list[str]:
    roots = sorted(x for x in range(-49, 50) if x * x == 49)
    assert roots == [-7, 7]
    return ["±7", "-7", "负7", "正负7"]


# ----------------------------------------------------------------------------- logic, by brute force


def who_tells_truth(q: str) -> list[str]:
    fits = []
    for a, b, c in itertools.product((True, False), repeat=3):  # True: tells the truth
        if a == (not b) and b == (not c) and c == (not a and not b):
            fits.append((a, b, c))
    (truth,), = [[n for n, t in zip("甲乙丙", f) if t] for f in fits]
    return [f"{truth}说的是真话", f"{truth}说真话", f"只有{truth}", f"{truth}说了真话"]


def snail(q: str) -> list[str]:
    height, day = 0, 0
    while True:
        day += 1
        height += 3
        if height >= 10:
            return [str(day)]
        height -= 2


def professions(q: str) -> list[str]:
    fits = [dict(zip(("小张", "小李", "小王"), p)) for p in itertools.permutations(("医生", "老师", "律师"))]
    (job,) = [[f"{k}是{v}" for k, v in f.items()] for f in fits
               if f["小李"] != "老师" and f["小王"] not in ("医生", "老师")]
    return job


def heights(q: str) -> list[str]:
    fits = [p for p in itertools.permutations("甲乙丙丁")  # tallest first
            if p.index("甲") < p.index("乙") and p.index("丙") < p.index("甲") and p.index("丙") < p.index("丁") < p.index("甲")]
    assert len(fits) == 1
    return [f"{fits[0][0]}最高", f"{fits[0][-1]}最矮"]


def yesterday_were_tomorrow(q: str) -> list[str]:
    # Were yesterday (today - 1) called tomorrow, the day called today would be today - 2.
    (today,), = [{d} for d in (dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(7))
                 if (d - dt.timedelta(days=2)).weekday() == 4]
    return weekday_names(today)


def who_took_it(q: str) -> list[str]:
    fits = [t for t in "甲乙丙" if [t == "乙", t != "乙", t != "丙"].count(True) == 1]
    (t,) = fits
    return [f"{t}拿的", f"{t}拿了", f"{t}偷的", f"{t}是小偷"]


def knights(q: str) -> list[str]:
    fits = [(a, b) for a, b in itertools.product((True, False), repeat=2) if a == (not a and not b)]
    ((a, b),) = fits
    name = {True: "骑士", False: "无赖"}
    return [f"A是{name[a]}", f"B是{name[b]}"]


def painted_cube(q: str) -> list[str]:
    cubes = itertools.product(range(3), repeat=3)
    return [str(sum(1 for c in cubes if sum(x in (0, 2) for x in c) == 2))]


def lamps(q: str) -> list[str]:
    on = [n for n in range(1, 101) if sum(1 for k in range(1, 101) if n % k == 0) % 2 == 1]
    assert on == [k * k for k in range(1, 11)]
    return ["平方数", "、".join(map(str, on))]


def exam_passer(q: str) -> list[str]:
    fits = [p for p in "ABC" if [p == "A", p != "C", p != "A"].count(True) == 1]
    (p,) = fits
    return [f"{p}及格", f"{p}考试及格"]


def day_before_three_after_sunday(q: str) -> list[str]:
    sunday = dt.date(2024, 1, 7)
    assert sunday.weekday() == 6
    return weekday_names(sunday + dt.timedelta(days=3) - dt.timedelta(days=1))


def coins_to_find(q: str) -> list[str]:
    weighings, can_tell = 0, 1
    while can_tell < 9:
        weighings, can_tell = weighings + 1, can_tell * 3  # each weighing has three outcomes
    return [str(weighings)]


def two_children(q: str) -> list[str]:
    families = list(itertools.product("男女", repeat=2))
    some_boy = [f for f in families if "男" in f]
    return fraction_names(Fraction(sum(f == ("男", "男") for f in some_boy), len(some_boy)))


def monty_hall(q: str) -> list[str]:
    wins = 0
    for car, pick in itertools.product(range(3), repeat=2):
        opened = next(d for d in range(3) if d not in (car, pick))
        wins += next(d for d in range(3) if d not in (pick, opened)) == car
    return fraction_names(Fraction(wins, 9))


# ----------------------------------------------------------------------------- programming


def mutable_default(q: str) -> list[str]:
    env: dict = {}
    exec(snippet_of(q, "def add(item, lst=[]): lst.append(item); return lst"), env)
    env["add"](1)
    assert env["add"](2) == [1, 2]  # the second call sees the first call's item
    return ["共享", "同一个列表", "累积"]


def alias_append(q: str) -> list[str]:
    env: dict = {}
    exec(snippet_of(q, "a = [1,2,3]; b = a; b.append(4)"), env)
    return [repr(env["a"])]


def loop_prints(q: str) -> list[str]:
    return run_printed(q, "for i in range(3): print(i)").split()


def factorial_fn(q: str) -> list[str]:
    env: dict = {}
    exec(snippet_of(q, "def f(n): return 1 if n <= 1 else n * f(n-1)"), env)
    return [str(env["f"](5))]


def set_literal(q: str) -> list[str]:
    value = evaluated(q, "{1, 2, 2, 3}")
    return [type(value).__name__, str(len(value))]


def unbound_local(q: str) -> list[str]:
    code = snippet_of(q, "x = 10; def f(): x += 1").replace("; ", "\n") + "\nf()"
    try:
        exec(code, {})
    except UnboundLocalError as e:
        return [type(e).__name__, "局部变量"]
    raise AssertionError("the snippet ran without error")


def sort_vs_sorted(q: str) -> list[str]:
    lst = [3, 1, 2]
    assert sorted(lst) == [1, 2, 3] and lst == [3, 1, 2]  # sorted() leaves the list alone
    assert lst.sort() is None and lst == [1, 2, 3]  # list.sort() sorts in place, returns None
    return ["原地", "新列表", "None"]


def get_vs_index(q: str) -> list[str]:
    env: dict = {"d": {}}
    assert eval(snippet_of(q, 'd.get("k", 0)'), env) == 0  # our own data file's expressions
    try:
        eval(snippet_of(q, 'd["k"]'), env)
    except KeyError as e:
        return [type(e).__name__]
    raise AssertionError("no KeyError")


def swap(q: str) -> list[str]:
    env = {"a": 1, "b": 2}
    line = "a, b = b, a"
    exec(line, env)
    assert (env["a"], env["b"]) == (2, 1)
    return [line]


def chmod_755(q: str) -> list[str]:
    snippet_of(q, "chmod 755")
    mode = stat.filemode(stat.S_IFREG | 0o755)[1:]
    return [mode[:3], mode[6:]]


def bools(q: str) -> list[str]:
    printed = run_printed(q, 'print(bool(""), bool("0"), bool([]))')
    return [printed, ", ".join(printed.split())]


def stepped_range(q: str) -> list[str]:
    values = list(evaluated(q, "range(1, 10, 3)"))
    return [repr(values), "、".join(map(str, values)), ", ".join(map(str, values))]


def assignment_in_if(q: str) -> list[str]:
    code = snippet_of(q, 'if x = 5: print("five")')
    try:
        compile(code, "<question>", "exec")
    except SyntaxError:
        compile(code.replace("=", "==", 1), "<question>", "exec")  # the fix the gold names
        return ["=="]
    raise AssertionError("the snippet compiled")


def remove_while_indexing(q: str) -> list[str]:
    env = {"lst": [1, 2, 3, 4]}
    try:
        exec(snippet_of(q, "for i in range(len(lst)): lst.remove(lst[i])"), env)
    except IndexError as e:
        return [type(e).__name__, "越界"]
    raise AssertionError("the loop ran to the end")


COMPUTED: dict[str, Callable[[str], Computed]] = {
    "pool-think-arithmetic-01": lambda q: [num(D(240) * D("0.8") - 20)],
    "pool-think-arithmetic-02": lambda q: [str(65 * 18)],
    "pool-think-arithmetic-03": lambda q: [str((36 // 2 + 4) // 2 * ((36 // 2 - 4) // 2))],
    "pool-think-arithmetic-04": lambda q: [str(37 * 43)],
    "pool-think-arithmetic-05": lambda q: [str(sum(range(1, 101)))],
    "pool-think-arithmetic-06": lambda q: [num(120 * D("2.5"))],
    "pool-think-arithmetic-07": lambda q: [num(80 * D("1.25"))],
    "pool-think-arithmetic-08": chickens_rabbits,
    "pool-think-arithmetic-09": lambda q: [num(1 / (Fraction(1, 10) + Fraction(1, 15)))],
    "pool-think-arithmetic-10": lambda q: fraction_names(Fraction("0.375")),
    "pool-think-arithmetic-11": lambda q: [num(Fraction(20 + 7, 3))],
    "pool-think-arithmetic-12": lambda q: [num(D("3.14") * 5**2)],
    "pool-think-arithmetic-13": lambda q: [num(10000 * D("1.03") ** 2)],
    "pool-think-arithmetic-14": lambda q: [num(1 / (Fraction(1, 6) - Fraction(1, 8)))],
    "pool-think-arithmetic-15": lambda q: [num(Fraction(48 * 5, 5 + 7))],
    "pool-think-arithmetic-16": pens_and_books,
    "pool-think-arithmetic-17": lambda q: [str(2**10)],
    "pool-think-arithmetic-18": lambda q: [str(6 * 3**2), str(3**3)],
    "pool-think-arithmetic-19": lambda q: [num(D(450) / 100 * 7 * 8)],
    "pool-think-arithmetic-20": lambda q: [num(Fraction(300, 60 + 40))],
    "pool-think-arithmetic-21": lambda q: [num(360 * (1 - Fraction(1, 4)) * (1 - Fraction(1, 3)))],
    # Both halves: the root, and that -144 has none among the reals (no real square is negative).
    "pool-think-arithmetic-22": lambda q: [str(math.isqrt(144)), "没有" if -144 < 0 else "有"],
    "pool-think-arithmetic-23": up_then_down,
    "pool-think-arithmetic-24": lambda q: [str(math.gcd(12, 18)), str(math.lcm(12, 18))],
    "pool-think-arithmetic-25": lambda q: fraction_names(
        Fraction(sum(a + b == 7 for a, b in itertools.product(range(1, 7), repeat=2)), 36)),
    "pool-think-arithmetic-26": lambda q: [num(500 * D("1.12")) + "万"],
    "pool-think-arithmetic-27": lambda q: [str(3 * 2 * 2)],
    "pool-think-arithmetic-28": lambda q: [num(200 * D("0.15"))],
    "pool-think-arithmetic-29": clock_angle,
    "pool-think-arithmetic-30": lambda q: [str(math.perm(5, 2))],
    "pool-think-arithmetic-31": lambda q: [str(3 + (20 - 1) * 4)],
    "pool-think-arithmetic-32": lambda q: [num(8000 * D("0.3") * 12)],
    "pool-think-arithmetic-33": lambda q: ["直角三角形", num(Fraction(3 * 4, 2))] if 3**2 + 4**2 == 5**2 else [],
    "pool-think-arithmetic-34": lambda q: [num(D("3.6") * 1000 / 3600) + "米"],  # a bare 1 is in many answers
    "pool-think-arithmetic-35": bottles,
    "pool-think-arithmetic-36": linear_pair,
    "pool-think-arithmetic-37": lambda q: weekday_names(WEDNESDAY + dt.timedelta(days=100)),
    "pool-think-arithmetic-38": lambda q: [str(next(n for n in range(1, 100) if n % 6 == 5 and n % 8 == 7))],
    "pool-think-arithmetic-39": lambda q: [num(120 / ((1 - Fraction(40, 100)) * Fraction(1, 2)))],
    "pool-think-arithmetic-40": leap_february,
    "pool-think-arithmetic-41": lambda q: [str(next(x for x in range(10, 200) if 4 * x == 5 * (x - 10) - 10))],
    "pool-think-arithmetic-42": shampoo,
    "pool-think-arithmetic-43": lambda q: [num(2 * D("1.5") * 1 * 1000)],
    "pool-think-arithmetic-44": lambda q: [str(99 * 99)],
    "pool-think-arithmetic-45": lambda q: [harmonic_mean(4, 6)],
    "pool-think-arithmetic-46": lambda q: [str(1200 * p // (2 + 3 + 5)) for p in (2, 3, 5)],
    "pool-think-arithmetic-47": lambda q: [num(D("1.2") * 10000)],
    "pool-think-arithmetic-48": lambda q: [num(Fraction(10 - 8, 8) * 100)],
    "pool-think-arithmetic-49": original_fraction,
    "pool-think-arithmetic-50": lambda q: [num((Fraction(3, 4) + Fraction(5, 6)) * 12)],
    "pool-think-arithmetic-51": lambda q: [str(sum(2 * 3**k for k in range(5)))],
    "pool-think-arithmetic-52": last_standing,
    "pool-think-arithmetic-53": three_digit_numbers,
    "pool-think-arithmetic-54": lambda q: [harmonic_mean(60, 90)],
    "pool-think-arithmetic-55": lambda q: [str(sum(1 for n in range(1, 1001) if n % 7 == 0))],
    "pool-think-arithmetic-56": paper_folds,
    "pool-think-arithmetic-57": parking,
    "pool-think-arithmetic-58": hundred_million_seconds,
    "pool-think-arithmetic-59": lambda q: [num(Fraction(3, 3 * 3) * 9 * 9)],
    "pool-think-arithmetic-60": lambda q: [num(Fraction(300, 12))],
    "pool-think-arithmetic-61": girls,
    "pool-think-arithmetic-62": wheel,
    "pool-think-arithmetic-63": discount_for_profit,
    "pool-think-arithmetic-64": lambda q: limit(Fraction(Fraction(1, 2), 1 - Fraction(1, 2))),
    "pool-think-arithmetic-65": lambda q: [str(math.factorial(10))],
    "pool-think-arithmetic-66": lambda q: [num(D(9) * 6 / (D("0.3") * D("0.3")))],
    "pool-think-arithmetic-67": lambda q: [str(2030 - 2015)],
    "pool-think-arithmetic-68": installments,
    "pool-think-arithmetic-69": three_ages,
    "pool-think-arithmetic-70": lambda q: [num(Fraction(6 * 5, 5 + 1)) + "元"],  # a bare 5 is in the question
    "pool-think-arithmetic-71": lambda q: [str(4 * (4 + 3 + 2))],
    "pool-think-arithmetic-72": lambda q: [str(3 * 6)],  # same base: a cone holds a third of a cylinder
    "pool-think-arithmetic-73": square_root_of_49,
    "pool-think-arithmetic-74": lambda q: [num(80 * (3 + Fraction(15, 60)))],
    "pool-think-logic-03": who_tells_truth,
    "pool-think-logic-06": snail,
    "pool-think-logic-07": professions,
    "pool-think-logic-11": lambda q: [str(6 * 7)],  # n(n+1): 1×2, 2×3, … 5×6, then 6×7
    "pool-think-logic-12": lambda q: [str(5 + 8), str(8 + 13)],
    "pool-think-logic-16": monty_hall,
    "pool-think-logic-17": two_children,
    "pool-think-logic-18": lambda q: [str(math.comb(8, 2))],
    "pool-think-logic-19": heights,
    "pool-think-logic-20": yesterday_were_tomorrow,
    "pool-think-logic-24": lambda q: [num(Fraction(5, 6 - 1) * (12 - 1))],
    "pool-think-logic-26": who_took_it,
    "pool-think-logic-27": lambda q: [str(100 // 5 + 1)],
    "pool-think-logic-30": knights,
    "pool-think-logic-31": painted_cube,
    "pool-think-logic-32": lamps,
    "pool-think-logic-40": exam_passer,
    "pool-think-logic-43": lambda q: [str((5 - 1) * 2)],
    "pool-think-logic-44": day_before_three_after_sunday,
    "pool-think-logic-48": lambda q: [str(2 + 1)],  # two colours: the third sock repeats one
    "pool-think-logic-49": lambda q: [str((6 - 1) * 12)],
    "pool-think-logic-52": coins_to_find,
    "pool-think-everyday-50": lambda q: [num(D(386) / 4)],
    "pool-think-everyday-51": lambda q: [num(Fraction(4000 - 3000, 600 - 350))],
    "pool-think-everyday-55": lambda q: (choice(["10公斤装"], ["5公斤装"]) if D(60) / 10 < D(32) / 5
                                         else choice(["5公斤装"], ["10公斤装"])),
    "pool-think-knowledge-03": lambda q: [str(365 + calendar.isleap(y)) for y in (2023, 2024)],
    "pool-think-knowledge-26": lambda q: [str(100), str(1000)],  # centi- and kilo-
    "pool-think-programming-01": lambda q: [run_printed(q, 'print(len("你好abc"))')],
    "pool-think-programming-02": lambda q: [repr(evaluated(q, "[x*x for x in range(5)]"))],
    "pool-think-programming-04": mutable_default,
    "pool-think-programming-06": alias_append,
    "pool-think-programming-12": loop_prints,
    "pool-think-programming-13": lambda q: [str(math.trunc(7 / 2))],  # C's int division truncates toward zero
    "pool-think-programming-14": lambda q: [str(evaluated(q, '"abc" * 3'))],
    "pool-think-programming-19": lambda q: [repr(evaluated(q, "sorted([3, 1, 2], reverse=True)"))],
    "pool-think-programming-23": lambda q: [repr(evaluated(q, "5 // 2")), repr(evaluated(q, "5 / 2"))],
    "pool-think-programming-25": factorial_fn,
    "pool-think-programming-26": set_literal,
    "pool-think-programming-30": lambda q: [str(evaluated(q, '"hello"[::-1]'))],
    "pool-think-programming-32": unbound_local,
    "pool-think-programming-34": lambda q: [str(int("1011", 2))],
    "pool-think-programming-35": lambda q: [format(255, "X")],
    "pool-think-programming-37": sort_vs_sorted,
    "pool-think-programming-40": get_vs_index,
    "pool-think-programming-41": swap,
    "pool-think-programming-46": chmod_755,
    "pool-think-programming-48": bools,
    "pool-think-programming-52": stepped_range,
    "pool-think-programming-55": assignment_in_if,
    "pool-think-programming-58": lambda q: stated(evaluated(q, "len([[1, 2], [3]])")),
    "pool-think-programming-62": lambda q: [type(evaluated(q, "3/1")).__name__],
    "pool-think-programming-64": lambda q: [run_printed(q, 'print("%.2f" % 3.14159)')],
    "pool-think-programming-66": remove_while_indexing,
    "pool-think-programming-68": lambda q: stated(evaluated(q, "[1, 2, 3][-1]")) + ["最后一个"],
    "pool-think-programming-69": lambda q: [str(len("汉".encode("utf-8")))],
}

NOT_CODE = {
    "pool-think-programming-03": "complexity of binary search: a fact",
    "pool-think-programming-05": "complexity of bubble sort: a fact",
    "pool-think-programming-07": "JavaScript, not Python",
    "pool-think-programming-09": "what recursion needs: an explanation's key term",
    "pool-think-programming-11": "hash table worst case: a fact",
    "pool-think-programming-15": "why a loop never ends: an explanation's key term",
    "pool-think-programming-16": "complexity of quicksort: a fact",
    "pool-think-programming-20": "is versus ==: an explanation's key term",
    "pool-think-programming-24": "complexity of a nested loop: a fact",
    "pool-think-programming-36": "the conditions for deadlock: a fact",
    "pool-think-programming-38": "how to store passwords: an explanation's key term",
    "pool-think-programming-47": "when finally runs: an explanation's key term",
    "pool-think-programming-59": "what the GIL does: an explanation's key term",
    "pool-think-programming-60": "steps of halving: a fact about logarithms",
    "pool-think-programming-65": "JavaScript, not Python",
    "pool-think-programming-70": "why floats are not compared with ==: an explanation's key term",
}
"""Checkable rows in ``arithmetic`` / ``programming`` whose gold is no computation, and why."""
