"""The shipped data files (data/…) are found from any directory; a missing one says how to point at it."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from thinksearch import synth
from thinksearch.config import SynthConfig
from thinksearch.errors import ThinksearchError
from thinksearch.files import REPO_ROOT, shipped
from thinksearch.questions import read_questions


def test_synth_defaults_load_outside_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    pools = synth._load_pools(SynthConfig(), Console(file=out))
    assert set(pools) == {"thinking", "search"} and all(p.questions for p in pools.values())
    assert f"thinking pool {REPO_ROOT / 'data' / 'questions'}" in out.getvalue()  # the shipped file, found


def test_a_local_file_of_the_same_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "eval").mkdir(parents=True)
    (tmp_path / "data" / "eval" / "test.jsonl").write_text('{"type": "thinking", "question": "本地的问题？"}\n', encoding="utf-8")
    assert shipped("data/eval/test.jsonl") == tmp_path.joinpath("data/eval/test.jsonl").relative_to(tmp_path)
    assert read_questions("data/eval/test.jsonl") == ["本地的问题？"]


def test_a_missing_data_file_says_where_the_shipped_ones_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ThinksearchError, match=r"not found: data/questions/nope.txt \(a relative path, read from .*"
                                               r"repository's data/ folder: run from the repository root or pass their full paths\)"):
        read_questions("data/questions/nope.txt")
    with pytest.raises(ThinksearchError, match=r"eval file not found: data/eval/nope.jsonl \(a relative path.*--eval-questions null"):
        synth._load_pools(SynthConfig(eval_questions="data/eval/nope.jsonl"), Console(file=io.StringIO()))
