"""files.py: data files read with file:line errors, append-only logs that survive a torn last line."""

from __future__ import annotations

import doctest

import pytest

from thinksearch import files
from thinksearch.errors import ThinksearchError


def test_doctests():
    result = doctest.testmod(files)
    assert result.attempted > 0 and result.failed == 0


def test_jsonl_errors_raise_skip_or_keep(tmp_path):
    text = '{"a": 1}\n{"a": \n\n[3]\n'
    with pytest.raises(ThinksearchError, match=r"^d\.jsonl:2: invalid JSON: Expecting value \(column 7\)$"):
        list(files.jsonl_items(text, "d.jsonl"))
    assert list(files.jsonl_items(text, "d.jsonl", errors="skip")) == [(1, {"a": 1}), (4, [3])]
    kept = list(files.jsonl_items(text, "d.jsonl", errors="keep"))
    assert [n for n, _ in kept] == [1, 2, 4]
    assert isinstance(kept[1][1], files.InvalidJson) and str(kept[1][1]).startswith("invalid JSON: Expecting value")


@pytest.mark.parametrize("text, message", [
    ('[\n {"a": 1},\n oops\n]', r"^a\.json:3: invalid JSON: Expecting value"),
    ('[\n {"a": 1}\n {"a": 2}\n]', r"^a\.json:3: invalid JSON: expected ',' or '\]' after an array item$"),
    ('\n{"a": 1}', r"^a\.json:2: expected a JSON array$"),
])
def test_broken_json_arrays_name_the_line(text, message):
    with pytest.raises(ThinksearchError, match=message):
        list(files.json_array_items(text, "a.json"))


def test_read_items_tells_an_array_from_jsonl(tmp_path):
    arr, lines = tmp_path / "a.json", tmp_path / "b.jsonl"
    arr.write_text(' [{"q": 1},\n {"q": 2}]', encoding="utf-8")
    lines.write_text('{"q": 1}\n{"q": 2}\n', encoding="utf-8")
    assert list(files.read_items(arr)) == [(1, {"q": 1}), (2, {"q": 2})]
    assert list(files.read_items(lines)) == [(1, {"q": 1}), (2, {"q": 2})]


def test_load_json_names_the_file_and_line(tmp_path):
    p = tmp_path / "meta.json"
    with pytest.raises(ThinksearchError, match="adapter metadata not found"):
        files.load_json(p, "adapter metadata")
    p.write_text('{\n "a": 1,\n}\n', encoding="utf-8")
    with pytest.raises(ThinksearchError, match=r"meta\.json:3: invalid JSON"):
        files.load_json(p)


def test_append_jsonl_and_read_log_ignore_a_torn_last_line(tmp_path):
    p = tmp_path / "log.jsonl"
    files.append_jsonl(p, [{"id": 1}, {"id": "二"}])
    with open(p, "ab") as fh:
        fh.write(b'{"id": 3')  # a crash mid-write
    assert files.read_log(p) == [{"id": 1}, {"id": "二"}]
    assert p.read_bytes().endswith(b'{"id": 3')  # read_log only reads; JsonlLog.open cuts
    log = files.JsonlLog(p)
    assert log.open() == [{"id": 1}, {"id": "二"}] and log.dropped_bytes == len(b'{"id": 3')
    log.append({"id": 4})
    log.close()
    assert [r["id"] for r in files.read_log(p)] == [1, "二", 4]


def test_a_log_subclass_words_its_own_errors(tmp_path):
    class Outputs(files.JsonlLog):
        busy = "someone else writes {path}"
        corrupt = "broken output; rerun with --restart"

    p = tmp_path / "o.jsonl"
    first = Outputs(p)
    first.open()
    try:
        with pytest.raises(ThinksearchError, match=r"^someone else writes .*o\.jsonl$"):
            Outputs(p).open()
    finally:
        first.close()
    p.write_bytes(b'{"id": 1}\n[2]\n')
    with pytest.raises(ThinksearchError, match=r"o\.jsonl:2: broken output; rerun with --restart$"):
        Outputs(p, lock=False).open()
