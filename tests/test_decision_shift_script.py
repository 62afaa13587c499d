"""scripts/decision_shift.py: a shift of the decision margin chosen on pool questions, applied to the eval's."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("scripts/decision_shift.py")


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _questions(prefix, n_each):
    return ([{"id": f"{prefix}f{i}", "type": "search", "question": f"{prefix}价格{i}", "category": "prices"} for i in range(n_each)]
            + [{"id": f"{prefix}r{i}", "type": "thinking", "question": f"{prefix}算术{i}", "category": "arithmetic"} for i in range(n_each)])


def _probe(path, adapter, margins):
    path.write_text(json.dumps({"adapters": [{"adapter": adapter, "questions": [{"id": i, "margin": m} for i, m in margins.items()]}]}))
    return path


def test_the_shift_is_chosen_on_the_pool_and_applied_unchanged_to_the_eval(script, tmp_path):
    pool = _write(tmp_path / "pool.jsonl", _questions("p", 4))
    data = _write(tmp_path / "eval.jsonl", _questions("e", 4))
    # Pool: fresh-data margins -0.75..0.75, reasoning far below: 0.8 brings every fresh one over
    # with no false search; 0.9 and more are as good, so the smallest wins.
    cal = _probe(tmp_path / "cal.json", "a", {**{f"pf{i}": -0.75 + 0.5 * i for i in range(4)},
                                               **{f"pr{i}": -3.0 for i in range(4)}})
    target = _probe(tmp_path / "t.json", "a", {"ef0": -1.0, "ef1": -0.5, "ef2": 0.2, "ef3": 1.0,
                                                "er0": -3.0, "er1": -0.5, "er2": -2.0, "er3": -1.0})
    out = script.main(["--calibration", str(cal), "--pool", str(pool), "--target", str(target),
                       "--data", str(data), "--out", str(tmp_path / "o.json")])
    entry = out["adapters"][0]
    assert entry["shift"] == pytest.approx(0.8)
    assert entry["pool"]["shifted"]["fresh_data"]["k"] == 4 and entry["pool"]["shifted"]["reasoning"]["k"] == 0
    ev = entry["eval"]
    assert (ev["unshifted"]["fresh_data"]["k"], ev["unshifted"]["reasoning"]["k"]) == (2, 0)
    # -0.5 + 0.8 > 0: one more fresh-data question and one reasoning question cross the line
    assert (ev["shifted"]["fresh_data"]["k"], ev["shifted"]["reasoning"]["k"]) == (3, 1)
    assert json.loads((tmp_path / "o.json").read_text())["adapters"][0]["shift"] == entry["shift"]


def test_calibrating_on_the_eval_questions_is_refused(script, tmp_path):
    data = _write(tmp_path / "eval.jsonl", _questions("e", 2))
    probe = _probe(tmp_path / "p.json", "a", {"ef0": 0.1, "ef1": -0.1, "er0": -1.0, "er1": -2.0})
    with pytest.raises(SystemExit, match="shares question ids"):
        script.main(["--calibration", str(probe), "--pool", str(data), "--target", str(probe),
                     "--data", str(data), "--out", str(tmp_path / "o.json")])
