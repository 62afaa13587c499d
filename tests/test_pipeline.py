"""`thinksearch run` end to end with the tiny model: index → synth → train → eval, then a rerun.

The teacher is the scripted OpenAI-compatible server (tests/teacher_server.py) over real HTTP,
the search samples come from the shipped corpus through a real SQLite index, and training and
evaluation use the tiny in-process Qwen2 model, so the whole pipeline runs in about a minute
(marked ``integration``: `make test` and CI run it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from teacher_server import Server

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "THINKSEARCH_HOME": str(home),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}


def _run(config: Path, home: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "thinksearch", "run", str(config), "--no-progress", *extra]
    return subprocess.run(cmd, env=_env(home), capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def teacher():
    server = Server().start()
    yield server
    server.stop()


def test_run_end_to_end_then_rerun_skips_every_stage(tmp_path, tiny_model_dir, teacher):
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        {"type": "thinking", "question": "一个数加上它的一半等于 30，这个数是多少？"},
        {"type": "thinking", "question": "为什么冬天呼气会看到白雾？"},
        {"type": "search", "question": "今天上海的空气质量指数是多少？"},
        {"type": "search", "question": "本周人民币兑美元中间价是多少？"},
    ]), encoding="utf-8")
    run_dir = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "run_dir": str(run_dir),
        "corpus": [str(ROOT / "data/corpus/snapshot.jsonl")],
        "synth": {
            "thinking_questions": str(ROOT / "data/questions/thinking.jsonl"),
            "search_questions": str(ROOT / "data/questions/search.jsonl"),
            "eval_questions": str(eval_file),
            "num_thinking": 6, "num_search": 6, "batch_size": 4, "require_citation": False,
            # The scripted teacher's grounded answers do not state the pool's key facts.
            "search_gold": False,
            # Rows open with decision lines, so the calibrate stage picks the adapter's shift.
            "decision_line": True,
            "teacher": {"backend": "openai", "model": "scripted", "base_url": teacher.base_url,
                        "timeout_s": 5.0, "backoff_s": 0.01},
            "search": {"backend": "local", "k": 3},
        },
        "train": {"model": str(tiny_model_dir), "max_steps": 4, "batch_size": 2, "grad_accum": 1,
                  "eval_fraction": 0.0, "save_steps": 2, "max_length": 512, "precision": "fp32", "calibrate_per_kind": 8},
        "eval": {"data": str(eval_file), "max_new_tokens": 12, "batch_size": 2},
    }, allow_unicode=True), encoding="utf-8")

    first = _run(config, tmp_path / "home")
    assert first.returncode == 0, first.stderr[-3000:]

    # Every stage ran and left its artifacts where the summary says.
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert {s: v["status"] for s, v in summary["stages"].items()} == {
        "index": "done", "synth": "done", "train": "done", "calibrate": "done", "export": "skipped", "eval": "done"}
    decision = json.loads((run_dir / "adapter" / "decision.json").read_text(encoding="utf-8"))
    assert decision["questions"] == 16 and summary["calibrate"]["shift"] == decision["shift"]
    tuned_settings = json.loads((run_dir / "eval" / "outputs" / "tuned.settings.json").read_text(encoding="utf-8"))
    assert tuned_settings.get("decision_shift", 0.0) == decision["shift"]
    # The tiny base is a model directory: no GGUF to export into, so both models ran in transformers.
    assert summary["engines"]["export"].startswith("skipped: ") and summary["engines"]["eval"] == "base transformers, tuned transformers"
    assert summary["synth"]["rows"] == {"thinking": 6, "search": 6}
    assert summary["synth"]["search_backends"] == {"local": 6}
    assert summary["train"]["steps"] == 4 and summary["train"]["last_loss"] is not None
    assert set(summary["eval"]) == {"base", "tuned"}
    for figures in summary["eval"].values():
        assert figures["thinking_tag"][1] == 2 and figures["search_tag"][1] == 2
    for name in ("data.jsonl", "data.stats.json", "index.sqlite", "adapter/adapter_config.json",
                 "adapter/metrics.json", "eval/report.json", "eval/report.md", "eval/report.png", "summary.md"):
        assert (run_dir / name).is_file(), name
    # The table and the artifact list are printed, not only written.
    assert "rows synthesized" in first.stdout and str(run_dir / "eval" / "report.md") in first.stdout
    md = (run_dir / "summary.md").read_text(encoding="utf-8")
    assert "tuned: <tool_call> on search" in md

    # A rerun finds every stage complete and changes nothing.
    data_before = (run_dir / "data.jsonl").read_bytes()
    adapter_before = (run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    decision_before = (run_dir / "adapter" / "decision.json").read_bytes()
    report_before = json.loads((run_dir / "eval" / "report.json").read_text(encoding="utf-8"))
    requests_before = teacher.requests
    second = _run(config, tmp_path / "home")
    assert second.returncode == 0, second.stderr[-3000:]
    assert teacher.requests == requests_before
    assert (run_dir / "data.jsonl").read_bytes() == data_before
    assert (run_dir / "adapter" / "adapter_model.safetensors").read_bytes() == adapter_before
    assert (run_dir / "adapter" / "decision.json").read_bytes() == decision_before  # not calibrated again
    report_after = json.loads((run_dir / "eval" / "report.json").read_text(encoding="utf-8"))
    assert [m["metrics"] for m in report_after["models"]] == [m["metrics"] for m in report_before["models"]]
    assert "already complete" in second.stdout + second.stderr
