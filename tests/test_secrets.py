"""No key-shaped strings anywhere in the repository's tracked files."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY_PATTERNS = {
    "OpenAI-style key": re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"),
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
    "bearer token literal": re.compile(r"Bearer [A-Za-z0-9_\-.]{30,}"),
}


def scan(paths) -> list[str]:
    hits = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for kind, pattern in KEY_PATTERNS.items():
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                hits.append(f"{path}:{line}: {kind}")
    return hits


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        return [ROOT / p for p in out.stdout.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        skip = {".venv", ".git", "__pycache__", ".pytest_cache", ".hypothesis", "runs"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


def test_the_scanner_finds_planted_keys(tmp_path):
    planted = tmp_path / "leak.py"
    planted.write_text('API_KEY = "' + "sk-" + "A1b2" * 8 + '"\ntoken = "hf_' + "x" * 34 + '"\n')
    assert scan([planted]) == [f"{planted}:1: OpenAI-style key", f"{planted}:2: Hugging Face token"]


def test_no_key_shaped_strings_in_the_repository():
    files = tracked_files()
    assert len(files) > 10
    assert scan(files) == []
