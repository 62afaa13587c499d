"""Gold rows: the shipped eval set's gold, the recompute script, and bad rows named by file:line."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from thinksearch import gold
from thinksearch.errors import ThinksearchError
from thinksearch.scoring import matches_gold

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "data/eval/test.jsonl"
CORPUS = ROOT / "data/corpus/snapshot.jsonl"
SCRIPT = ROOT / "data/recompute_golds.py"
POOL = ROOT / "data/questions/thinking.jsonl"

# Answerable rows whose key fact is derived from the passage rather than printed in it.
DERIVED = {"search-exchange_rates-03": "10万韩元 from the passage's rate per 100 won"}


def test_module_doctests():
    assert doctest.testmod(gold).failed == 0


def test_shipped_eval_set_carries_enough_gold():
    rows = gold.load_gold(EVAL, CORPUS)
    counts = Counter((r["type"], "answers" in r) for r in rows)
    assert counts[("thinking", True)] >= 60
    assert all("answerable" in r for r in rows if r["type"] == "search")
    answerable = [r for r in rows if r.get("answerable")]
    assert len(answerable) >= 60
    assert sum(r.get("answerable") is False for r in rows) >= 20  # abstention needs its own test rows
    assert len({r["id"] for r in rows}) == len(rows)


def test_every_key_fact_is_in_its_passages():
    corpus = {json.loads(line)["id"]: json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()}
    missing = []
    for r in gold.load_gold(EVAL, CORPUS):
        if r.get("answerable") and r["id"] not in DERIVED:
            text = "\n".join(corpus[p]["title"] + "\n" + corpus[p]["text"] for p in r["passages"])
            if not matches_gold(text, r["answers"], r["match"], anywhere=True):
                missing.append((r["id"], r["answers"]))
    assert not missing


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_recompute_script_agrees_with_every_computed_gold():
    proc = _run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 problem(s)" in proc.stdout


def _copy_with(tmp_path: Path, edit) -> Path:
    rows = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    edit(rows)
    out = tmp_path / "test.jsonl"
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return out


def test_recompute_script_catches_a_wrong_gold_and_a_gold_without_code(tmp_path):
    def edit(rows):
        for r in rows:
            if r["id"] == "think-arithmetic-08":
                r["answers"] = ["4200"]  # typed by hand, wrong
            if r["id"] == "think-programming-01":
                r["answers"] = ["abababcc"]
        rows.append({"id": "think-arithmetic-99", "type": "thinking", "question": "17×23等于多少？",
                     "category": "arithmetic", "answers": ["391"], "match": "any"})

    proc = _run("--data", str(_copy_with(tmp_path, edit)))
    assert proc.returncode == 1
    assert "think-arithmetic-08: answers ['4200'] but code computes ['4232']" in proc.stdout
    assert "think-programming-01: answers ['abababcc'] but code computes ['abababc']" in proc.stdout
    assert "think-arithmetic-99: arithmetic gold without a recompute function" in proc.stdout


def test_recompute_script_needs_the_wrong_options_a_choice_computes(tmp_path):
    def edit(rows):
        for r in rows:
            if r["id"] == "think-everyday-11":
                del r["wrong"]  # the other shop is no longer marked wrong
            if r["id"] == "think-arithmetic-08":
                r["wrong"] = ["4000"]  # a wrong option the code does not compute

    proc = _run("--data", str(_copy_with(tmp_path, edit)))
    assert proc.returncode == 1
    assert "think-everyday-11: wrong [] but code computes ['选B店', '选择B店'," in proc.stdout
    assert "think-arithmetic-08: wrong ['4000'] but code computes []" in proc.stdout


def test_recompute_script_checks_the_thinking_pool_too(tmp_path):
    rows = [json.loads(line) for line in POOL.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        if r["id"] == "pool-think-arithmetic-17":
            r["answers"] = ["1000"]  # 2**10, typed from memory
        if r["id"] == "pool-think-programming-30":
            r["question"] = r["question"].replace('"hello"', '"world"')  # the snippet the function runs is gone
    rows.append({"id": "pool-think-programming-99", "type": "thinking", "question": "print(2 ** 3) 输出什么？",
                 "category": "programming", "answers": ["8"], "match": "any"})
    pool = tmp_path / "thinking.jsonl"
    pool.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    proc = _run("--pool", str(pool))
    assert proc.returncode == 1
    assert "pool-think-arithmetic-17: answers ['1000'] but code computes ['1024']" in proc.stdout
    assert "pool-think-programming-30: recompute failed: AssertionError: snippet '\"hello\"[::-1]' is not in the question" \
        in proc.stdout
    assert "pool-think-programming-99: programming gold without a recompute function" in proc.stdout
    assert "3 problem(s)" in proc.stdout


def test_recompute_script_reports_a_malformed_file_by_line(tmp_path):
    def edit(rows):
        rows[4]["match"] = "most"

    proc = _run("--data", str(_copy_with(tmp_path, edit)))
    assert proc.returncode == 1
    assert f"{tmp_path / 'test.jsonl'}:5: 'match' must be one of any, all, got 'most'" in proc.stdout


GOOD_THINKING = {"type": "thinking", "question": "17×23等于多少？", "category": "arithmetic", "answers": ["391"], "match": "any"}
GOOD_SEARCH = {"type": "search", "question": "2024年欧洲杯冠军是哪支球队？", "category": "sports", "answerable": True,
               "passages": ["c-0162"], "answers": ["西班牙"], "match": "any"}


@pytest.mark.parametrize("row, message", [
    ({**GOOD_THINKING, "answer": "391"}, "unknown field 'answer' (allowed: id, type, question, category, answers, match, "
                                         "wrong, answerable, passages, system, messages)"),
    ({**GOOD_THINKING, "wrong": ["391"]}, "'391' is both in 'answers' and in 'wrong'"),
    ({**GOOD_THINKING, "wrong": []}, "'wrong' must be a non-empty list of non-empty strings"),
    ({"type": "thinking", "question": "q", "wrong": ["x"]}, "'wrong' without 'answers'"),
    ({**GOOD_THINKING, "answers": []}, "'answers' is empty (list at least one accepted answer, or leave the field out "
                                       "for an open question)"),
    ({**GOOD_THINKING, "answers": ["391", ""]}, "'answers' must be a list of non-empty strings"),
    ({**GOOD_THINKING, "answers": "391"}, "'answers' must be a list of non-empty strings"),
    ({**GOOD_THINKING, "match": "first"}, "'match' must be one of any, all, got 'first'"),
    ({k: v for k, v in GOOD_THINKING.items() if k != "match"}, "'answers' needs 'match' (one of: any, all)"),
    ({**GOOD_SEARCH, "passages": ["c-0162", "c-9999"]}, "passage id 'c-9999' is not in the corpus"),
    ({**GOOD_SEARCH, "passages": []}, "'passages' must be a non-empty list of corpus ids like \"c-0001\""),
    ({**GOOD_SEARCH, "answerable": "yes"}, "'answerable' must be true or false, got 'yes'"),
    ({"type": "search", "question": "q", "answerable": False, "answers": ["x"], "match": "any"},
     "an unanswerable row ('answerable': false) has no 'answers' or 'passages'"),
    ({"type": "search", "question": "q", "answerable": True}, "an answerable search row names its 'passages' and the key "
                                                              "fact in 'answers'"),
    ({**GOOD_THINKING, "passages": ["c-0001"]}, "'passages' is only for search rows"),
    ({**GOOD_THINKING, "type": "chat"}, "'type' must be one of thinking, search, got 'chat'"),
])
def test_bad_gold_rows_name_file_line_and_the_problem(tmp_path, row, message):
    path = tmp_path / "gold.jsonl"
    path.write_text(json.dumps(GOOD_THINKING, ensure_ascii=False) + "\n\n" + json.dumps(row, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    with pytest.raises(ThinksearchError) as e:
        gold.load_gold(path, CORPUS)
    assert str(e.value) == f"{path}:3: {message}"


def test_good_rows_load_and_duplicate_ids_and_bad_json_are_named(tmp_path):
    path = tmp_path / "gold.jsonl"
    rows = [{"id": "a", **GOOD_THINKING}, {"id": "b", **GOOD_SEARCH},
            {"type": "search", "question": "今天金价多少？", "answerable": False}, {"type": "thinking", "question": "开放题"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert gold.load_gold(path, CORPUS) == rows
    path.write_text(path.read_text(encoding="utf-8") + json.dumps({"id": "a", **GOOD_THINKING}) + "\n{oops\n",
                    encoding="utf-8")
    with pytest.raises(ThinksearchError, match=r"gold.jsonl:5: duplicate id 'a' \(first at .*gold.jsonl:1\)"):
        gold.load_gold(path, CORPUS)
    path.write_text("{oops\n", encoding="utf-8")
    with pytest.raises(ThinksearchError, match=r"gold.jsonl:1: invalid JSON"):
        gold.load_gold(path, CORPUS)


def test_no_gold_is_matched_by_an_echo_of_the_question():
    # A model that restates the question must not score: a gold "丙" in "甲乙丙中谁是小偷" would.
    echoed = [(r["id"], a) for r in gold.load_gold(EVAL, CORPUS) for a in r.get("answers", ())
              if matches_gold(r["question"], [a], anywhere=True)]
    assert not echoed
