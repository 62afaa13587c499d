"""Reading user files with one-line errors, and writing files so a crash never leaves half of one.

Every stage reads files a user hands it (question pools, eval sets, training rows) and writes
small JSON/text artifacts that a resumed run reads back; both go through here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

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


def read_json(path: str | Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable (a state file not written yet)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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
