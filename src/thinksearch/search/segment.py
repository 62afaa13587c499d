"""Split text into the words the local index stores, for Chinese, English and digits alike.

SQLite's FTS5 tokenizers can't segment Chinese well (``unicode61`` keeps a whole run of
ideographs as one token; ``trigram`` can't match two-character words, the most common kind),
and Python can't register a custom FTS5 tokenizer. So text is split here, in Python, and the
index stores the words separated by spaces; queries go through the same splitting.

Two splitters, recorded in the index so queries always match how it was built:

- ``jieba``: dictionary word segmentation (rjieba, the optional ``jieba`` extra) in search
  mode, which also emits the sub-words of long words (``天气预报`` → ``天气 预报 天气预报``),
  so a query word matches inside a longer indexed word.
- ``bigram``: overlapping character pairs (``北京天气`` → ``北京 京天 天气``), no package needed.
  Each run of ideographs also emits its last character alone, so a one-character query can be
  answered as a prefix query (every occurrence of a character starts a pair or ends a run).

Runs of letters and digits (``iPhone15``, ``2025``) are words in both splitters. Under jieba
a one-character query word matches the indexed words it starts, not those it ends (``猫``
finds ``猫粮`` but not ``小猫``); bigram splitting finds both.

Run as: ``python -c "from thinksearch.search.segment import split; print(split('北京天气', 'bigram'))"``.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Literal

from thinksearch.errors import ThinksearchError

Splitter = Literal["jieba", "bigram"]
SPLITTERS: tuple[str, ...] = ("jieba", "bigram")

# Scripts written without spaces: CJK ideographs (+ extension A, compatibility), kana, hangul.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
# A run of CJK characters, or a run of other letters/digits (word characters minus "_" and CJK).
_RUN_RE = re.compile(f"([{_CJK}]+)|([^\\W_{_CJK}]+)")
_WORD_RE = re.compile(r"[^\W_]")
_CJK_RE = re.compile(f"[{_CJK}]")


def jieba_available() -> bool:
    try:
        import rjieba  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(choice: str) -> Splitter:
    """The splitter a new index uses: ``auto`` means jieba when rjieba is installed.

    >>> resolve("bigram")
    'bigram'
    """
    if choice == "auto":
        return "jieba" if jieba_available() else "bigram"
    if choice not in SPLITTERS:
        raise ThinksearchError(f"unknown tokenizer {choice!r} (allowed: auto, {', '.join(SPLITTERS)})")
    if choice == "jieba" and not jieba_available():
        raise ThinksearchError("tokenizer 'jieba' needs rjieba: pip install 'thinksearch[jieba]' (or use --tokenizer bigram)")
    return choice  # type: ignore[return-value]


@lru_cache(maxsize=1)
def _jieba_cut():
    try:
        import rjieba
    except ImportError:
        raise ThinksearchError(
            "this index was built with jieba word splitting: pip install 'thinksearch[jieba]' "
            "(or rebuild it with --tokenizer bigram)"
        ) from None
    return rjieba.cut_for_search


def _nfkc(text: str) -> str:
    # Full-width letters and digits (ＡＢＣ１２３) and compatibility forms become plain ones.
    return unicodedata.normalize("NFKC", text)


def _bigrams(text: str) -> Iterator[str]:
    """Pieces of the bigram splitting: words, pair lists and run ends (joined by spaces later)."""
    for m in _RUN_RE.finditer(_nfkc(text)):
        run = m.group(1)
        if run is None:
            yield m.group(2)
        elif len(run) == 1:
            yield run
        else:
            yield " ".join(map(operator.add, run, run[1:]))  # overlapping pairs, in C
            yield run[-1]


def index_text(text: str, splitter: Splitter) -> str:
    """What goes into an FTS5 column: the words joined by spaces.

    FTS5's ``unicode61`` tokenizer then splits on the spaces, folds case and drops
    punctuation, identically for documents and queries.

    >>> index_text("北京天气，iPhone15！", "bigram")
    '北京 京天 天气 气 iPhone15'
    """
    if splitter == "jieba":
        return " ".join(_jieba_cut()(_nfkc(text)))
    return " ".join(_bigrams(text))


def split(text: str, splitter: Splitter) -> list[str]:
    """The words of ``text`` as the index keeps them (lower case, punctuation dropped).

    >>> split("北京天气 iPhone15 价格２０２５", "bigram")
    ['北京', '京天', '天气', '气', 'iphone15', '价格', '格', '2025']
    """
    return [w.lower() for w in index_text(text, splitter).split() if _WORD_RE.search(w)]


@dataclass(frozen=True)
class Term:
    """One query word; ``prefix`` for a lone ideograph under bigram splitting."""

    text: str
    prefix: bool = False

    def fts(self) -> str:
        """The term in FTS5 query syntax: always a quoted string, so no word is an operator.

        >>> Term('a"b').fts(), Term("猫", prefix=True).fts()
        ('"a""b"', '"猫"*')
        """
        quoted = '"' + self.text.replace('"', '""') + '"'
        return quoted + "*" if self.prefix else quoted


def query_terms(query: str, splitter: Splitter) -> list[Term]:
    """The distinct words of a query, in order, split the way the index was.

    >>> [t.fts() for t in query_terms("北京天气 猫 GPT-4", "bigram")]
    ['"北京"', '"京天"', '"天气"', '"猫"*', '"gpt"', '"4"']
    """
    terms: list[Term] = []
    seen: set[str] = set()

    def add(word: str, prefix: bool = False) -> None:
        if word not in seen:
            seen.add(word)
            terms.append(Term(word, prefix))

    if splitter == "jieba":
        for w in _jieba_cut()(_nfkc(query)):
            if _WORD_RE.search(w):
                add(w.lower())
        if len(terms) == 1 and len(terms[0].text) == 1 and _CJK_RE.match(terms[0].text):
            # A query of one ideograph also matches the words it starts (猫 → 猫粮); words it
            # ends (小猫) are out of reach, the price of whole words. Only for a lone query:
            # inside a longer one such characters are function words (会, 和) whose prefix
            # would expand to thousands of words and cost tens of milliseconds.
            terms[0] = Term(terms[0].text, prefix=True)
        return terms
    for m in _RUN_RE.finditer(_nfkc(query)):
        run = m.group(1)
        if run is None:
            add(m.group(2).lower())
        elif len(run) == 1:
            add(run, prefix=True)
        else:
            for i in range(len(run) - 1):
                add(run[i : i + 2])
    return terms
