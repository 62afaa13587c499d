"""Question pools: reading, normalising, near duplicates, decontamination, seeded sampling."""

from __future__ import annotations

import doctest
import importlib
import itertools
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from thinksearch import gold
from thinksearch import questions as qs
from thinksearch.errors import ThinksearchError
from thinksearch.scoring import matches_gold

ROOT = Path(__file__).resolve().parents[1]
THINKING = ROOT / "data/questions/thinking.jsonl"
SEARCH = ROOT / "data/questions/search.jsonl"
CORPUS = ROOT / "data/corpus/snapshot.jsonl"


def test_module_doctests():
    assert doctest.testmod(qs).failed == 0


def test_text_keeps_chinese_punctuation_key_ignores_it():
    q = qs.normalize(" 今天\u200b比特币的价格\t是多少？ ")
    assert q == "今天比特币的价格 是多少？"  # full-width ？ kept: it is what users type
    assert qs.key(q) == qs.key("今天比特币的价格是多少?") == "今天比特币的价格是多少"
    assert qs.key("ＡＢ１２？") == "ab12"  # NFKC folds full-width letters and digits
    assert qs.question_id("thinking", q) == qs.question_id("thinking", "今天 比特币的价格是多少 ?")
    assert qs.question_id("thinking", q) != qs.question_id("search", q)
    assert qs.question_id("thinking", q) != qs.question_id("thinking", "今天以太坊的价格是多少？")


def _random_questions(rng: random.Random, n: int) -> list[str]:
    alphabet = "天气价格今天明北京上海多少是的吗比特币汇率温度股票新闻"
    base = ["".join(rng.choice(alphabet) for _ in range(rng.randint(3, 14))) for _ in range(n)]
    # Add edited copies so that some pairs sit near every threshold.
    for q in list(base[: n // 3]):
        i = rng.randrange(len(q))
        base.append(q[:i] + rng.choice(alphabet) + q[i + 1 :])
    return base


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.9, 1.0])
def test_near_duplicates_finds_exactly_the_pairs_brute_force_finds(threshold):
    rng = random.Random(threshold)
    items = _random_questions(rng, 120)
    others = _random_questions(rng, 60)
    brute = sorted(
        (i, j, round(qs.similarity(a, b), 3))
        for (i, a), (j, b) in itertools.combinations(enumerate(items), 2)
        if qs.similarity(a, b) >= threshold
    )
    assert qs.near_duplicates(items, threshold=threshold) == brute
    brute_against = sorted(
        (i, j, round(qs.similarity(a, b), 3))
        for (i, a), (j, b) in itertools.product(enumerate(items), enumerate(others))
        if qs.similarity(a, b) >= threshold
    )
    assert qs.near_duplicates(items, others, threshold=threshold) == brute_against
    assert brute, "the fixture must contain near duplicates for the test to mean anything"


def test_dedupe_decontaminate_and_separate_report_why():
    pool = ["今天比特币的价格是多少？", "今天比特币价格是多少", "今天比特币的价格是多少?", "北京明天会下雨吗？",
            "上海明天天气怎么样？", "为什么天空是蓝色的？"]
    kept, dropped = qs.dedupe(pool)
    assert kept == ["今天比特币的价格是多少？", "北京明天会下雨吗？", "上海明天天气怎么样？", "为什么天空是蓝色的？"]
    assert sorted(d.reason for d in dropped) == ["exact_duplicate", "near_duplicate"]
    kept, dropped = qs.decontaminate(kept, ["今天比特币价格是多少", "明天北京会下雨吗"])
    # Bigram Jaccard catches small edits (0.73 here), not reordered phrases (0.56 for the second).
    assert [(d.reason, d.other) for d in dropped] == [("eval_overlap", "今天比特币价格是多少")]
    assert kept == ["北京明天会下雨吗？", "上海明天天气怎么样？", "为什么天空是蓝色的？"]
    a = qs.Pool("a", ["为什么天空是蓝色的？", "1+1等于几？"])
    b = qs.Pool("b", ["为什么天空是蓝色的?", "北京天气"])
    qs.separate(a, b)
    assert a.questions == ["1+1等于几？"] and b.questions == ["北京天气"]
    assert a.report["dropped"] == {"in_both_pools": 1}


def test_shuffled_is_seeded_without_replacement_and_grows_as_a_prefix():
    pool = [f"问题{i}" for i in range(50)]
    a = qs.shuffled(pool, "0:thinking")
    assert a == qs.shuffled(pool, "0:thinking") and a != qs.shuffled(pool, "1:thinking")
    assert sorted(a) == sorted(pool)  # every question once: no replacement
    assert a[:10] == qs.shuffled(pool, "0:thinking")[:10]


def test_read_txt_jsonl_json(tmp_path):
    txt = tmp_path / "q.txt"
    txt.write_text("# 注释\n\n  第一题？ \n#另一条注释\n第二题\n   \n", encoding="utf-8")
    assert qs.read_questions(txt) == ["第一题？", "第二题"]
    jl = tmp_path / "q.jsonl"
    rows = [{"type": "search", "question": "天气？"}, {"messages": [{"role": "system", "content": "s"},
                                                                    {"role": "user", "content": "价格？"}], "type": "search"}]
    jl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    assert qs.read_questions(jl) == ["天气？", "价格？"]
    js = tmp_path / "q.json"
    js.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    assert qs.read_questions(js) == ["天气？", "价格？"]
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeff第一题\n".encode("utf-8"))
    assert qs.read_questions(bom) == ["第一题"]


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("missing.txt", None, "question file not found: {p}"),
        ("empty.txt", b"# only a comment\n\n", "question file {p} holds no questions"),
        ("latin.txt", "第一题\n".encode("utf-8") + b"caf\xe9\n",
         "{p}:2: not valid UTF-8 (byte 0xe9); save the file as UTF-8"),
        ("bad.jsonl", b'{"question": "a"}\n\n{"question": "b",}\n', "{p}:3: invalid JSON: Expecting property name enclosed in double quotes (column 18)"),
        ("field.jsonl", b'{"question": "a"}\n{"q": "b"}\n', "{p}:2: expected an object with a string 'question' field"),
    ],
)
def test_bad_question_files_fail_with_one_line(tmp_path, name, data, message):
    p = tmp_path / name
    if data is not None:
        p.write_bytes(data)
    with pytest.raises(ThinksearchError) as e:
        qs.read_questions(p)
    assert str(e.value) == message.format(p=p)


def test_shipped_eval_set_is_no_near_duplicate_of_the_training_pools():
    pools = [THINKING, SEARCH]
    eval_file = ROOT / "data/eval/test.jsonl"
    held_out = qs.read_questions(eval_file)
    assert len(held_out) >= 30
    for pool in pools:
        train = qs.read_questions(pool)
        assert len(train) >= 100, pool
        hits = qs.near_duplicates(train, held_out, threshold=qs.DEFAULT_THRESHOLD)
        assert not hits, [(train[i], held_out[j], s) for i, j, s in hits[:5]]


def test_read_pool_keeps_category_and_gold_and_load_pool_looks_them_up(tmp_path):
    jl = tmp_path / "t.jsonl"
    rows = [{"id": "a", "type": "thinking", "question": "17×23等于多少？", "category": "arithmetic", "answers": ["391"],
             "match": "any"},
            {"question": "为什么要早睡？", "category": "everyday"},
            {"question": "17×23等于多少?", "category": "other"}]  # an exact duplicate: the first row's entry wins
    jl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    got = qs.read_pool(jl)
    assert got[0] == qs.Question("17×23等于多少？", "arithmetic", "a", ("391",), "any", where=f"{jl}:1")
    assert got[0].checkable and not got[1].checkable and got[1].category == "everyday"
    pool = qs.load_pool(jl)
    assert pool.questions == ["17×23等于多少？", "为什么要早睡？"]
    assert pool.entry("17×23等于多少？").answers == ("391",) and pool.entry("17×23等于多少？").category == "arithmetic"
    assert pool.gold_counts() == {"arithmetic": {"questions": 1, "with_gold": 1}, "everyday": {"questions": 1, "with_gold": 0}}
    txt = tmp_path / "t.txt"
    txt.write_text("# 注释\n无类别？\n# category: logic — 逻辑\n第一题？\n\n# category: science\n第二题\n", encoding="utf-8")
    assert [(q.text, q.category, q.where) for q in qs.read_pool(txt)] == [
        ("无类别？", None, f"{txt}:2"), ("第一题？", "logic", f"{txt}:4"), ("第二题", "science", f"{txt}:7")]


@pytest.mark.parametrize("row, message", [
    ({"question": "1+1？", "answers": ["2"], "match": "most"}, "'match' must be one of any, all, got 'most'"),
    ({"question": "1+1？", "answers": ["2"]}, "'answers' needs 'match' (one of: any, all)"),
    ({"question": "1+1？", "answers": [], "match": "any"}, "'answers' is empty (list at least one accepted answer, or "
                                                          "leave the field out for an open question)"),
    ({"question": "1+1？", "category": 3}, "'category' must be a string"),
])
def test_pool_gold_rows_are_checked_like_the_eval_set(tmp_path, row, message):
    p = tmp_path / "pool.jsonl"
    p.write_text('{"question": "好问题"}\n\n' + json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(ThinksearchError) as e:
        qs.load_pool(p)
    assert str(e.value) == f"{p}:3: {message}"


def _shipped_rows(path: Path) -> list[dict]:
    if not path.is_file():
        pytest.skip("question files not in this checkout yet")
    return gold.load_gold(path, None)


def test_shipped_pools_have_ids_categories_and_gold_only_where_meant():
    thinking, search = _shipped_rows(THINKING), _shipped_rows(SEARCH)
    for kind, rows in (("think", thinking), ("search", search)):
        numbered = Counter()
        for r in rows:
            numbered[r["category"]] += 1
            assert r["id"] == f"pool-{kind}-{r['category']}-{numbered[r['category']]:02d}"
    assert {r["type"] for r in thinking} == {"thinking"} and {r["type"] for r in search} == {"search"}
    assert all(isinstance(r.get("answerable"), bool) for r in search)
    assert sum("answers" in r for r in thinking) >= 250
    # A model that restates the question must not pass: "还是长度单位" holds "是长度单位".
    echoed = [r["id"] for r in thinking if "answers" in r and matches_gold(r["question"], r["answers"], r["match"], anywhere=True)]
    assert not echoed


def test_data_readme_gold_table_matches_the_thinking_pool(monkeypatch):
    rows = _shipped_rows(THINKING)
    monkeypatch.syspath_prepend(str(ROOT / "data"))
    computed = importlib.import_module("golds_thinking").COMPUTED
    table = {}
    for r in rows:
        c = table.setdefault(r["category"], [0, 0, 0])
        c[0] += 1
        c[1] += "answers" in r
        c[2] += r["id"] in computed
    table["all"] = [sum(c[i] for c in table.values()) for i in range(3)]
    readme = (ROOT / "data/README.md").read_text(encoding="utf-8")
    documented = {m[1]: [int(m[2]), int(m[3]), int(m[4])]
                  for m in re.finditer(r"^\| `?(\w+)`? \| (\d+) \| (\d+) \| (\d+) \|$", readme, re.M)}
    assert documented == table


def test_search_pool_gold_is_in_its_passages_and_not_in_its_question():
    corpus = {json.loads(line)["id"]: json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()}
    rows = gold.load_gold(SEARCH, CORPUS)
    answerable = [r for r in rows if r["answerable"]]
    assert len(answerable) >= 100
    missing = [r["id"] for r in answerable if not matches_gold(
        "\n".join(corpus[p]["title"] + "\n" + corpus[p]["text"] for p in r["passages"]), r["answers"], r["match"], anywhere=True)]
    assert not missing
    # A key fact the question already holds would pass any answer that restates it.
    echoed = [r["id"] for r in answerable if any(a in r["question"] for a in r["answers"])
              or matches_gold(r["question"], r["answers"], r["match"], anywhere=True)]
    assert not echoed


def test_data_readme_search_gold_table_matches_the_search_pool():
    table: dict[str, list[int]] = {}
    for r in _shipped_rows(SEARCH):
        c = table.setdefault(r["category"], [0, 0])
        c[0] += 1
        c[1] += r["answerable"]
    table["all"] = [sum(c[i] for c in table.values()) for i in range(2)]
    readme = (ROOT / "data/README.md").read_text(encoding="utf-8")
    documented = {m[1]: [int(m[2]), int(m[3])] for m in re.finditer(r"^\| `?(\w+)`? \| (\d+) \| (\d+) \|$", readme, re.M)}
    assert documented == table
