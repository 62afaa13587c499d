"""Scoring what a model finally says: one scorer for synthesis gates and evaluation alike.

Everything here is pure Python on strings, so the synth gate (is this sample right?) and the
eval (is this answer right?) give the same verdict on the same text:

- :func:`final_answer`: the text after ``</thinking>`` (None when the model opened it and never
  closed it: that is scored as "no final answer", not as an error; a model that never thinks,
  like an untuned base model, is scored on its whole reply);
- :func:`normalize`: the comparison form (NFKC, case, spaces, thousands separators, small
  Chinese numerals);
- :func:`matches_gold`: does a final answer hold the accepted answers (``match`` any / all),
  not denied where they stand ("不是骗局"), not only repeated from the question, and none of
  the gold's ``wrong`` options (an answer naming every option of a choice is not right);
- :func:`key_fact_present`: the same check for an answerable search question's key fact;
- :func:`abstains`: does an answer say the results do not hold what was asked;
- :func:`unsupported_numbers`: numbers in an answer found neither in the question nor in the
  results it got.

Gold rows themselves are checked by :mod:`thinksearch.gold`.

Run as: ``python -c "from thinksearch.scoring import matches_gold; print(matches_gold('答案是十四', ['14']))"``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping, Sequence

from thinksearch.format import THINK_CLOSE, THINK_OPEN, TOOL_CLOSE, TOOL_OPEN

MATCH_MODES = ("any", "all")

# ----------------------------------------------------------------------------- final answer


def final_answer(output: str) -> str | None:
    """What the model finally says: the text after the last ``</thinking>``, tool-call blocks removed.

    The last one, because an agent transcript may hold a ``<thinking>`` per round and the
    answer follows the final one. An output that never opens ``<thinking>`` (a base model,
    or a turn after the search results) is all answer; one that opens it and never closes it
    has no final answer (None).

    >>> final_answer("<thinking>\\n3×4=12\\n</thinking>\\n答案是12。")
    '答案是12。'
    >>> final_answer("<thinking>\\n设边长为a") is None
    True
    >>> final_answer("<thinking>x</thinking><tool_call>{}</tool_call>"), final_answer("答案是12。")
    ('', '答案是12。')
    """
    end = output.rfind(THINK_CLOSE)
    if end < 0 and THINK_OPEN in output:
        return None
    rest = output[end + len(THINK_CLOSE) :] if end >= 0 else output
    rest = re.sub(re.escape(TOOL_OPEN) + r".*?(?:" + re.escape(TOOL_CLOSE) + r"|$)", "", rest, flags=re.S)
    return rest.strip()


# ----------------------------------------------------------------------------- normalising

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_RUN = re.compile(r"[零〇一二两三四五六七八九十百千万]+")
# A lone digit character is a number only where it counts something or names a weekday/rank:
# "两个" is 2, but "一共" or "统一" are words, and turning them into 1 would let a gold "1"
# match any sentence that says "一共".
_COUNTERS = frozenset("个种次条天年岁米元块只人名场盆倍分点号位斤克吨公小时秒周月日张本件层辆颗支队局步项门届枚座架台部"
                      "章节句行列页度期代")
"""Characters that may follow a lone numeral character (公 of 公里, 小 of 小时 included)."""
_ORDINAL_BEFORE = ("第", "星期", "周", "礼拜")


def cn_to_int(text: str) -> int | None:
    """A small Chinese numeral (below 一亿) as an int, or None if it is not one.

    >>> [cn_to_int(t) for t in ("十四", "二十", "两", "一百零五", "三千二百", "两万五千", "十万")]
    [14, 20, 2, 105, 3200, 25000, 100000]
    >>> [cn_to_int(t) for t in ("四二", "二零二五", "千", "万一", "千万")]
    [None, None, None, None, None]
    """
    if not text or any(ch not in _CN_DIGITS and ch not in _CN_UNITS and ch != "万" for ch in text):
        return None
    if not (text[0] in _CN_DIGITS or text[0] == "十"):
        return None  # "千克", "百度", "万一", "千万不要" are words, not numbers
    if "万" in text:
        high, _, low = text.partition("万")
        h = cn_to_int(high)
        lo = cn_to_int(low) if low else 0
        if h is None or lo is None:
            return None
        return h * 10000 + lo
    total, digit, last_unit = 0, None, 10**9
    for ch in text:
        if ch in "零〇" and digit is None:
            continue  # the placeholder in 一百零五
        if ch in _CN_DIGITS:
            if digit is not None:
                return None  # two digits in a row ("四二", "二零二五") is a code or a year, not a count
            digit = _CN_DIGITS[ch]
        else:
            unit = _CN_UNITS[ch]
            if unit >= last_unit:
                return None
            total += (1 if digit is None else digit) * unit
            digit, last_unit = None, unit
    return total + (digit or 0)


def _convert_cn(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        run = m.group(0)
        if len(run) > 1 and run.endswith("千") and text[m.end() : m.end() + 1] in ("克", "米", "瓦"):
            # 两千克 is 2 kg: 千 belongs to the unit here, not to the number.
            value = cn_to_int(run[:-1])
            return run if value is None else f"{value}千"
        if len(run) == 1:
            before = text[max(0, m.start() - 2) : m.start()]
            after = text[m.end() : m.end() + 1]
            ordinal = any(before.endswith(p) for p in _ORDINAL_BEFORE)
            if not ordinal and (run == "一" or not after or after not in _COUNTERS):
                return run
        value = cn_to_int(run)
        return run if value is None else str(value)

    return _CN_RUN.sub(repl, text)


def _scale_wan(text: str) -> str:
    # "3.5万" and "35000" are the same figure; spell the scaled form out so both compare equal.
    def repl(m: re.Match[str]) -> str:
        scale = {"万": 10**4, "亿": 10**8, "万亿": 10**12}[m.group(2)]
        value = Decimal(m.group(1)) * scale
        return format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")

    return re.sub(r"(\d+(?:\.\d+)?)(万亿|亿|万)", repl, text)


def normalize(text: str) -> str:
    """The comparison form of an answer: NFKC (full width to half width), case-folded,
    without whitespace or thousands separators, with small Chinese numerals as digits.

    >>> normalize("共 １，０００ 元")
    '共1000元'
    >>> normalize("答案：十四个")
    '答案:14个'
    >>> normalize("星期三，一共两场，共3.5万人")
    '星期3,一共2场,共35000人'
    >>> normalize("Guido van Rossum")
    'guidovanrossum'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(text.split())
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)
    text = _convert_cn(text)
    return _scale_wan(text)


# ----------------------------------------------------------------------------- numbers

_NUMBER = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?")
_CITATION = re.compile(r"\[\d+(?:[,，\s]*\d+)*\]|【\d+】|\[\^\d+\]")
_LIST_MARKER = re.compile(r"(?m)^\s*(?:\(?\d{1,2}[.)、]|（\d{1,2}）)(?!\d)")


def numbers(text: str) -> list[Decimal]:
    """The numbers a text states, in order, as Decimals (``04`` equals ``4``).

    Citation markers (``[1]``, ``【2】``) and list markers at the start of a line (``1.``,
    ``2)``, ``（3）``) are not figures and are skipped. A hyphen is a minus sign only where
    no digit comes right before it ("2025-04" is two numbers, not 2025 and -4).

    >>> [_plain(n) for n in numbers("1. 金价为3,500美元[1]，涨了十四%。\\n2) 截至2025-04-23")]
    ['3500', '14', '2025', '4', '23']
    """
    text = _CITATION.sub(" ", unicodedata.normalize("NFKC", text))
    text = _LIST_MARKER.sub(" ", text)
    return [Decimal(m.group(0)).normalize() for m in _NUMBER.finditer(_normalize_words(text))]


def _plain(n: Decimal) -> str:
    return format(n, "f")


def _normalize_words(text: str) -> str:
    """:func:`normalize` that keeps a space between words, so digits on both sides of a gap
    stay two numbers ("3 5" is not 35)."""
    return " ".join(normalize(part) for part in text.split())


@dataclass(frozen=True)
class NumberSupport:
    """The numbers of an answer and which of them nothing the model saw supports."""

    found: tuple[str, ...]
    unsupported: tuple[str, ...]

    @property
    def share(self) -> float | None:
        """Unsupported share of the answer's numbers; None when it states none."""
        return len(self.unsupported) / len(self.found) if self.found else None


def unsupported_numbers(answer: str, question: str, results: str | Sequence[str] = "") -> NumberSupport:
    """The numbers in ``answer`` that appear neither in ``question`` nor in ``results``.

    Numbers compare by value (``3,500`` = ``3500`` = ``三千五百``; ``04`` = ``4``), so a figure
    copied from a result in another spelling still counts as supported. A year the question
    names is in the question, hence supported. The rate counts each mention, so an answer
    that repeats an invented figure is charged for every repetition.

    >>> s = unsupported_numbers("金价约3,500美元[1]，涨了27%。", "2025年4月金价多少？", "金价接近3500美元/盎司")
    >>> s.found, s.unsupported, round(s.share, 2)
    (('3500', '27'), ('27',), 0.5)
    >>> unsupported_numbers("搜索结果里没有该数据。", "金价多少？").share is None
    True
    """
    if not isinstance(results, str):
        results = "\n".join(results)
    seen = set(numbers(question)) | set(numbers(results))
    found = numbers(answer)
    return NumberSupport(tuple(_plain(n) for n in found), tuple(_plain(n) for n in found if n not in seen))


_EQUALS = re.compile(r"=|＝|≈|等于")
_RESULT_END = re.compile(r"=|＝|≈|等于|[，,。；;：:\n]")
_OPERATION = re.compile(r"[×*/÷+^]|\\(?:times|cdot|div|frac)|\d\s*[-−]\s*\d")


def worked_results(text: str) -> list[Decimal]:
    """The values a worked text computes: after each ``=`` (``≈``, ``等于``), the one number
    that stands there alone, up to the next ``=`` or punctuation, as an absolute value.

    A side that still holds an operation is a step, not a result ("= 102.4 × 1000 = 102400"
    computes 102400 only). Signs are dropped because "x = ±7" computes both 7 and -7.

    >>> [_plain(n) for n in worked_results("240元 × 8折 = 1920元。1920元 - 20元 = 1900元，答案是172。")]
    ['1920', '1900']
    >>> [_plain(n) for n in worked_results("\\(102.4 \\times 10^2 = 102.4 \\times 1000 = 102400\\) 毫米；x = \\pm 7")]
    ['102400', '7']
    """
    text = unicodedata.normalize("NFKC", text)
    found = []
    for m in _EQUALS.finditer(text):
        end = _RESULT_END.search(text, m.end())
        side = text[m.end() : end.start() if end else len(text)]
        values = numbers(side)
        if len(values) == 1 and not _OPERATION.search(side):
            found.append(abs(values[0]))
    return found


# ----------------------------------------------------------------------------- gold matching


def _is_number(text: str) -> bool:
    return re.fullmatch(r"-?\d+(?:\.\d+)?", text) is not None


def _contains(haystack: str, needle: str) -> bool:
    """``needle`` in ``haystack``, where a needle that starts or ends with a digit must not run
    into more digits (gold "14" is not in "140" nor in "2.14")."""
    if not needle:
        return False
    lead = r"(?<![\d.])" if needle[0].isdigit() else ""
    trail = r"(?!\.?\d)" if needle[-1].isdigit() else ""
    return re.search(lead + re.escape(needle) + trail, haystack) is not None


def conclusion(final: str, sentences: int = 2) -> str:
    """The last ``sentences`` sentences of an answer: where it states its result.

    A numeric gold is looked for here only. A long worked answer mentions many numbers on its
    way (``\\frac{25}{2}`` holds a "2"), so a numeric gold found anywhere in it would score a
    wrong result as right; measured on the base model's replies, that happened on 1 of 6
    arithmetic questions.

    The numbers that open list items ("6. **检查**") are dropped first: a worked answer cut off
    at its 6th step ended in "6." and scored as right for gold 6 (base model, quickstart run).

    >>> conclusion("先算25÷2=12.5。再减。所以箱子重12.5千克。")
    '再减。所以箱子重12.5千克。'
    >>> conclusion("5. 分析：摸出7个球。\\n\\n6.")
    '分析：摸出7个球。'
    """
    final = _LIST_MARKER.sub("", final)
    parts = [p for p in re.split(r"(?<=[。！？!?\n])", final.strip()) if p.strip()]
    return "".join(parts[-sentences:]).strip()


def answer_in(final: str, gold: str, anywhere: bool = False) -> bool:
    """Is one accepted answer in a final answer, after :func:`normalize` on both sides?

    A numeric gold is looked for in the answer's :func:`conclusion` only (``anywhere``: in the
    whole text, for checking that a passage holds a fact), and also matches the same value
    written differently ("14.0"; "1.4e1" does not).

    >>> answer_in("所以妈妈再过6年是女儿的3倍。", "6")
    True
    >>> answer_in("一共要赛28场", "二十八"), answer_in("一共要赛280场", "28")
    (True, False)
    >>> answer_in("结果是14.0", "14")
    True

    A word gold must not be denied where it stands ("不是骗局", "诈骗不可能"); one affirmed
    mention is enough.

    >>> answer_in("诈骗不可能。", "诈骗"), answer_in("这不是骗局吗？当然是骗局。", "骗局")
    (False, True)
    """
    g = normalize(gold)
    if _is_number(g):
        end = final if anywhere else conclusion(final)
        return _contains(normalize(end), g) or Decimal(g) in set(numbers(end))
    text = normalize(final)
    if anywhere:
        return _contains(text, g)
    return any(not _negated(text, m.start(), m.end()) for m in re.finditer(re.escape(g), text))


# A term the answer denies is not its answer: "不是骗局", "并非长度单位", "诈骗不可能". Only the
# words right beside the term count, so "骗局，不要转账" or "不确定，但多半是骗局" still match.
_NEGATION_BEFORE = re.compile(r"(?:不是|并非|并不是|不属于|不算|没有|不会是|不可能是|不可能|不)$")
_NEGATION_AFTER = re.compile(r"^(?:是?不可能|并不|不是|是错的|是错误的|不对|不成立|不存在)")


def _negated(text: str, start: int, end: int) -> bool:
    """Is the gold term at ``text[start:end]`` denied by the words right beside it?

    >>> [_negated(t, t.index("骗局"), t.index("骗局") + 2) for t in ("这是骗局", "这不是骗局", "骗局不可能")]
    [False, True, True]
    """
    return _NEGATION_BEFORE.search(text[max(0, start - 4) : start]) is not None or \
        _NEGATION_AFTER.match(text[end : end + 5]) is not None


def matches_gold(final: str | None, answers: Sequence[str], match: str = "any", anywhere: bool = False,
                 question: str | None = None, wrong: Sequence[str] = ()) -> bool:
    """Does a final answer hold the gold: one accepted answer (``any``) or each of them (``all``)?

    ``final`` None (no ``</thinking>``) never matches. With ``question``, the question's own
    clauses repeated in the answer are left out first (:func:`without_echo`).

    >>> matches_gold("唐僧有三个徒弟：孙悟空、猪八戒和沙僧。", ["孙悟空", "猪八戒", "沙僧"], "all")
    True
    >>> matches_gold("沸点100摄氏度", ["100", "0"], "all"), matches_gold(None, ["1"])
    (False, False)

    ``wrong``: the answers that are wrong here (the other option of a choice). An answer that
    affirms one of them is not right even where it also holds the gold, so an answer that names
    every option does not pass; a denied one ("不是B店更便宜") does not count against it.

    >>> q, right, other = "A店和B店哪家更便宜？", ["A店更便宜"], ["B店更便宜"]
    >>> [matches_gold(a, right, question=q, wrong=other) for a in ("A店更便宜。", "A店更便宜，B店更便宜。",
    ...                                                            "A店更便宜，不是B店更便宜。")]
    [True, False, True]
    """
    if match not in MATCH_MODES:
        raise ValueError(f"match must be one of {', '.join(MATCH_MODES)}, got {match!r}")
    if final is None or not answers:
        return False
    outside, held = final, set()
    if question:
        final = outside = without_echo(final, question)
        # A gold the question itself holds ("6" in "用6、7、8……") counts only outside the
        # answer's copies of the question, whole clauses or not.
        held = {a for a in answers if answer_in(question, a, anywhere=True)}
        if held:
            outside = without_copies(final, question)
    # A wrong option counts outside the question's whole clauses only: "光年是时间单位，……" affirms
    # the wrong half of "光年是时间单位还是长度单位？", though the question holds those words too.
    if any(answer_in(final, w, anywhere) for w in wrong):
        return False
    hits = (answer_in(outside if a in held else final, a, anywhere) for a in answers)
    return any(hits) if match == "any" else all(hits)


_BOUNDARY = r"，,。；;：:？?！!\s"
_CLAUSE = re.compile(rf"[{_BOUNDARY}]+")


def without_echo(final: str, question: str, min_chars: int = 6) -> str:
    """``final`` without the clauses of ``question`` it repeats word for word.

    A clause counts where it stands whole, between punctuation or spaces. Restating the
    question is not answering it: "用6、7、8三个数字组成……，一共能组成20个" holds
    the gold 6 only through the question's own "6" (a kept synth row, gold 6 and 876). Clauses
    shorter than ``min_chars`` stay, so a short shared phrase ("最大的是") is not cut.

    >>> without_echo("用6、7、8三个数字组成没有重复数字的三位数，一共能组成20个。",
    ...              "用6、7、8三个数字组成没有重复数字的三位数，一共能组成几个？")
    '，一共能组成20个。'
    """
    for clause in sorted(_CLAUSE.split(question), key=len, reverse=True):
        if len(clause) >= min_chars:
            # Whole clauses only: "data = f.read" echoed inside the fix "data = f.read()" stays.
            final = re.sub(rf"(?<![^{_BOUNDARY}]){re.escape(clause)}(?![^{_BOUNDARY}])", "", final)
    return final


def without_copies(final: str, question: str, min_chars: int = 6) -> str:
    """``final`` with every stretch of at least ``min_chars`` characters it shares with ``question`` cut out.

    Stricter than :func:`without_echo`, which cuts whole clauses only: it is applied to golds
    the question itself holds, where a restatement that drops a word is still a restatement.
    A synth row kept as verified read "6、7、8三个数字组成没有重复数字的三位数，一共能组成216个"
    (gold 6 and 876; the question opens with "用"), so the whole clause never matched and the
    question's own 6 passed for the answer. A cut leaves a space, so the digits on either side stay apart.

    >>> without_copies("6、7、8三个数字组成没有重复数字的三位数，一共能组成216个。最大的是876。",
    ...                "用6、7、8三个数字组成没有重复数字的三位数，一共能组成几个？最大的是哪个？")
    ' 216个。最大的是876。'
    """
    out: list[str] = []
    i = 0
    while i < len(final):
        n = min_chars
        while i + n <= len(final) and final[i : i + n] in question:
            n += 1
        if n > min_chars:
            out.append(" ")
            i += n - 1
        else:
            out.append(final[i])
            i += 1
    return "".join(out)


def key_fact_present(final: str | None, row: Mapping[str, Any]) -> bool | None:
    """For an answerable search row: does the final answer state its key fact? None for rows
    that carry no key fact (unanswerable ones, or rows without gold)."""
    if row.get("answerable") is False or not row.get("answers"):
        return None
    return matches_gold(final, row["answers"], row.get("match", "any"))


# ----------------------------------------------------------------------------- abstention

_ZH_SOURCE = r"(?:搜索|检索|查询|查到的|提供的|给出的|现有|已有|这些|以上|上述|所给|参考)?(?:结果|资料|信息|材料|内容|文档|语料|来源|网页)"
_ZH_INFO = r"(?:相关|具体|有关|确切|准确|对应|这方面|该|此|这|这个|这一|任何|足够|最新|当前|实时)?的?(?:信息|数据|内容|记录|资料|数字|报道|答案|说明|消息)"
_ZH_PATTERNS = [
    _ZH_SOURCE + r"[^。.!?\n]{0,12}?(?:没有|没|并没有|并未|未|不|无)(?:提到|提及|提供|包含|涉及|给出|显示|说明|列出|记载|写明|包括|覆盖|找到|出现|查到)",
    _ZH_SOURCE + r"[^。.!?\n]{0,6}?(?:中|里|内)?(?:没有|并没有|无|缺少|缺乏|不含)[^。.!?\n]{0,20}?" + _ZH_INFO,
    r"(?:未能?|没能|没有|无法|不能|找不到|查不到|搜不到)(?:找到|查到|搜到|检索到|获取|获得|得到|提供|确认|确定|得知|判断|回答|给出)?[^。.!?\n]{0,12}?" + _ZH_INFO,
    r"(?:无法|不能|没法|难以)(?:从|根据|依据|通过)[^。.!?\n]{0,20}?(?:确定|得知|判断|回答|找到|得出|知道|给出|获取)",
    r"(?:无法|不能|难以)(?:确定|确认|回答|得知|判断|提供)",
    r"(?:找不到|查不到|搜不到|没找到|没查到|未查到|未找到|未检索到|(?:没能|未能)(?:找到|查到|搜到|检索到))",
    # "结果里没有X": whatever X is, the model says the results lack it.
    _ZH_SOURCE + r"(?:中|里|内|当中)(?:并|都|也)?(?:没有|没|未|不包含|无)",
    r"暂(?:无|未)(?:相关|具体)?(?:信息|数据|消息|资料)",
    r"(?:不掌握|没有掌握|不了解)[^。.!?\n]{0,10}?(?:信息|数据|情况)",
    # The model says it does not know ("我不知道答案"): honest, and not an invented answer.
    r"我(?:也|并|确实|真的)?(?:不|并不)(?:知道|确定|清楚)",
]
_EN_PATTERNS = [
    r"\b(?:results?|sources?|passages?|documents?|search|snippets?)\b[^.!?\n]{0,40}?\b(?:do(?:es)?n['’]?t|do(?:es)? not|did not|didn['’]?t)\s+(?:mention|contain|include|provide|say|specify|state|show|cover|give|list)",
    r"\b(?:no|not any|insufficient|not enough)\s+(?:relevant\s+|specific\s+|up-to-date\s+|current\s+)?(?:information|data|mention|details|results?|figures?|evidence)\b",
    r"\b(?:could(?:n['’]?t| not)|can(?:['’]?t|not)|unable to|was not able to|wasn['’]?t able to)\s+(?:find|determine|tell|answer|confirm|locate|verify|identify|provide)\b",
    r"\bnot\s+(?:found|mentioned|specified|available|included|covered|stated)\b(?!\s+(?:only|just)\b)",
    r"\b(?:do(?:n['’]?t| not)|does(?:n['’]?t| not))\s+have\s+(?:the\s+|any\s+|enough\s+)?(?:information|data|details|figures?)\b",
]
_ABSTAIN = re.compile("|".join(f"(?:{p})" for p in _ZH_PATTERNS + _EN_PATTERNS), re.I)


def abstains(answer: str | None) -> bool:
    """Does the answer say the results (or the model) do not hold what was asked?

    It looks for a statement that information is missing, not for negation in general:
    "马龙没有退役" (he did not retire) is an answer, "结果中没有提到马龙是否退役" is not.

    >>> abstains("搜索结果中没有提到今天的金价。"), abstains("未找到相关信息。")
    (True, True)
    >>> abstains("马龙没有退役，他仍在参赛。"), abstains("金价约为每盎司3500美元。")
    (False, False)
    >>> abstains("我不确定答案，建议查询官方信息。"), abstains("我知道答案是华盛顿。")
    (True, False)
    >>> abstains(None)
    False
    """
    if not answer:
        return False
    return _ABSTAIN.search(unicodedata.normalize("NFKC", answer)) is not None
