"""Corpus files → passages: what ``thinksearch index build`` reads and how it cuts it up.

A corpus is any mix of files and folders holding:

- ``.jsonl``: one document per line, fields ``title``, ``text`` (or ``content`` / ``snippet``),
  ``url``, ``date``, ``source``; other fields are ignored, a bad line is skipped and counted;
- ``.md`` / ``.markdown``: split into passages at headings, each titled by its heading;
- ``.txt``: paragraphs (blank-line separated), grouped up to ``passage_chars``.

Long texts are cut into passages of at most ``passage_chars`` characters at paragraph or
sentence ends.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUFFIXES = {".jsonl": "jsonl", ".md": "markdown", ".markdown": "markdown", ".txt": "text"}
TEXT_FIELDS = ("text", "content", "snippet")
PASSAGE_CHARS = 800


@dataclass(frozen=True)
class Passage:
    title: str
    text: str
    url: str = ""
    date: str = ""
    source: str = ""


_SENTENCE_END = re.compile(r"(?<=[。！？!?；;…])|(?<=[.!?])\s+")


def chunk(text: str, max_chars: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_chars``, at paragraph, then sentence ends.

    >>> chunk("第一段。\\n\\n第二段很长。还有一句！", 8)
    ['第一段。', '第二段很长。', '还有一句！']
    """
    text = text.strip()
    if len(text) <= max_chars:
        return [text] if text else []
    pieces: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if len(para) <= max_chars:
            pieces.append(para)
            continue
        for sent in _SENTENCE_END.split(para):
            sent = sent.strip()
            while len(sent) > max_chars:  # a sentence longer than a passage: hard cut
                pieces.append(sent[:max_chars])
                sent = sent[max_chars:].lstrip()
            if sent:
                pieces.append(sent)
    # Pack the pieces back together, up to max_chars per passage.
    out: list[str] = []
    for p in pieces:
        if out and len(out[-1]) + 1 + len(p) <= max_chars:
            sep = "\n" if "\n" in text else ""
            out[-1] = out[-1] + (sep or ("" if _is_cjk_end(out[-1]) else " ")) + p
        else:
            out.append(p)
    return out


def _is_cjk_end(s: str) -> bool:
    return bool(s) and "\u3000" <= s[-1] <= "\u9fff"


def _field(record: dict[str, Any], *names: str) -> str:
    for name in names:
        value = record.get(name)
        if value is None or isinstance(value, (dict, list)):
            continue
        value = str(value).strip()
        if value:
            return value
    return ""


def passages_from_jsonl(text: str, name: str, max_chars: int) -> tuple[list[Passage], list[str]]:
    """One document per line; returns the passages and a note per skipped line."""
    out: list[Passage] = []
    bad: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            bad.append(f"line {lineno}: invalid JSON ({e.msg})")
            continue
        if not isinstance(record, dict):
            bad.append(f"line {lineno}: not a JSON object")
            continue
        body = _field(record, *TEXT_FIELDS)
        title = _field(record, "title")
        if not body and not title:
            bad.append(f"line {lineno}: no title or text")
            continue
        url, date, source = _field(record, "url"), _field(record, "date"), _field(record, "source") or name
        for piece in chunk(body, max_chars) or [""]:
            out.append(Passage(title, piece, url, date, source))
    return out, bad


_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_SETEXT = re.compile(r" {0,3}(=+|-+)\s*")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _front_matter(lines: list[str]) -> tuple[dict[str, str], list[str]]:
    """``---`` front matter at the top: its simple ``key: value`` lines, and the lines after it."""
    if not lines or lines[0].strip() != "---":
        return {}, lines
    for i in range(1, len(lines)):
        if lines[i].strip() in ("---", "..."):
            meta = {}
            for line in lines[1:i]:
                key, sep, value = line.partition(":")
                if sep:
                    meta[key.strip().lower()] = value.strip().strip("'\"")
            return meta, lines[i + 1 :]
    return {}, lines


def passages_from_markdown(text: str, name: str, stem: str, max_chars: int) -> list[Passage]:
    """Split at ATX (``## x``) and setext (underlined) headings, never inside code fences.

    A section's title is its heading, after the document's title (front matter ``title`` or
    the first level-1 heading) when they differ; text before any heading takes the file's stem.
    """
    meta, lines = _front_matter(text.splitlines())
    sections: list[tuple[int, str, list[str]]] = [(0, "", [])]
    in_fence = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            m = _HEADING.match(line)
            if m:
                sections.append((len(m.group(1)), m.group(2).strip(), []))
                i += 1
                continue
            body = sections[-1][2]
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if line.strip() and _SETEXT.fullmatch(nxt) and (not body or not body[-1].strip()):
                sections.append((1 if "=" in nxt else 2, line.strip(), []))
                i += 2
                continue
        sections[-1][2].append(line)
        i += 1
    doc_title = meta.get("title") or next((h for level, h, _ in sections if level == 1 and h), "")
    out: list[Passage] = []
    for _, heading, body in sections:
        title = heading or doc_title or stem
        if heading and doc_title and heading != doc_title:
            title = f"{doc_title} › {heading}"
        anchor = f"#{heading}" if heading else ""
        for piece in chunk("\n".join(body), max_chars):
            out.append(Passage(title, piece, name + anchor, meta.get("date", ""), name))
    return out


def passages_from_text(text: str, name: str, stem: str, max_chars: int) -> list[Passage]:
    return [Passage(stem, piece, name, "", name) for piece in chunk(text, max_chars)]


def parse_file(path: Path, name: str, text: str, max_chars: int) -> tuple[list[Passage], list[str]]:
    kind = SUFFIXES[path.suffix.lower()]
    if kind == "jsonl":
        return passages_from_jsonl(text, Path(name).stem, max_chars)
    if kind == "markdown":
        return passages_from_markdown(text, name, path.stem, max_chars), []
    return passages_from_text(text, name, path.stem, max_chars), []
