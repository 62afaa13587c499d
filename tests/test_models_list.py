"""`thinksearch models list`: the alias (what a user copies) is never cut, piped or in any width."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from thinksearch import models
from thinksearch.cli import main
from thinksearch.terminal import print_models

ROWS = [
    {"alias": "qwen2.5-coder-0.5b-instruct-with-a-long-suffix", "description": "Qwen2.5-Coder-0.5B-Instruct (qwen2)",
     "installed": True, "prepared": True, "extra": "offline-model",
     "path": "/home/someone/.cache/thinksearch/models/qwen2.5-coder-0.5b-instruct-with-a-long-suffix"},
    {"alias": "smollm2-135m-instruct", "description": "SmolLM2-135M-Instruct Q4_1", "installed": False,
     "prepared": False, "extra": "smollm2", "path": None},
]


def _render(width: int, terminal: bool) -> str:
    out = io.StringIO()
    print_models(ROWS, Console(file=out, width=width, force_terminal=terminal, color_system=None))
    return out.getvalue()


@pytest.mark.parametrize("width, terminal", [(30, True), (60, True), (120, True), (200, True), (40, False), (200, False)])
def test_aliases_paths_and_install_commands_are_whole(width, terminal):
    text = _render(width, terminal)
    for r in ROWS:
        assert r["alias"] in text
    assert "pip install 'thinksearch[smollm2]'" in text  # not eaten as a style tag
    assert "…" not in text


def test_a_wide_terminal_gets_the_table_and_a_pipe_gets_plain_lines():
    assert "┃ alias" in _render(200, True)
    plain = _render(200, False)
    assert plain.splitlines()[0] == ROWS[0]["alias"] and "  " + ROWS[0]["path"] in plain.splitlines()


def test_models_list_piped(monkeypatch, capsys):
    monkeypatch.setattr(models, "list_models", lambda: ROWS)
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert ROWS[0]["alias"] in lines and ROWS[1]["alias"] in lines
