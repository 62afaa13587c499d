"""The relevance gate of search rows: do the results concern what the question asks about?

A search row's answer must rest on results about the question's subject; a small teacher,
shown a passage about something else, quotes it as if it answered (issue 19). The rule:

- The question's **key terms** are its content words: the words of the same jieba splitting
  the local index uses (:mod:`thinksearch.search.segment`), less question words, time words
  and other words every question of a kind shares (什么, 多少, 今天, 最新 …). Without rjieba
  installed, the content bigrams of the question stand in for the words.
- A result's **coverage** is the share of key terms found in its title or text: a word counts
  1 when it is there whole, and the share of its search-mode sub-words there otherwise
  (``黄金价格`` → 黄金, 金价, 价格), so a result that says 金价 where the question says 黄金价格
  still counts, and one about 日本首相 earns half of ``英国首相``.
- A result is **relevant** when its coverage reaches ``THRESHOLD`` and it names every proper
  noun among the key terms (places, people, organisations, brands, by jieba's part-of-speech
  tags; whole, or half of its sub-words): coverage alone let a passage on 北京's PM2.5 answer
  西安's, and 阿根廷比索 answer 墨西哥比索, because the generic words (PM2.5, 浓度, 比索, 汇率) made
  the 60%. bench/bench_relevance.py measures the rule on the shipped corpus and the training
  search pool.

Run as: ``python -c "from thinksearch.synth.relevance import key_terms; print(key_terms('英国首相叫什么名字？'))"``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.search.base import Result

THRESHOLD = 0.6
"""Least coverage of a relevant result. Above one half on purpose: with two key terms (英国首相
→ 英国 + 首相), a result holding only the generic one (首相, of another country) is not about
the question (bench/results/relevance.json reads cases on both sides)."""

# Words a question uses to ask, to place itself in time, or to be polite: they are in every
# question of a kind, so a result holding them says nothing about the subject.
STOPWORDS = frozenset("""
什么 多少 哪 哪个 哪些 哪里 哪儿 哪天 哪家 哪位 哪一 谁 几 几点 几号 第几 怎么 怎么样 怎样 如何 是否 吗 呢 吧 啊 么
的 了 是 有 在 和 与 及 对 由 被 把 给 为 从 到 把 会 能 可以 要 需要 还 也 都 就 又 一般 一下 现在 目前 当前 今天 今日
明天 昨天 昨晚 今晚 今年 本周 这周 本月 这个 那个 最新 最近 近期 实时 眼下 如今 请问 告诉 我 你 我们 查 查询 知道 一个
现任 当今 叫 名字 情况 怎么回事 有没有 是不是 多久 多长 多高 多大 多远 什么样 为什么 哪种 啥 有何 还有 了吗 没有 结果
具体 开始 结束 一次 时候 还是 哪部 哪年 哪场 哪队 多少度 多少钱 变化 内容 公布 执行 发生 举行 举办 宣布 出来 报 卖 用 一届 这一届 一步 几天 这几天
""".split())

_WORD_RE = re.compile(r"[^\W_]")
_CJK_RE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


# jieba's tags of proper nouns: place, person, organisation, other name (brands, products).
NAME_TAGS = frozenset({"ns", "nr", "nrt", "nrfg", "nt", "nz"})


@dataclass(frozen=True)
class Term:
    """A key term and the sub-words that earn it partial credit when it is not found whole."""

    word: str
    parts: tuple[str, ...] = ()
    name: bool = False
    """A proper noun (jieba's tag): a relevant result must name it."""


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _jieba_terms(question: str) -> list[Term]:
    import rjieba

    text = _fold(question)
    tags = {w.strip(): tag for w, tag in reversed(rjieba.tag(text))}  # the first tag of a word wins
    terms: list[Term] = []
    for w in rjieba.cut(text):
        w = w.strip()
        if not _WORD_RE.search(w) or w in STOPWORDS or (len(w) == 1 and _CJK_RE.match(w)):
            continue  # one ideograph alone (新, 卖, 钱) is too common to tell subjects apart
        parts = tuple(p for p in rjieba.cut_for_search(w) if p != w and len(p) >= 2 and p not in STOPWORDS)
        if w not in (t.word for t in terms):
            terms.append(Term(w, parts, tags.get(w) in NAME_TAGS))
    return terms


def _bigram_terms(question: str) -> list[Term]:
    # Without word splitting: stop words (one-character ones too, the price of having no
    # word boundaries) are cut out of the text first, then each remaining
    # run of ideographs gives its bigrams, and each run of letters or digits is a term.
    text = _fold(question)
    for w in sorted(STOPWORDS, key=len, reverse=True):  # longest first: 什么样 before 什么
        text = text.replace(w, " ")
    terms: list[Term] = []
    for m in re.finditer(r"([\u3400-\u9fff\uf900-\ufaff]+)|([^\W_\u3400-\u9fff\uf900-\ufaff]+)", text):
        words = [m.group(2)] if m.group(2) else [m.group(1)[i:i + 2] for i in range(len(m.group(1)) - 1)]
        terms += [Term(w) for w in words if w not in (t.word for t in terms)]
    return terms


def key_terms(question: str, splitter: str = "auto") -> list[Term]:
    """The content words of ``question``: jieba words (``auto`` with rjieba installed) or bigrams.

    >>> [t.word for t in key_terms("英国首相叫什么名字？", "bigram")]
    ['英国', '国首', '首相']
    """
    from thinksearch.search import segment

    return _jieba_terms(question) if segment.resolve(splitter) == "jieba" else _bigram_terms(question)


def coverage(terms: Sequence[Term], text: str) -> float:
    """Share of ``terms`` found in ``text`` (partial credit by sub-words); 0 when there are none.

    >>> coverage([Term("英国首相", ("英国", "首相"))], "日本首相石破茂")
    0.5
    """
    if not terms:
        return 0.0
    text = _fold(text)
    return sum(_found(t, text) for t in terms) / len(terms)


def _found(term: Term, folded: str) -> float:
    """1 when ``term`` is in ``folded`` whole, else the share of its sub-words there."""
    if term.word in folded:
        return 1.0
    return sum(p in folded for p in term.parts) / len(term.parts) if term.parts else 0.0


def names_found(terms: Sequence[Term], text: str) -> bool:
    """Whether ``text`` names every proper noun of ``terms`` (whole, or half its sub-words).

    >>> names_found([Term("西安", name=True), Term("浓度")], "北京PM2.5浓度十年变化")
    False
    >>> names_found([Term("三星电子", ("三星", "电子"), name=True)], "三星Galaxy S25")
    True
    """
    text = _fold(text)
    return all(_found(t, text) >= 0.5 for t in terms if t.name)


def result_text(result: "Result") -> str:
    return f"{result.title}\n{result.snippet}"


def relevant(question: str, results: Sequence["Result"], threshold: float = THRESHOLD,
             splitter: str = "auto") -> list[bool]:
    """For each result, whether it concerns ``question``'s subject: coverage >= ``threshold``,
    and every proper noun of the question named (:func:`names_found`).

    A question with no key term at all (every word a stop word) cannot be checked, and every
    result counts as relevant: the gate refuses what it can tell apart, nothing more.

    >>> from thinksearch.search.base import Result
    >>> relevant("英国首相叫什么名字？", [Result("英国首相斯塔默", "…"), Result("日本首相", "石破茂")], splitter="bigram")
    [True, False]
    """
    terms = key_terms(question, splitter)
    if not terms:
        return [True] * len(results)
    texts = [result_text(r) for r in results]
    return [coverage(terms, t) >= threshold and names_found(terms, t) for t in texts]
