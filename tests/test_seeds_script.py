"""scripts/seeds.py: the recipe each seed runs, and the figures read back and aggregated over seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thinksearch import pipeline
from thinksearch.evaluate.answers import proportion

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seeds(load_script):
    return load_script("scripts/seeds.py")


def test_each_seed_trains_with_its_seed_on_the_whole_eval_set_without_the_base(seeds, tmp_path):
    cfg = seeds.recipe(str(ROOT / "configs/quickstart.yaml"), ["train.learning_rate=1e-4"], tmp_path / "seed7",
                       compare_base=False, train={"seed": 7})
    assert cfg.train.seed == 7 and cfg.train.learning_rate == 1e-4 and cfg.train.epochs == 2  # YAML kept
    assert cfg.eval.limit_per_type is None and cfg.eval.gold_only is False  # the quickstart's 30 + 30 lifted
    planned, paths = pipeline.plan(cfg)
    assert planned.eval.models == [f"tuned={cfg.train.model}+{paths.adapter}"]
    # --set can still bring the subsample back.
    assert seeds.recipe(str(ROOT / "configs/quickstart.yaml"), ["eval.limit_per_type=10"], tmp_path).eval.limit_per_type == 10
    # A plain run still compares with the base.
    assert pipeline.plan(seeds.recipe(str(ROOT / "configs/quickstart.yaml"), [], tmp_path))[0].eval.models[0].startswith("base=")


def _report(path: Path, name: str, recall: tuple[int, int], false_search: tuple[int, int]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    metrics = {"policy": {"fresh_data_recall": proportion(*recall), "reasoning_false_search": proportion(*false_search)},
               "answers": {"thinking_accuracy": proportion(0, 0)}}  # n = 0: nothing to show
    (path / "report.json").write_text(json.dumps({"models": [{"name": name, "metrics": metrics}]}), encoding="utf-8")


def test_collect_aggregates_every_seed_with_mean_range_pooled_base_and_targets(seeds, tmp_path):
    _report(tmp_path / "seed1" / "eval", "tuned", (27, 30), (1, 20))
    _report(tmp_path / "seed2" / "eval", "tuned", (21, 30), (3, 20))
    _report(tmp_path / "base", "base", (0, 30), (0, 20))
    result = seeds.collect(tmp_path, [1, 2], {"config": "x.yaml", "sets": []})
    recall = result["figures"]["fresh_data_recall"]
    assert recall["per_seed"]["1"]["k"] == 27 and recall["per_seed"]["2"]["k"] == 21
    assert recall["mean"] == pytest.approx(0.8) and recall["min"] == pytest.approx(0.7) and recall["max"] == pytest.approx(0.9)
    assert (recall["pooled"]["k"], recall["pooled"]["n"]) == (48, 60)
    assert recall["base"]["k"] == 0
    assert recall["target"] == ">= 0.9" and recall["seeds_meeting_target"] == 1
    false_search = result["figures"]["reasoning_false_search"]
    assert false_search["seeds_meeting_target"] == 1  # 1/20 = 5% meets <= 5%, 3/20 does not
    assert "thinking_accuracy" not in result["figures"]  # no scored answers in any seed
    table = seeds.markdown(result)
    assert "| fresh-data questions searched | 27/30 (90%, " in table and "80% [70–90]" in table and "48/60" in table


def test_collect_names_a_seed_without_an_evaluation(seeds, tmp_path):
    _report(tmp_path / "seed1" / "eval", "tuned", (1, 2), (0, 2))
    with pytest.raises(SystemExit, match="seed2/eval/report.json"):
        seeds.collect(tmp_path, [1, 2], {})
