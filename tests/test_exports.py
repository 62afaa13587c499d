"""`thinksearch export-data`: each format read back by the library that will read it.

- trl: `datasets.load_dataset` + TRL's own chat-template step and SFTTrainer's dataset preparation;
- openai: the OpenAI SDK's message and tool types (pydantic validation);
- llamafactory: LLaMA-Factory does not install beside this project's pins (it wants transformers
  <= 5.6, trl <= 0.24, datasets <= 4.0, torchaudio), so the format is checked against its documented
  sharegpt schema; where `llamafactory` imports, its own converter and qwen template are run too;
- reference: read back by `thinksearch train`'s reader.
Each checks that the text before a call (the thinking) survives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thinksearch import format as fmt
from thinksearch.cli import main
from thinksearch.errors import ThinksearchError
from thinksearch.exports import export_data
from thinksearch.train import read_rows

TRACE = "<thinking>\n这个问题需要最新的实时数据，我需要搜索。\n</thinking>"
THINKING = {"id": "t-1", "type": "thinking", "messages": fmt.thinking_messages("1+1等于几？", "1+1=2", "等于2。")}
SEARCH = {"id": "s-1", "type": "search", "messages": fmt.search_messages(
    "今天比特币的价格是多少？", "这个问题需要最新的实时数据，我需要搜索。", "比特币价格 今日",
    "[1] 比特币行情 — 约为10万美元 (示例, 2025-01-01)", "根据搜索结果，约为10万美元[1]")}


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture()
def data(tmp_path) -> Path:
    return _write(tmp_path / "data.jsonl", [THINKING, SEARCH])


def _expected(data: Path) -> list[list[dict]]:
    rows, _ = read_rows([data])
    return [r.messages for r in rows]


# ----------------------------------------------------------------------------- trl


def test_trl_export_loads_with_datasets_and_renders_through_trl(data, tmp_path, tiny_tokenizer):
    import datasets
    from trl.data_utils import apply_chat_template

    res = export_data(data, tmp_path / "trl", "trl")
    ds = datasets.load_dataset("json", data_files=str(res.files[0]), split="train")
    assert ds.column_names == ["messages", "tools"] and len(ds) == 2
    for example, messages in zip(ds, _expected(data)):
        assert example["tools"][0]["function"]["name"] == "search"
        got = apply_chat_template({"messages": example["messages"]}, tiny_tokenizer, tools=example["tools"])["text"]
        want = tiny_tokenizer.apply_chat_template(messages, tools=[fmt.SEARCH_TOOL_SCHEMA], tokenize=False)
        assert got == want
    # The assistant's text before the call is kept, the call follows it in Qwen's format.
    rendered = apply_chat_template({"messages": ds[1]["messages"]}, tiny_tokenizer, tools=ds[1]["tools"])["text"]
    assert f"{TRACE}\n<tool_call>\n" + '{"name": "search", "arguments": {"query": "比特币价格 今日"}}' in rendered
    assert "<tool_response>\n[1] 比特币行情" in rendered


def test_trl_export_through_sft_trainer_dataset_preparation(data, tmp_path, tiny, tiny_tokenizer):
    import datasets
    from trl import SFTConfig, SFTTrainer

    model, tok = tiny
    res = export_data(data, tmp_path / "trl", "trl")
    ds = datasets.load_dataset("json", data_files=str(res.files[0]), split="train")
    args = SFTConfig(output_dir=str(tmp_path / "sft"), report_to=[], max_steps=1, per_device_train_batch_size=1,
                     assistant_only_loss=False, use_cpu=True, save_strategy="no", logging_strategy="no")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    prepared = trainer.train_dataset
    for ids, messages in zip(prepared["input_ids"], _expected(data)):
        want = tok.apply_chat_template(messages, tools=[fmt.SEARCH_TOOL_SCHEMA], tokenize=False)
        assert tok.decode(ids) == want
    assert TRACE in tok.decode(prepared["input_ids"][1])


# ----------------------------------------------------------------------------- openai


def test_openai_export_validates_against_the_sdk_types_and_round_trips(data, tmp_path):
    from openai.types.chat import (ChatCompletionMessageFunctionToolCallParam, ChatCompletionMessageParam,
                                   ChatCompletionToolParam)
    from pydantic import TypeAdapter

    res = export_data(data, tmp_path / "oa", "openai")
    lines = res.files[0].read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    for line, want in zip(lines, _expected(data)):
        row = json.loads(line)
        assert set(row) == {"messages", "tools"}
        TypeAdapter(list[ChatCompletionMessageParam]).validate_python(row["messages"])
        TypeAdapter(list[ChatCompletionToolParam]).validate_python(row["tools"])
        back, ids = [], {}
        for m in row["messages"]:
            if m.get("tool_calls"):
                TypeAdapter(list[ChatCompletionMessageFunctionToolCallParam]).validate_python(m["tool_calls"])
                calls = []
                for c in m["tool_calls"]:
                    ids[c["id"]] = c["function"]["name"]
                    calls.append({"type": "function", "function": {"name": c["function"]["name"],
                                                                   "arguments": json.loads(c["function"]["arguments"])}})
                back.append({"role": "assistant", "content": m["content"], "tool_calls": calls})
            elif m["role"] == "tool":
                back.append({"role": "tool", "content": m["content"], "name": ids.pop(m["tool_call_id"])})
            else:
                back.append(m)
        assert back == want
    assert json.loads(lines[1])["messages"][2]["content"] == TRACE


# ----------------------------------------------------------------------------- llamafactory


def _lf_messages(row: dict, info: dict) -> list[dict]:
    """Read a sharegpt row back by LLaMA-Factory's documented rules (data/README.md of LLaMA-Factory):
    system column, then human/observation at odd and gpt/function_call at even positions."""
    cols, tags = info["columns"], info["tags"]
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["observation_tag"]: "tool",
             tags["function_tag"]: "call"}
    out = [{"role": "system", "content": row[cols["system"]]}]
    for k, turn in enumerate(row[cols["messages"]]):
        role = roles[turn[tags["role_tag"]]]
        assert (role in ("user", "tool")) == (k % 2 == 0), "turns must alternate"
        value = turn[tags["content_tag"]]
        if role == "call":
            parsed = fmt.parse(value)
            text = value[: value.index(fmt.TOOL_OPEN)].rstrip()
            out.append({"role": "assistant", "content": text, "tool_calls": [c.as_message_call() for c in parsed.tool_calls]})
        elif role == "tool":
            out.append({"role": "tool", "content": value, "name": "search"})
        else:
            out.append({"role": role, "content": value})
    assert out[-1]["role"] == "assistant"
    return out


def test_llamafactory_export_follows_the_documented_sharegpt_schema(data, tmp_path):
    res = export_data(data, tmp_path / "lf", "llamafactory")
    assert [p.name for p in res.files] == ["thinksearch.jsonl", "dataset_info.json"]
    info = json.loads(res.files[1].read_text(encoding="utf-8"))["thinksearch"]
    assert info["file_name"] == "thinksearch.jsonl" and info["formatting"] == "sharegpt"
    assert info["columns"] == {"messages": "conversations", "system": "system", "tools": "tools"}
    rows = [json.loads(line) for line in res.files[0].read_text(encoding="utf-8").splitlines()]
    for row, want in zip(rows, _expected(data)):
        tools = json.loads(row["tools"])  # a JSON string, as LLaMA-Factory's tools column is documented
        assert tools == [fmt.SEARCH_TOOL_SCHEMA]
        assert _lf_messages(row, info) == want
    call = rows[1]["conversations"][1]
    assert call["from"] == "function_call" and call["value"].startswith(TRACE + "\n<tool_call>\n")


def test_llamafactory_export_keeps_other_datasets_in_dataset_info(data, tmp_path):
    out = tmp_path / "lf"
    out.mkdir()
    (out / "dataset_info.json").write_text(json.dumps({"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}))
    export_data(data, out, "llamafactory")
    assert set(json.loads((out / "dataset_info.json").read_text())) == {"alpaca_en_demo", "thinksearch"}


def test_llamafactory_export_through_its_own_converter_and_qwen_template(data, tmp_path, tiny_tokenizer):
    converter = pytest.importorskip("llamafactory.data.converter", reason="llamafactory is not installed "
                                    "(its pins conflict with this project's; the schema test above covers the format)")
    from llamafactory.data.parser import DatasetAttr
    from llamafactory.data.template import TEMPLATES

    res = export_data(data, tmp_path / "lf", "llamafactory")
    info = json.loads(res.files[1].read_text(encoding="utf-8"))["thinksearch"]
    attr = DatasetAttr(load_from="file", dataset_name="thinksearch", formatting="sharegpt", **info["columns"], **info["tags"])
    convert = converter.SharegptDatasetConverter(attr, data_args=None)
    for line, messages in zip(res.files[0].read_text(encoding="utf-8").splitlines(), _expected(data)):
        c = convert(json.loads(line))
        assert c["_response"], "LLaMA-Factory dropped the row"
        pairs = TEMPLATES["qwen"].encode_multiturn(tiny_tokenizer, c["_prompt"] + c["_response"], c["_system"], c["_tools"])
        got = tiny_tokenizer.decode([t for p, r in pairs for t in p + r])
        assert got == tiny_tokenizer.apply_chat_template(messages, tools=[fmt.SEARCH_TOOL_SCHEMA], tokenize=False)


# ----------------------------------------------------------------------------- reference and input


def test_reference_export_is_the_existing_layout_and_reads_back(data, tmp_path):
    res = export_data(data, tmp_path / "ref", "reference")
    assert res.files[0].name == "synthetic_data.json"
    array = json.loads(res.files[0].read_text(encoding="utf-8"))
    assert [r["type"] for r in array] == ["thinking", "search"]
    assert array[1]["messages"][2]["content"].startswith(TRACE + "\n<tool_call>")
    # The reference layout (calls written inline) is accepted as input and lifted to structured calls.
    again = export_data(res.files[0], tmp_path / "trl", "trl")
    row = json.loads(again.files[0].read_text(encoding="utf-8").splitlines()[1])
    assert row["messages"][2] == {"role": "assistant", "content": TRACE,
                                  "tool_calls": [fmt.search_call("比特币价格 今日")]}


def test_a_bad_row_stops_the_export_with_file_and_line(tmp_path):
    bad = _write(tmp_path / "bad.jsonl", [THINKING, SEARCH, '{"type": "search", "messages": [{"role": "user"}]}'])
    with pytest.raises(ThinksearchError, match=rf"{bad}:3: .*content"):
        export_data(bad, tmp_path / "out", "trl")
    assert not (tmp_path / "out" / "train.jsonl").exists()
    res = export_data(bad, tmp_path / "out", "openai", skip_bad=True)
    assert res.rows == 2 and res.skipped and res.skipped[0].startswith(f"{bad}:3: ")


def test_a_row_llamafactory_cannot_hold_is_named_by_line(tmp_path):
    two = dict(SEARCH, messages=SEARCH["messages"][:3] + [SEARCH["messages"][3]] * 2 + SEARCH["messages"][4:])
    two["messages"][2] = dict(two["messages"][2], tool_calls=[fmt.search_call("a"), fmt.search_call("b")])
    path = _write(tmp_path / "d.jsonl", [THINKING, two])
    with pytest.raises(ThinksearchError, match=rf"{path}:2: LLaMA-Factory.*several tool results"):
        export_data(path, tmp_path / "lf", "llamafactory")
    res = export_data(path, tmp_path / "oa", "openai")  # fine there: each result answers its own call id
    msgs = json.loads(res.files[0].read_text(encoding="utf-8").splitlines()[1])["messages"]
    assert [m.get("tool_call_id") for m in msgs if m["role"] == "tool"] == ["call_1", "call_2"]


def test_cli_export_data(data, tmp_path, capsys):
    assert main(["export-data", str(data), "--format", "trl", "--out", str(tmp_path / "t")]) == 0
    assert "exported 2 rows (trl)" in capsys.readouterr().out
    assert main(["export-data", str(tmp_path / "missing.jsonl"), "--format", "trl", "--out", str(tmp_path / "t")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
