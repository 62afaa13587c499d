"""The ``local`` backend: a SQLite FTS5 index (bm25 ranking) over your own files.

A corpus is any mix of files and folders holding:

- ``.jsonl``: one document per line, fields ``title``, ``text`` (or ``content`` / ``snippet``),
  ``url``, ``date``, ``source``; other fields are ignored, a bad line is skipped and counted;
- ``.md`` / ``.markdown``: split into passages at headings, each titled by its heading;
- ``.txt``: paragraphs (blank-line separated), grouped up to ``passage_chars``.

Long texts are cut into passages of at most ``passage_chars`` characters at paragraph or
sentence ends. The index is one SQLite file: ``files`` (path, size, mtime, sha256, so a
rebuild re-reads only files whose size or mtime changed and re-indexes only those whose
content did; files gone from the corpus are dropped), ``passages`` (what a result shows) and
an FTS5 table over the passages' words as split by :mod:`thinksearch.search.segment` (the
splitter is stored in the index, and queries are split the same way). Each file is indexed
in the same transaction as its ``files`` row, so an interrupted build resumes where it stopped.

A query's words are OR-ed and ranked by bm25 (title weighted over body), like a web search
box: a document matching more and rarer words ranks higher. Words found in more than
``COMMON_DF`` of all passages (的, 是, …) are dropped from a query that has rarer words, which
keeps latency low and barely changes the ranking.

Run as: ``thinksearch index build CORPUS... --out index.sqlite`` then
``thinksearch index search index.sqlite "北京 天气"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from thinksearch.errors import ThinksearchError
from thinksearch.search import segment
from thinksearch.search.base import Result, SearchError

FORMAT_VERSION = "1"
SUFFIXES = {".jsonl": "jsonl", ".md": "markdown", ".markdown": "markdown", ".txt": "text"}
TEXT_FIELDS = ("text", "content", "snippet")
COMMON_DF = 0.05
"""A query word in more than this share of passages (and in over COMMON_MIN_DOCS of them) is
dropped when the query has rarer words: scoring every passage holding 的 or 是 costs
milliseconds and barely moves the ranking (bm25 gives such words little weight)."""
COMMON_MIN_DOCS = 2000
TITLE_WEIGHT = 2.0
PASSAGE_CHARS = 800
_COMMIT_PASSAGES = 20_000  # commit (at a file boundary) once this many passages are pending

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, passages INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS passages(
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, title TEXT NOT NULL, text TEXT NOT NULL,
    url TEXT NOT NULL, date TEXT NOT NULL, source TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS passages_file ON passages(file_id);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(title, body, tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE IF NOT EXISTS fts_vocab USING fts5vocab(fts, 'row');
CREATE TABLE IF NOT EXISTS common(term TEXT PRIMARY KEY, docs INTEGER NOT NULL) WITHOUT ROWID;
"""


# ----------------------------------------------------------------------------- passages


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


# ----------------------------------------------------------------------------- building


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class BuildReport:
    """What a build did; ``summary()`` is what the CLI prints."""

    index: str
    tokenizer: str
    files_seen: int = 0
    files_indexed: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    passages_added: int = 0
    passages_total: int = 0
    ignored: int = 0
    """Files under the corpus folders that are not .jsonl/.md/.txt."""
    skipped: list[Skipped] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)
    rebuilt: str = ""
    seconds: float = 0.0

    def summary(self) -> list[str]:
        lines = [
            f"index {self.index} ({self.tokenizer} words): {self.passages_total} passages from "
            f"{self.files_seen - len(self.skipped)} files in {self.seconds:.1f}s",
            f"  files: {self.files_indexed} indexed, {self.files_unchanged} unchanged, "
            f"{self.files_removed} removed, {len(self.skipped)} skipped"
            + (f", {self.ignored} ignored (not .jsonl/.md/.txt)" if self.ignored else ""),
            f"  passages: {self.passages_added} added",
        ]
        if self.rebuilt:
            lines.insert(1, f"  rebuilt from scratch: {self.rebuilt}")
        for s in self.skipped:
            lines.append(f"  skipped {s.path}: {s.reason}")
        if self.bad_lines:
            lines.append(f"  {len(self.bad_lines)} JSONL lines skipped, e.g. {self.bad_lines[0]}")
        return lines


def discover(corpus: Sequence[str | os.PathLike[str]]) -> tuple[list[tuple[Path, str]], list[Skipped], int]:
    """The files to index as (path, name shown in results), files skipped, and ignored count."""
    if not corpus:
        raise ThinksearchError("no corpus given: pass files or folders of .jsonl, .md or .txt")
    found: list[tuple[Path, str]] = []
    skipped: list[Skipped] = []
    ignored = 0
    for arg in corpus:
        root = Path(arg)
        if not root.exists() and not root.is_symlink():
            raise ThinksearchError(f"corpus path not found: {root}")
        if not root.is_dir():
            if root.suffix.lower() in SUFFIXES:
                found.append((root, root.name))
            else:
                skipped.append(Skipped(str(root), f"unsupported file type {root.suffix or '(none)'!r} (use .jsonl, .md or .txt)"))
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                p = Path(dirpath) / fn
                if fn.startswith("."):
                    continue
                if p.suffix.lower() in SUFFIXES:
                    found.append((p, p.relative_to(root).as_posix()))
                else:
                    ignored += 1
    seen: set[str] = set()
    unique = []
    for p, name in found:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append((p, name))
    if not unique and not skipped:
        where = ", ".join(map(str, corpus))
        raise ThinksearchError(f"empty corpus: no .jsonl, .md or .txt files in {where}")
    return unique, skipped, ignored


def _read_text(path: Path) -> tuple[str | None, bytes, str]:
    """(text or None, raw bytes, reason it can't be used)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        return None, b"", f"cannot read: {e.strerror or e}"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return None, raw, (
            f"not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "convert it, e.g. iconv -f GBK -t UTF-8"
        )
    return text, raw, ""


def parse_file(path: Path, name: str, text: str, max_chars: int) -> tuple[list[Passage], list[str]]:
    kind = SUFFIXES[path.suffix.lower()]
    if kind == "jsonl":
        return passages_from_jsonl(text, Path(name).stem, max_chars)
    if kind == "markdown":
        return passages_from_markdown(text, name, path.stem, max_chars), []
    return passages_from_text(text, name, path.stem, max_chars), []


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=30)
    else:
        conn = sqlite3.connect(path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: FTS5 segment merges re-read pages
    return conn


def _meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta"))


def _open_existing_meta(conn: sqlite3.Connection, path: Path) -> dict[str, str]:
    try:
        meta = _meta(conn)
    except sqlite3.DatabaseError as e:
        raise SearchError(f"{path} is not a thinksearch index ({e}); build one with `thinksearch index build CORPUS --out {path}`") from None
    if meta.get("format") != FORMAT_VERSION or meta.get("tokenizer") not in segment.SPLITTERS:
        raise SearchError(f"{path} is not a thinksearch index (format {meta.get('format')!r}); rebuild it with `thinksearch index build CORPUS --out {path}`")
    return meta


def _delete_file(conn: sqlite3.Connection, file_id: int) -> int:
    ids = [r[0] for r in conn.execute("SELECT id FROM passages WHERE file_id=?", (file_id,))]
    conn.executemany("DELETE FROM fts WHERE rowid=?", ((i,) for i in ids))
    conn.execute("DELETE FROM passages WHERE file_id=?", (file_id,))
    conn.execute("DELETE FROM files WHERE id=?", (file_id,))
    return len(ids)


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    with Progress(TextColumn("indexing"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("index", total=total)
        yield lambda n: bar.advance(task, n)


def build_index(
    corpus: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    tokenizer: str = "auto",
    passage_chars: int | None = None,
    progress: bool = False,
) -> BuildReport:
    """Build or update the index at ``out`` from the corpus files and folders.

    ``tokenizer``: ``auto`` keeps an existing index's splitter (a new one gets jieba when
    rjieba is installed, else bigram); naming a different one rebuilds from scratch.
    ``passage_chars``: None keeps an existing index's passage size (a new one gets
    ``PASSAGE_CHARS``); a different size rebuilds from scratch.
    """
    start = time.perf_counter()
    files, skipped, ignored = discover(corpus)
    out = Path(out)
    if out.is_dir():
        raise ThinksearchError(f"--out {out} is a folder; give the index file's path, e.g. {out / 'index.sqlite'}")
    fresh = not out.exists()
    if not fresh:
        with closing(_connect(out, readonly=True)) as probe:
            try:
                old = _open_existing_meta(probe, out)
            except SearchError:
                raise ThinksearchError(f"{out} exists and is not a thinksearch index; choose another --out") from None
        splitter = segment.resolve(old["tokenizer"] if tokenizer == "auto" else tokenizer)
    else:
        old = {}
        splitter = segment.resolve(tokenizer)
    if passage_chars is None:
        passage_chars = int(old.get("passage_chars", PASSAGE_CHARS))
    out.parent.mkdir(parents=True, exist_ok=True)
    report = BuildReport(str(out), splitter, files_seen=len(files) + len(skipped), ignored=ignored, skipped=skipped)
    conn = _connect(out)
    try:
        if old and (old["tokenizer"] != splitter or old.get("passage_chars") != str(passage_chars)):
            report.rebuilt = (f"tokenizer {old['tokenizer']} → {splitter}" if old["tokenizer"] != splitter
                              else f"passage size {old.get('passage_chars')} → {passage_chars}")
            conn.executescript("DROP TABLE IF EXISTS fts_vocab; DROP TABLE IF EXISTS fts; DROP TABLE IF EXISTS common; "
                               "DROP TABLE IF EXISTS passages; DROP TABLE IF EXISTS files; DELETE FROM meta;")
        conn.executescript(_SCHEMA)
        # A bigger in-memory term buffer means fewer, larger segments to merge (bigrams have many terms).
        conn.execute("INSERT INTO fts(fts, rank) VALUES ('hashsize', ?)", (8 << 20,))
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
            ("format", FORMAT_VERSION), ("tokenizer", splitter), ("passage_chars", str(passage_chars)),
            ("state", "building")])
        conn.commit()
        known = {row[1]: row for row in conn.execute("SELECT id, path, size, mtime_ns, sha256 FROM files")}
        next_id = (conn.execute("SELECT max(id) FROM passages").fetchone()[0] or 0) + 1
        current: set[str] = set()
        # An interrupted build left its files committed but not the finishing steps below.
        changed = bool(report.rebuilt) or old.get("state") != "ready"
        pending = 0
        sizes = {}
        for p, _ in files:
            try:
                sizes[p] = p.stat().st_size
            except OSError:
                sizes[p] = 0
        with _progress(progress, sum(sizes.values())) as advance:
            for path, name in files:
                key = os.path.abspath(path)
                current.add(key)
                row = known.get(key)
                try:
                    st = path.stat()
                except OSError as e:
                    report.skipped.append(Skipped(str(path), f"cannot read: {e.strerror or e}"))
                    if row:
                        report.files_removed += 1
                        _delete_file(conn, row[0])
                        changed = True
                    continue
                if row and row[2] == st.st_size and row[3] == st.st_mtime_ns:
                    report.files_unchanged += 1
                    advance(sizes[path])
                    continue
                text, raw, reason = _read_text(path)
                digest = hashlib.sha256(raw).hexdigest()
                if text is not None and row and row[4] == digest:
                    conn.execute("UPDATE files SET size=?, mtime_ns=? WHERE id=?", (st.st_size, st.st_mtime_ns, row[0]))
                    report.files_unchanged += 1
                    advance(sizes[path])
                    continue
                passages: list[Passage] = []
                if text is not None:
                    passages, bad = parse_file(path, name, text, passage_chars)
                    report.bad_lines += [f"{path}: {b}" for b in bad]
                    if not passages:
                        reason = "no text" if not bad else f"no valid lines ({bad[0]})"
                if row:
                    _delete_file(conn, row[0])
                    changed = True
                if not passages:
                    report.skipped.append(Skipped(str(path), reason))
                    if row:
                        report.files_removed += 1
                    advance(sizes[path])
                    continue
                file_id = conn.execute(
                    "INSERT INTO files(path, size, mtime_ns, sha256, passages) VALUES (?, ?, ?, ?, ?)",
                    (key, st.st_size, st.st_mtime_ns, digest, len(passages))).lastrowid
                step = 2000
                for i in range(0, len(passages), step):
                    batch = passages[i : i + step]
                    ids = range(next_id, next_id + len(batch))
                    next_id += len(batch)
                    conn.executemany("INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?, ?)",
                                     [(j, file_id, p.title, p.text, p.url, p.date, p.source) for j, p in zip(ids, batch)])
                    conn.executemany("INSERT INTO fts(rowid, title, body) VALUES (?, ?, ?)",
                                     [(j, segment.index_text(p.title, splitter), segment.index_text(p.text, splitter))
                                      for j, p in zip(ids, batch)])
                    advance(sizes[path] * len(batch) // len(passages))
                report.files_indexed += 1
                report.passages_added += len(passages)
                changed = True
                pending += len(passages)
                if pending >= _COMMIT_PASSAGES:  # at a file boundary: the index stays consistent
                    conn.commit()
                    pending = 0
        for key, row in known.items():
            if key not in current:
                _delete_file(conn, row[0])
                report.files_removed += 1
                changed = True
        report.passages_total = conn.execute("SELECT count(*) FROM passages").fetchone()[0]
        if report.passages_total == 0:
            conn.rollback()
            reasons = "; ".join(f"{s.path}: {s.reason}" for s in report.skipped[:3])
            raise ThinksearchError(f"empty corpus: no passages to index ({len(report.skipped)} files skipped: {reasons})")
        if changed:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (uuid.uuid4().hex,))
            conn.execute("INSERT INTO fts(fts) VALUES ('optimize')")
            # The words too common to be worth scoring, listed once here: counting a word's
            # passages through fts5vocab at query time reads its whole posting list.
            limit = max(COMMON_DF * report.passages_total, COMMON_MIN_DOCS)
            conn.execute("DELETE FROM common")
            conn.execute("INSERT INTO common SELECT term, doc FROM fts_vocab WHERE doc > ?", (limit,))
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('state', 'ready')")
        conn.commit()
    except BaseException:
        conn.close()
        if fresh and out.exists() and not _has_passages(out):
            for suffix in ("", "-wal", "-shm"):
                Path(str(out) + suffix).unlink(missing_ok=True)
        raise
    conn.close()
    report.seconds = time.perf_counter() - start
    return report


def _has_passages(path: Path) -> bool:
    try:
        with closing(sqlite3.connect(path)) as c:
            return bool(c.execute("SELECT count(*) FROM passages").fetchone()[0])
    except sqlite3.Error:
        return False


# ----------------------------------------------------------------------------- searching


def _snippet(text: str, terms: Sequence[segment.Term], limit: int) -> str:
    """The passage, or for a long one the window of ``limit`` characters around the first hit."""
    if len(text) <= limit:
        return text
    low = text.lower()
    hits = [i for t in terms if (i := low.find(t.text)) >= 0]
    start = max(0, min(hits) - limit // 4) if hits else 0
    piece = text[start : start + limit]
    return ("…" if start else "") + piece + ("…" if start + limit < len(text) else "")


class LocalBackend:
    """Search a local FTS5 index built by :func:`build_index`. Thread-safe (a connection per thread)."""

    name = "local"

    def __init__(self, index: str | os.PathLike[str], snippet_chars: int = 400):
        self.path = Path(index)
        self.snippet_chars = snippet_chars
        if not self.path.is_file():
            raise SearchError(f"index not found: {self.path}; build it with `thinksearch index build CORPUS --out {self.path}`")
        self._local = threading.local()
        meta = _open_existing_meta(self._conn(), self.path)
        self.tokenizer: segment.Splitter = meta["tokenizer"]  # type: ignore[assignment]
        if self.tokenizer == "jieba":
            segment._jieba_cut()  # fail now, with the install hint, rather than at the first query

    @classmethod
    def from_config(cls, cfg: Any, teacher: Any = None) -> "LocalBackend":
        return cls(cfg.index, snippet_chars=cfg.max_result_chars)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = _connect(self.path, readonly=True)
            except sqlite3.Error as e:
                raise SearchError(f"cannot open index {self.path}: {e}") from None
            self._local.conn = conn
        return conn

    @property
    def cache_key(self) -> str:
        """Changes whenever the index content does, so cached results never go stale."""
        row = self._conn().execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return f"local:{self.path.resolve()}:{row[0] if row else ''}"

    def _terms(self, query: str) -> list[segment.Term]:
        terms = segment.query_terms(query, self.tokenizer)
        words = [t.text for t in terms if not t.prefix]
        if len(terms) < 2 or not words:
            return terms
        common = {row[0] for row in self._conn().execute(
            f"SELECT term FROM common WHERE term IN ({','.join('?' * len(words))})", words)}
        return [t for t in terms if t.text not in common or t.prefix] or terms

    def search(self, query: str, k: int = 5) -> list[Result]:
        terms = self._terms(query)
        if not terms or k <= 0:
            return []
        match = " OR ".join(t.fts() for t in terms)
        try:
            rows = self._conn().execute(
                "SELECT p.title, p.text, p.url, p.date, p.source FROM "
                f"(SELECT rowid, bm25(fts, {TITLE_WEIGHT}, 1.0) AS score FROM fts WHERE fts MATCH ? "
                "ORDER BY score LIMIT ?) AS hit JOIN passages p ON p.id = hit.rowid ORDER BY hit.score",
                (match, k)).fetchall()
        except sqlite3.Error as e:
            raise SearchError(f"index {self.path}: search failed: {e}") from None
        return [Result(title, _snippet(text, terms, self.snippet_chars), url, date, source)
                for title, text, url, date, source in rows]
