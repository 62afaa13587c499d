"""The local backend against real SQLite FTS5: Chinese/English/digits, both splitters,
incremental re-indexing, bad input with its one-line message, and the `index` CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from thinksearch import cli
from thinksearch.errors import ThinksearchError
from thinksearch.search import indexing, passages, segment
from thinksearch.search.base import SearchError
from thinksearch.search.local import LocalBackend, build_index

SPLITTERS = ["bigram", pytest.param("jieba", marks=pytest.mark.skipif(not segment.jieba_available(), reason="rjieba not installed"))]

DOCS = [
    {"title": "比特币价格", "text": "今日比特币价格约为6万美元，较昨日上涨2%。", "url": "https://e.x/btc", "date": "2025-01-02", "source": "财经新闻"},
    {"title": "北京天气预报", "text": "北京明天晴转多云，最高气温25度，适合出行。", "url": "https://e.x/bj"},
    {"title": "iPhone15 发布", "text": "苹果在9月发布iPhone15，起售价5999元。", "url": "https://e.x/ip"},
    {"title": "长城", "content": "长城是中国古代的军事防御工程，全长两万多公里。", "extra": {"ignored": True}},
    {"title": "Python 3.12", "snippet": "Python 3.12 adds better error messages and faster comprehensions."},
]


def write_corpus(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "news.jsonl", "w", encoding="utf-8") as f:
        for d in DOCS:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    (root / "guide.md").write_text(
        "---\ntitle: 使用指南\ndate: 2024-03-01\n---\n前言。\n\n## 安装\n运行 pip install thinksearch 即可安装。\n\n"
        "```\n# 代码里的井号不是标题\n```\n\n养猫须知\n--------\n小猫每天需要喝水。\n",
        encoding="utf-8")
    (root / "notes.txt").write_text("第一段：故宫位于北京市中心。\n\n第二段：颐和园是皇家园林。\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module", params=SPLITTERS)
def built(request, tmp_path_factory):
    root = write_corpus(tmp_path_factory.mktemp("corpus"))
    index = root.parent / f"index-{request.param}.sqlite"
    report = build_index([root], index, tokenizer=request.param)
    return report, LocalBackend(index)


def titles(results):
    return [r.title for r in results]


@pytest.mark.parametrize("query, expected", [
    ("比特币", "比特币价格"),            # a word inside a longer run
    ("天气", "北京天气预报"),             # the 2-character word trigram can't match
    ("北京明天天气怎么样", "北京天气预报"),  # a question, words not separated
    ("iphone15 价格", "iPhone15 发布"),  # mixed script, case folded
    ("５９９９元", "iPhone15 发布"),      # full-width digits match half-width
    ("error messages", "Python 3.12"),   # plain English
    ("防御工程", "长城"),                 # `content` field
    ("安装", "使用指南 › 安装"),          # Markdown section titled by its heading
    ("养猫", "使用指南 › 养猫须知"),       # setext heading
    ("颐和园", "notes"),                  # .txt paragraphs titled by the file
])
def test_queries_find_the_right_passage(built, query, expected):
    report, backend = built
    assert titles(backend.search(query, 3))[0] == expected


def test_single_character_query_and_fields(built):
    _, backend = built
    assert titles(backend.search("比", 5)) == ["比特币价格"]  # a lone character matches words it starts
    if backend.tokenizer == "bigram":  # ... and under bigrams also words it ends (养猫)
        assert titles(backend.search("猫", 5)) == ["使用指南 › 养猫须知"]
    (btc,) = backend.search("比特币 美元", 1)
    assert (btc.url, btc.date, btc.source) == ("https://e.x/btc", "2025-01-02", "财经新闻")
    assert "6万美元" in btc.snippet
    (md,) = backend.search("安装 thinksearch", 1)
    assert (md.url, md.date, md.source) == ("guide.md#安装", "2024-03-01", "guide.md")
    assert "代码里的井号" in md.snippet  # a '#' line inside a code fence is not a heading
    assert backend.search("", 5) == [] and backend.search("，。！", 5) == []
    assert backend.search("量子纠缠", 5) == []


def test_report_and_stored_tokenizer(built):
    report, backend = built
    assert report.files_indexed == 3 and report.skipped == [] and report.passages_total >= 9
    assert backend.tokenizer == report.tokenizer
    text = "\n".join(report.summary())
    assert f"({report.tokenizer} words)" in text and "3 indexed" in text


def test_query_syntax_is_never_interpreted(built):
    _, backend = built
    for q in ['"unbalanced', "NOT AND OR", "title:比特币", "a* ( )", "NEAR(x y)", "^比特币", "-- ; DROP TABLE fts"]:
        backend.search(q, 3)  # no SearchError: every word is quoted before it reaches FTS5


def test_long_passages_are_cut_and_snippets_centre_on_the_hit(tmp_path):
    filler = "这是一段无关的填充文字。" * 60
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "long.txt").write_text(filler + "关键的目标句子在这里。" + filler, encoding="utf-8")
    report = build_index([tmp_path / "c"], tmp_path / "i.sqlite", tokenizer="bigram", passage_chars=300)
    assert report.passages_total > 3
    (hit,) = LocalBackend(tmp_path / "i.sqlite", snippet_chars=100).search("目标句子", 1)
    assert "目标句子" in hit.snippet and len(hit.snippet) <= 102


def test_searches_from_many_threads(built):
    _, backend = built
    errors = []

    def work():
        try:
            for _ in range(20):
                assert titles(backend.search("天气", 1)) == ["北京天气预报"]
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# ----------------------------------------------------------------------------- incremental


def test_incremental_reindex(tmp_path):
    root = write_corpus(tmp_path / "c")
    index = tmp_path / "i.sqlite"
    first = build_index([root], index, tokenizer="bigram")
    backend = LocalBackend(index)
    key = backend.cache_key

    again = build_index([root], index)  # auto keeps the stored splitter
    assert (again.files_indexed, again.files_unchanged, again.passages_added, again.tokenizer) == (0, 3, 0, "bigram")
    assert backend.cache_key == key  # nothing changed: cached results stay valid

    # Touched but identical content: the hash says unchanged.
    os.utime(root / "notes.txt", ns=(1, 1))
    assert build_index([root], index).files_unchanged == 3

    (root / "notes.txt").write_text("第一段：天坛在北京南部。\n", encoding="utf-8")
    (root / "guide.md").unlink()
    (root / "new.txt").write_text("新的文件讲述敦煌莫高窟。\n", encoding="utf-8")
    third = build_index([root], index)
    assert (third.files_indexed, third.files_unchanged, third.files_removed) == (2, 1, 1)
    assert titles(backend.search("天坛", 3)) == ["notes"]
    assert backend.search("颐和园", 3) == []                      # the old paragraph is gone
    assert backend.search("安装 thinksearch", 3) == []            # the removed file is gone
    assert titles(backend.search("莫高窟", 3)) == ["new"]
    assert backend.cache_key != key
    assert third.passages_total == first.passages_total - 2 - 2 + 1 + 1  # notes 2→1, guide 2 gone, new 1
    with sqlite3.connect(index) as c:
        assert c.execute("SELECT count(*) FROM fts").fetchone()[0] == third.passages_total
        assert c.execute("SELECT count(*) FROM files").fetchone()[0] == 3


def test_naming_another_tokenizer_rebuilds(tmp_path):
    root = write_corpus(tmp_path / "c")
    index = tmp_path / "i.sqlite"
    build_index([root], index, tokenizer="bigram")
    report = build_index([root], index, tokenizer="bigram", passage_chars=100)
    assert report.rebuilt == "passage size 800 → 100" and report.files_indexed == 3
    assert build_index([root], index).files_unchanged == 3  # not naming a size keeps the index's
    if segment.jieba_available():
        report = build_index([root], index, tokenizer="jieba", passage_chars=100)
        assert report.rebuilt == "tokenizer bigram → jieba" and report.files_indexed == 3
        assert LocalBackend(index).tokenizer == "jieba"
        assert titles(LocalBackend(index).search("天气", 1)) == ["北京天气预报"]


# ----------------------------------------------------------------------------- bad input


def test_missing_corpus(tmp_path):
    with pytest.raises(ThinksearchError, match=r"^corpus path not found: .*nowhere$"):
        build_index([tmp_path / "nowhere"], tmp_path / "i.sqlite")


def test_empty_corpus(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "photo.png").write_bytes(b"\x89PNG")
    with pytest.raises(ThinksearchError, match=r"^empty corpus: no \.jsonl, \.md or \.txt files in .*empty$"):
        build_index([tmp_path / "empty"], tmp_path / "i.sqlite")
    (tmp_path / "empty" / "blank.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ThinksearchError, match=r"^empty corpus: no passages to index \(1 files skipped: .*blank\.txt: no text\)$"):
        build_index([tmp_path / "empty"], tmp_path / "i.sqlite")
    assert not (tmp_path / "i.sqlite").exists()  # no empty index left behind


def test_unreadable_and_non_utf8_files_are_named_skipped_and_counted(tmp_path, monkeypatch):
    root = write_corpus(tmp_path / "c")
    (root / "gbk.txt").write_bytes("北京天气".encode("gbk"))
    (root / "dangling.md").symlink_to(tmp_path / "missing.md")
    (root / "locked.txt").write_text("秘密", encoding="utf-8")
    real_read = Path.read_bytes

    def read_bytes(self):  # root ignores file modes, so a permission error is raised here
        if self.name == "locked.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    report = build_index([root], tmp_path / "i.sqlite", tokenizer="bigram")
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert reasons == {
        "gbk.txt": "not UTF-8 (byte 0xb1 at offset 0); convert it, e.g. iconv -f GBK -t UTF-8",
        "dangling.md": "cannot read: No such file or directory",
        "locked.txt": "cannot read: Permission denied",
    }
    assert report.files_indexed == 3 and report.files_seen == 6
    summary = "\n".join(report.summary())
    assert "3 skipped" in summary
    assert f"skipped {root / 'gbk.txt'}: not UTF-8 (byte 0xb1 at offset 0)" in summary


def test_bad_jsonl_lines_are_counted(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "d.jsonl").write_text('{"title": "好", "text": "好的文本"}\nnot json\n[1, 2]\n{"url": "x"}\n', encoding="utf-8")
    report = build_index([tmp_path / "c"], tmp_path / "i.sqlite", tokenizer="bigram")
    assert report.passages_total == 1
    assert [b.split(": ", 1)[1] for b in report.bad_lines] == [
        "line 2: invalid JSON (Expecting value)", "line 3: not a JSON object", "line 4: no title or text"]
    assert "3 JSONL lines skipped" in "\n".join(report.summary())


def test_missing_and_foreign_index(tmp_path):
    with pytest.raises(SearchError, match=r"^index not found: .*nope\.sqlite; build it with `thinksearch index build CORPUS --out .*nope\.sqlite`$"):
        LocalBackend(tmp_path / "nope.sqlite")
    (tmp_path / "notes.sqlite").write_text("just text", encoding="utf-8")
    with pytest.raises(SearchError, match=r"^.*notes\.sqlite is not a thinksearch index \(file is not a database\)"):
        LocalBackend(tmp_path / "notes.sqlite")
    root = write_corpus(tmp_path / "c")
    with pytest.raises(ThinksearchError, match=r"^.*notes\.sqlite exists and is not a thinksearch index; choose another --out$"):
        build_index([root], tmp_path / "notes.sqlite")


def test_jieba_index_without_rjieba_says_what_to_install(tmp_path, monkeypatch):
    root = write_corpus(tmp_path / "c")
    index = tmp_path / "i.sqlite"
    build_index([root], index, tokenizer="bigram")
    with sqlite3.connect(index) as c:
        c.execute("UPDATE meta SET value='jieba' WHERE key='tokenizer'")
    monkeypatch.setitem(__import__("sys").modules, "rjieba", None)  # as if not installed
    segment._jieba_cut.cache_clear()
    try:
        with pytest.raises(ThinksearchError, match=r"^this index was built with jieba word splitting: pip install 'thinksearch\[jieba\]'"):
            LocalBackend(index)
        assert segment.resolve("auto") == "bigram"
        with pytest.raises(ThinksearchError, match=r"^tokenizer 'jieba' needs rjieba: pip install 'thinksearch\[jieba\]'"):
            segment.resolve("jieba")
    finally:
        segment._jieba_cut.cache_clear()


# ----------------------------------------------------------------------------- CLI


def test_cli_build_and_search(tmp_path, capsys):
    root = write_corpus(tmp_path / "c")
    index = tmp_path / "sub" / "i.sqlite"
    assert cli.main(["index", "build", str(root), "--out", str(index), "--tokenizer", "bigram"]) == 0
    out = capsys.readouterr().out
    assert "(bigram words): 9 passages from 3 files" in out and "3 indexed" in out
    assert cli.main(["index", "search", str(index), "天气", "-k", "1"]) == 0
    assert capsys.readouterr().out.startswith("[1] 北京天气预报 — 北京明天晴转多云")
    assert cli.main(["index", "search", str(index), "比特币", "-k", "1", "--json"]) == 0
    (r,) = json.loads(capsys.readouterr().out)
    assert r["url"] == "https://e.x/btc" and set(r) == {"title", "snippet", "url", "date", "source"}


def test_cli_uses_the_config_search_section(tmp_path, capsys):
    root = write_corpus(tmp_path / "c")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"search:\n  index: {tmp_path / 'from-config.sqlite'}\n  tokenizer: bigram\n", encoding="utf-8")
    assert cli.main(["index", "build", str(root), "--config", str(cfg)]) == 0
    assert (tmp_path / "from-config.sqlite").is_file()
    assert "(bigram words)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["index", "search", "{tmp}/missing.sqlite", "天气"],
     "error: index not found: {tmp}/missing.sqlite; build it with `thinksearch index build CORPUS --out {tmp}/missing.sqlite`"),
    (["index", "build", "{tmp}/nowhere", "--out", "{tmp}/i.sqlite"], "error: corpus path not found: {tmp}/nowhere"),
    (["index", "build", "{tmp}", "--out", "{tmp}/i.sqlite"], "error: empty corpus: no .jsonl, .md or .txt files in {tmp}"),
    (["index", "build", "{tmp}", "--out", "{tmp}/i.sqlite", "--passage-chars", "0"],
     "error: --passage-chars (search.passage_chars): must be > 0, got 0"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == message.format(tmp=tmp_path) + "\n"


def test_chunk_and_markdown_units():
    assert passages.chunk("", 10) == []
    assert all(len(p) <= 20 for p in passages.chunk("一句话。" * 30, 20))
    assert passages.chunk("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    ps = passages.passages_from_markdown("# T\n\n## A\na\n### B #\nb\n## C# tips\nc\n", "d.md", "d", 100)
    assert [p.title for p in ps] == ["T › A", "T › B", "T › C# tips"]


def test_an_interrupted_build_resumes(tmp_path, monkeypatch):
    root = tmp_path / "c"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.txt").write_text(f"第{i}个文件讲述天气。", encoding="utf-8")
    monkeypatch.setattr(indexing, "_COMMIT_PASSAGES", 1)  # commit after every file
    calls = []
    real = indexing.parse_file

    def parse_then_crash(path, *a):
        calls.append(path.name)
        if path.name == "2.txt" and len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, *a)

    monkeypatch.setattr(indexing, "parse_file", parse_then_crash)
    with pytest.raises(KeyboardInterrupt):
        build_index([root], tmp_path / "i.sqlite", tokenizer="bigram")
    with sqlite3.connect(tmp_path / "i.sqlite") as c:  # what was committed is kept
        assert c.execute("SELECT count(*) FROM files").fetchone()[0] == 2
        assert indexing._meta(c)["state"] == "building"
    report = build_index([root], tmp_path / "i.sqlite")
    with sqlite3.connect(tmp_path / "i.sqlite") as c:
        meta = indexing._meta(c)
        assert meta["state"] == "ready" and meta["generation"]
    assert (report.files_unchanged, report.files_indexed, report.passages_total) == (2, 1, 3)
    assert len(LocalBackend(tmp_path / "i.sqlite").search("天气", 5)) == 3


def test_lone_characters_in_jieba_queries_are_prefixes_only_when_alone():
    if not segment.jieba_available():
        pytest.skip("rjieba not installed")
    assert [t.fts() for t in segment.query_terms("猫", "jieba")] == ['"猫"*']
    assert all(not t.prefix for t in segment.query_terms("为什么猫会叫", "jieba"))
