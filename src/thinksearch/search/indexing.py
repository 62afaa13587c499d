"""Building the ``local`` backend's index: one SQLite file with an FTS5 table (bm25 ranking).

The index holds ``files`` (path, size, mtime, sha256, so a rebuild re-reads only files whose
size or mtime changed and re-indexes only those whose content did; files gone from the
corpus are dropped), ``passages`` (what a result shows, cut by :mod:`.passages`) and an FTS5
table over the passages' words as split by :mod:`thinksearch.search.segment` (the splitter
is stored in the index, and queries are split the same way). Each file is indexed in the
same transaction as its ``files`` row, so an interrupted build resumes where it stopped.
Querying is :mod:`.local`.

Run as: ``thinksearch index build CORPUS... --out index.sqlite``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
import uuid
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from thinksearch.errors import ThinksearchError
from thinksearch.search import segment
from thinksearch.search.base import SearchError
from thinksearch.search.passages import PASSAGE_CHARS, SUFFIXES, Passage, parse_file

FORMAT_VERSION = "1"
COMMON_DF = 0.05
"""A query word in more than this share of passages (and in over COMMON_MIN_DOCS of them) is
dropped when the query has rarer words: scoring every passage holding 的 or 是 costs
milliseconds and barely moves the ranking (bm25 gives such words little weight)."""
COMMON_MIN_DOCS = 2000
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


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=30)
    else:
        conn = sqlite3.connect(path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: FTS5 segment merges re-read pages
    return conn


def index_generation(path: str | Path) -> str | None:
    """The id a build writes whenever it changes the index's content (None: no readable index).

    A rebuild that changes nothing keeps it, though SQLite rewrites the file's bytes, so this is
    what saved outputs and cached results key on rather than a digest of the file.
    """
    p = Path(path)
    if not p.is_file():
        return None
    try:
        with closing(connect(p, readonly=True)) as conn:
            return _meta(conn).get("generation")
    except sqlite3.Error:
        return None


def _meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta"))


def open_index_meta(conn: sqlite3.Connection, path: Path) -> dict[str, str]:
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
        with closing(connect(out, readonly=True)) as probe:
            try:
                old = open_index_meta(probe, out)
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
    conn = connect(out)
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
