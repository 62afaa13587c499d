"""Shared helpers for the gold tables (data/golds_eval.py, data/golds_thinking.py).

They turn a computed value into the strings a gold accepts, and run the Python snippets that a
question quotes (never model output). Used by data/recompute_golds.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from decimal import Decimal
from fractions import Fraction

CN_DIGITS = "零一二三四五六七八九十"

Computed = list[str] | tuple[list[str], list[str]]
"""What a gold function returns: the accepted answers, or the answers and the ``wrong`` ones."""

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


def choice_phrases(names: list[str]) -> list[str]:
    """The ways the gold accepts for "pick this one" (a bare "A店" would also match the question)."""
    out = []
    for n in names:
        out += [f"选{n}", f"选择{n}", f"去{n}", f"{n}更便宜", f"{n}更省", f"{n}更划算", f"{n}便宜", f"{n}划算"]
    return out


def choice(picked: list[str], other: list[str]) -> tuple[list[str], list[str]]:
    """A choice of two: the phrases that pick ``picked`` (the answers) and those that pick
    ``other`` (the gold's ``wrong``), so an answer recommending both is not right."""
    return choice_phrases(picked), choice_phrases(other)


def fraction_names(x: Fraction) -> list[str]:
    """A proper fraction as "3/8" and as "八分之三" (numerator and denominator up to ten)."""
    assert 0 < x.numerator and x.denominator <= 10, x
    return [f"{x.numerator}/{x.denominator}", f"{CN_DIGITS[x.denominator]}分之{CN_DIGITS[x.numerator]}"]


def stated(value: object) -> list[str]:
    """A value as the answer states it, for values the question itself contains ("取到3", not a bare "3")."""
    return [f"{verb}{value}" for verb in ("是", "为", "等于", "得到", "返回", "输出", "取到")]


def limit(value: Fraction) -> list[str]:
    """The ways the gold accepts for "the sum tends to / equals this value"."""
    return [f"{verb}{num(value)}" for verb in ("趋近于", "趋于", "接近", "等于", "是", "为")]


def harmonic_mean(a: int, b: int) -> str:
    """The average speed over equal distances at speeds ``a`` and ``b``."""
    return num(Fraction(2 * a * b, a + b))
