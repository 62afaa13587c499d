"""summary.md states the reference's figures as a sentence, not as a JSON dict."""

from __future__ import annotations

import doctest

from thinksearch import pipeline
from thinksearch.evaluate import REFERENCE


def test_reference_in_summary_markdown_is_readable(tmp_path):
    md = pipeline.summary_markdown({"run_dir": str(tmp_path), "reference": REFERENCE})
    line = next(x for x in md.splitlines() if x.startswith("Compared with"))
    assert "<thinking> on thinking 30/30 (100.0%)" in line and "<tool_call> on search 22/30 (73.3%)" in line
    assert "{" not in md and '"hits"' not in md
    assert pipeline.reference_line(None) is None and pipeline.reference_line({"label": "x"}) is None


def test_pipeline_doctests():
    result = doctest.testmod(pipeline)
    assert result.attempted > 0 and result.failed == 0
