"""Reading user files with one-line errors, and writing files so a crash never leaves half of one.

Every stage reads files a user hands it (question pools, eval sets, training rows) and writes
small JSON/text artifacts that a resumed run reads back; both go through here:

- :func:`read_text`, :func:`jsonl_items`, :func:`json_array_items`, :func:`read_items`: user
  files, every problem one line naming ``file:line``;
- :func:`read_json` (state files that may not exist yet) and :func:`load_json` (files that must);
- :class:`JsonlLog`, :func:`read_log`, :func:`append_jsonl`: append-only JSONL that a crash
  can tear only at its last line, which the next open cuts off;
- :func:`write_text_atomic`, :func:`write_json_atomic`, :func:`replacing_dir`: whole files and
  directories that appear complete or not at all.

A library module; nothing here runs on its own.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping

from thinksearch.errors import ThinksearchError


# The repository this module runs from (a checkout or an editable install): where data/ ships.
REPO_ROOT = Path(__file__).resolve().parents[2]


def shipped(path: str | Path) -> Path:
    """``path``, or, when it is a relative ``data/…`` path missing from the current directory, the
    file of that name shipped in the repository, so the defaults work from any directory."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists() or p.parts[:1] != ("data",):
        return p
    candidate = REPO_ROOT / p
    return candidate if candidate.exists() else p


def shipped_hint(path: str | Path) -> str:
    """What to say when a ``data/…`` default is missing: where the shipped files are and how to point at them."""
    p = Path(path)
    if p.is_absolute() or p.parts[:1] != ("data",):
        return ""
    return (f" (a relative path, read from {Path.cwd()}; the shipped data files are in the thinksearch "
            "repository's data/ folder: run from the repository root or pass their full paths)")


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file's content (a BOM is dropped); ``what`` names the file in errors.

    A non-UTF-8 file is an error naming the line of the first bad byte.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ThinksearchError(f"{what} not found: {path}{shipped_hint(path)}") from None
    except IsADirectoryError:
        raise ThinksearchError(f"{what} {path} is a directory, not a file") from None
    except OSError as e:
        raise ThinksearchError(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ThinksearchError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x}); save the file as UTF-8"
        ) from None


class InvalidJson(ValueError):
    """A JSONL line that does not parse (handed back by ``jsonl_items(errors="keep")``)."""


def _invalid(e: json.JSONDecodeError) -> str:
    return f"invalid JSON: {e.msg} (column {e.colno})"


def jsonl_items(text: str, path: str | Path, errors: Literal["raise", "skip", "keep"] = "raise",
                ) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of a JSONL text.

    A line that is not JSON raises ``file:line: invalid JSON: …`` (``errors="raise"``), is
    left out (``"skip"``), or comes back as an :class:`InvalidJson` in place of the value
    (``"keep"``, for callers that count bad rows).

    >>> list(jsonl_items('{"a": 1}\\n\\n[2]\\n', "x.jsonl"))
    [(1, {'a': 1}), (3, [2])]
    >>> list(jsonl_items('{"a": 1}\\n{"a": ', "x.jsonl", errors="skip"))
    [(1, {'a': 1})]
    """
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            if errors == "raise":
                raise ThinksearchError(f"{path}:{n}: {_invalid(e)}") from None
            if errors == "keep":
                yield n, InvalidJson(_invalid(e))
            continue
        yield n, value


def json_array_items(text: str, path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, element)`` for each element of a JSON array text, numbered by the line it starts on.

    A break in the array is an error naming its line: nothing after it can be read.

    >>> list(json_array_items('[\\n {"a": 1},\\n 2\\n]', "x.json"))
    [(2, {'a': 1}), (3, 2)]
    """
    decoder = json.JSONDecoder()

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def line(i: int) -> int:
        return text.count("\n", 0, i) + 1

    i = skip(0)
    if text[i : i + 1] != "[":
        raise ThinksearchError(f"{path}:{line(i)}: expected a JSON array")
    i = skip(i + 1)
    if text[i : i + 1] == "]":
        return
    while True:
        start = i
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise ThinksearchError(f"{path}:{e.lineno}: {_invalid(e)}") from None
        yield line(start), value
        i = skip(i)
        if text[i : i + 1] == ",":
            i = skip(i + 1)
            continue
        if text[i : i + 1] == "]":
            return
        raise ThinksearchError(f"{path}:{line(i)}: invalid JSON: expected ',' or ']' after an array item")


def read_items(path: str | Path, what: str = "file", errors: Literal["raise", "skip", "keep"] = "raise",
               ) -> Iterator[tuple[int, Any]]:
    """The items of a data file: one JSON array (the reference's layout) or JSONL, told apart by
    the first character. ``errors`` applies to JSONL lines; a broken array always raises."""
    text = read_text(path, what)
    if text.lstrip().startswith("["):
        return json_array_items(text, path)
    return jsonl_items(text, path, errors)


def read_json(path: str | Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable (a state file not written yet)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_json(path: str | Path, what: str = "file") -> Any:
    """A JSON file that must be there and parse; problems are one line naming ``file:line``."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ThinksearchError(f"{path}:{e.lineno}: {_invalid(e)}") from None


# ----------------------------------------------------------------------------- append-only logs


def _write_all(fd: int, records: Iterable[Mapping[str, Any]]) -> None:
    """Whole lines in one write where the OS allows, then fsync: a crash tears at most the last line."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _scan_log(path: Path, corrupt: str) -> tuple[list[dict[str, Any]], int]:
    """The complete records of a log and the byte length of its complete lines."""
    records: list[dict[str, Any]] = []
    good = 0
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.endswith(b"\n"):
                break  # a partial last line from a crash
            stripped = line.strip()
            if stripped:
                try:
                    obj = json.loads(stripped)
                except ValueError:
                    obj = None
                if not isinstance(obj, dict):
                    raise ThinksearchError(f"{path}:{n}: {corrupt}")
                records.append(obj)
            good += len(line)
    return records, good


class JsonlLog:
    """An append-only JSONL file that survives crashes.

    Each record is one ``os.write`` of a whole line followed by ``fsync``. A process killed
    mid-write can leave a partial last line; :meth:`open` cuts it off (under an exclusive
    lock, so two runs never write the same file at once) before anything is appended.
    Subclasses word the two errors for their users (:attr:`busy`, :attr:`corrupt`).
    """

    busy = "another process is writing {path}; wait for it"
    """The error when another process holds the lock."""
    corrupt = "not a JSON object (a corrupt row); remove that line and rerun"
    """The error (after ``file:line:``) for a complete line that is not a JSON object."""

    def __init__(self, path: str | Path, lock: bool = True):
        self.path = Path(path)
        self.lock = lock
        self.fd: int | None = None
        self.dropped_bytes = 0

    def open(self) -> list[dict[str, Any]]:
        """Open for appending; return the complete records already there."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise ThinksearchError(f"cannot open {self.path} for writing: {e.strerror or e}") from None
        if self.lock:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ThinksearchError(self.busy.format(path=self.path)) from None
        self.fd = fd
        try:
            records, good = _scan_log(self.path, self.corrupt)
        except ThinksearchError:
            self.close()
            raise
        size = os.fstat(fd).st_size
        if good < size:
            os.ftruncate(fd, good)
            os.fsync(fd)
            self.dropped_bytes = size - good
        return records

    def append(self, record: Mapping[str, Any]) -> None:
        assert self.fd is not None, "open() first"
        _write_all(self.fd, [record])

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None


def read_log(path: str | Path, corrupt: str = JsonlLog.corrupt) -> list[dict[str, Any]]:
    """The complete records of a log, read only (a partial last line is ignored, not cut)."""
    return _scan_log(Path(path), corrupt)[0]


def append_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Append records to a JSONL file (opened for this call only), then fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        _write_all(fd, records)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- atomic writes


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write via a temporary file and a rename: readers see the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


@contextmanager
def replacing_dir(target: str | Path) -> Iterator[Path]:
    """A new, empty directory beside ``target`` to fill; when the block ends without an error it
    replaces ``target`` in one rename, otherwise it is removed. A crash midway leaves ``target``
    as it was (or absent), never half written."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
