"""Training (stage 2) with the tiny model: loss mask, data checks, run directory, resume, merge, DDP."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from thinksearch import cli
from thinksearch import format as fmt
from thinksearch import train as tr
from thinksearch.config import TrainConfig
from thinksearch.errors import ConfigError, ThinksearchError

SRC = Path(__file__).resolve().parent.parent / "src"


# ----------------------------------------------------------------------------- rows


def thinking_row(i: int, trace_len: int = 1) -> dict:
    msgs = fmt.thinking_messages(f"问题{i}：正方形面积是4倍，周长比是多少？", "设边长为a，b=2a。" * trace_len, "周长比是2:1。")
    return {"id": f"t-{i}", "type": "thinking", "messages": msgs, "meta": {}}


def search_row(i: int) -> dict:
    msgs = fmt.search_messages(f"今天比特币的价格是多少{i}？", "这个问题需要实时数据。", "比特币价格 今日",
                               "[1] 比特币 — 价格约为…… (新闻, 2025-01-01)", "根据搜索结果，价格约为……[1]")
    return {"id": f"s-{i}", "type": "search", "messages": msgs, "meta": {}}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- the loss mask


def _token_bytes(tokenizer, ids: list[int]) -> list[bytes]:
    """The exact bytes each token stands for (byte-level BPE, special and added tokens literal)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    decoder = {c: b for b, c in bytes_to_unicode().items()}
    literal = set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())
    out = []
    for tok in tokenizer.convert_ids_to_tokens(ids):
        out.append(tok.encode() if tok in literal else bytes(decoder[c] for c in tok))
    return out


@pytest.mark.parametrize("row", [search_row(0), thinking_row(0)], ids=["search", "thinking"])
def test_mask_trains_exactly_the_assistant_spans_token_by_token(tiny_tokenizer, row):
    messages = row["messages"]
    enc = tr.encode(tiny_tokenizer, messages)
    full = fmt.render(tiny_tokenizer, messages).encode()
    pieces = _token_bytes(tiny_tokenizer, enc.input_ids)
    assert b"".join(pieces) == full  # the segments tokenize back to exactly the rendered conversation

    # Expected trained byte ranges, found independently: each assistant turn as format.py renders
    # it, plus the <|im_end|> that closes it, right after "<|im_start|>assistant\n".
    expected, pos = [], 0
    for m in messages:
        if m["role"] != "assistant":
            continue
        said = (fmt.render_assistant(m["content"], m.get("tool_calls", ())) + "<|im_end|>").encode()
        head = full.index(b"<|im_start|>assistant\n", pos) + len(b"<|im_start|>assistant\n")
        assert full[head:head + len(said)] == said
        expected.append((head, head + len(said)))
        pos = head + len(said)
    assert len(expected) == (2 if row["type"] == "search" else 1)

    start = 0
    trained = []
    for piece, bit in zip(pieces, enc.assistant_masks):
        end = start + len(piece)
        inside = any(a <= start and end <= b for a, b in expected)
        straddles = any(start < a < end or start < b < end for a, b in expected)
        assert not straddles, f"token {piece!r} crosses a turn boundary"
        assert bit == int(inside), f"token {piece!r} at {start}: mask {bit}, expected {int(inside)}"
        if bit:
            trained.append(piece)
        start = end
    text = b"".join(trained).decode()
    assert text.count("<|im_end|>") == len(expected)
    assert fmt.SYSTEM_PROMPT[:20] not in text and "<|im_start|>" not in text
    assert messages[1]["content"] not in text  # the user turn
    if row["type"] == "search":
        assert '{"name": "search", "arguments": {"query": "比特币价格 今日"}}' in text
        assert "<tool_call>" in text and "</tool_call>" in text
        assert "<tool_response>" not in text and "价格约为…… (新闻" not in text  # the tool result
    else:
        assert text.startswith("<thinking>\n") and text.endswith("周长比是2:1。<|im_end|>")


def test_a_row_without_an_assistant_turn_is_reported_not_trained(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [thinking_row(0), {"messages": fmt.prompt_messages("只有问题")}])
    with pytest.raises(ThinksearchError, match=r"d\.jsonl:2: no assistant turn to learn from"):
        tr.read_rows([path])


# ----------------------------------------------------------------------------- bad rows


BAD_ROWS = [
    ("{not json", "invalid JSON: Expecting property name enclosed in double quotes"),
    ("[1, 2]", "expected a JSON object with 'messages', got list"),
    ({"type": "thinking"}, "'messages' must be a non-empty list"),
    ({"type": "chat", "messages": thinking_row(0)["messages"]}, "'type' must be 'thinking' or 'search', got 'chat'"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "message 1: unknown role 'bot'"),
    ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]},
     "message 1 (user): 'content' must be a string"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a<|im_end|>"}]},
     "message 2 (assistant): contains the chat-template token <|im_end|>"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}]},
     "message 2 (tool): a tool result must follow an assistant turn that calls a tool"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
     "message 2 (assistant): empty assistant turn"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "",
                    "tool_calls": [{"function": {"name": "search", "arguments": "{oops"}}]}]},
     "message 2 (assistant): tool call 1: 'arguments' is not valid JSON"),
    ({"type": "search", "messages": thinking_row(0)["messages"]},
     "type 'search' but no assistant turn calls the search tool"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]},
     "message 2 (assistant): an assistant turn must follow a user or tool turn"),
]


@pytest.mark.parametrize("bad,message", BAD_ROWS, ids=[m.split(":")[0][:30] for _, m in BAD_ROWS])
def test_a_bad_row_names_file_line_and_what_is_wrong(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "rows.jsonl", [thinking_row(0), "", bad])
    with pytest.raises(ThinksearchError) as e:
        tr.read_rows([path])
    assert str(e.value).startswith(f"{path}:3: {message}")
    assert "--skip-bad-rows" in str(e.value)


def test_skip_bad_rows_skips_and_counts(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [thinking_row(0), "{not json", search_row(1)])
    rows, skipped = tr.read_rows([path], skip_bad=True)
    assert [r.id for r in rows] == ["t-0", "s-1"]
    assert [(s.where, s.reason) for s in skipped] == [(f"{path}:2", "bad_row")]


def test_reference_layout_json_array_with_line_numbers(tmp_path):
    good, openai_style = thinking_row(0), search_row(1)
    fn = openai_style["messages"][2]["tool_calls"][0]["function"]
    fn["arguments"] = json.dumps(fn["arguments"], ensure_ascii=False)  # as OpenAI clients send them
    arr = "[\n" + json.dumps({"messages": good["messages"], "type": "thinking"}, ensure_ascii=False) + ",\n" \
        + json.dumps(openai_style, ensure_ascii=False) + ",\n  {\"type\": \"search\"}\n]\n"
    path = tmp_path / "synthetic_data.json"
    path.write_text(arr, encoding="utf-8")
    with pytest.raises(ThinksearchError, match=r"synthetic_data\.json:4: 'messages' must be a non-empty list"):
        tr.read_rows([path])
    rows, skipped = tr.read_rows([path], skip_bad=True)
    assert [r.where.rsplit(":", 1)[1] for r in rows] == ["2", "3"] and len(skipped) == 1
    # Tool-call arguments given as a JSON string (OpenAI style) are read as the object the template wants.
    assert rows[1].messages[2]["tool_calls"][0]["function"]["arguments"] == {"query": "比特币价格 今日"}


def test_missing_data_file_is_one_line(tmp_path):
    with pytest.raises(ThinksearchError, match="data file not found: .*nope.jsonl"):
        tr.read_rows([tmp_path / "nope.jsonl"])


def test_too_long_rows_are_skipped_and_counted_never_cut(tiny_tokenizer):
    rows = [tr.Row(f"d.jsonl:{i}", f"t{i}", "thinking", thinking_row(i, trace_len=1 if i else 40)["messages"])
            for i in range(4)]
    lengths = [len(tr.encode(tiny_tokenizer, r.messages).input_ids) for r in rows]
    limit = sorted(lengths)[-2]
    prep = tr.prepare(tiny_tokenizer, rows, max_length=limit, eval_fraction=0.0, seed=0)
    assert [(s.where, s.reason) for s in prep.skipped] == [("d.jsonl:0", "too_long")]
    assert f"{lengths[0]} tokens > max_length {limit}" in prep.skipped[0].detail
    assert sorted(len(e.input_ids) for e in prep.train) == sorted(lengths[1:])  # the others are whole
    with pytest.raises(ThinksearchError, match="no row fits: all 4 rows were left out \\(4 too_long\\)"):
        tr.prepare(tiny_tokenizer, rows, max_length=10, eval_fraction=0.0, seed=0)


# ----------------------------------------------------------------------------- config and flags


def test_config_errors_name_the_flag():
    with pytest.raises(ConfigError, match=r"--lora-dropout \(lora_dropout\): must be in \[0, 1\), got 1.5"):
        TrainConfig(lora_dropout=1.5)
    with pytest.raises(ConfigError, match="--target-modules .*all-linear already covers"):
        TrainConfig(target_modules=["all-linear", "q_proj"])
    with pytest.raises(ConfigError, match=r"--batch-size \(batch_size\): must be > 0"):
        TrainConfig(batch_size=0)


def test_unknown_target_module_lists_the_models_linear_modules(tiny):
    model, _ = tiny
    cfg = TrainConfig(model="tiny", target_modules=["q_proj", "qkv"])
    with pytest.raises(ConfigError) as e:
        tr.lora_config(cfg, model)
    assert str(e.value) == ("--target-modules (train.target_modules): unknown module 'qkv' for tiny (its linear "
                            "modules: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj; "
                            "or all-linear)")
    assert tr.lora_config(TrainConfig(target_modules=["q_proj", "v_proj"]), model).target_modules == {"q_proj", "v_proj"}


def test_cli_bad_data_prints_one_line_and_exits_2(tmp_path, capsys):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"messages": "nope"}])
    code = cli.main(["train", "--data", str(path), "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: {path}:1: 'messages' must be a non-empty list (fix the row, or pass --skip-bad-rows to skip such rows)\n"


# ----------------------------------------------------------------------------- a real run (tiny model)


def small_config(model_dir: Path, data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model=str(model_dir), data=[str(data)], output_dir=str(out), batch_size=2, grad_accum=1, epochs=2,
                learning_rate=5e-3, eval_fraction=0.1, save_steps=2, logging_steps=1, max_length=400,
                skip_bad_rows=True, precision="fp32", seed=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rows = [thinking_row(i, trace_len=1 + i % 3) if i % 2 else search_row(i) for i in range(10)]
    rows.insert(3, "{broken")                       # counted as bad_row
    rows.insert(6, thinking_row(99, trace_len=80))  # longer than max_length: counted as too_long
    return write_jsonl(d / "rows.jsonl", rows)


@pytest.fixture(scope="module")
def run(tiny_model_dir, data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    result = tr.train(small_config(tiny_model_dir, data_file, out))
    return result


def test_run_writes_a_complete_run_directory(run, tiny_model_dir):
    out, m = run.output_dir, run.metrics
    for name in ("adapter_model.safetensors", "adapter_config.json", "thinksearch_adapter.json", "tokenizer.json",
                 "train_config.yaml", "metrics.json", "loss.png", "run.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()  # removed once the adapter is saved
    meta = json.loads((out / "thinksearch_adapter.json").read_text())
    assert meta["base_model"] == str(tiny_model_dir) and meta["base_signature"]["hidden_size"] == 32
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["rows"] == {"read": 12, "train": 9, "eval": 1, "skipped": {"bad_row": 1, "too_long": 1}}
    assert m["global_step"] == 10 and m["epochs"] == 2.0  # 9 rows / batch 2 -> 5 steps x 2 epochs
    assert m["eval_loss_start"] is not None and m["eval_loss"] is not None
    assert m["tokens"]["processed"] == 2 * m["tokens"]["train_rows"] > 2 * m["tokens"]["train_assistant"] > 0
    assert len([h for h in m["history"] if "loss" in h]) == 10
    assert "too_long" in tr.summary(run) and "rows.jsonl:7" in tr.summary(run)
    assert tr.saved_config(out)["lora_r"] == 16
    cfg_text = (out / "train_config.yaml").read_text()
    assert cfg_text.splitlines()[1] == "train:"  # reusable: thinksearch train --config RUN/train_config.yaml


def test_refuses_an_output_dir_that_holds_a_run(run, tiny_model_dir, data_file, tmp_path):
    cfg = small_config(tiny_model_dir, data_file, run.output_dir)
    with pytest.raises(ThinksearchError, match=r"already holds a training run \(complete, started .*\); "
                                               r"pass --resume to continue it or --overwrite to replace it"):
        tr.train(cfg)
    with pytest.raises(ThinksearchError, match=r"--resume: .* was started with other settings \(lora_r: 16 then, 8 now\)"):
        tr.train(small_config(tiny_model_dir, data_file, run.output_dir, lora_r=8), resume=True)
    assert tr.train(cfg, resume=True).notes == [f"{run.output_dir} is already complete; nothing to resume"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ThinksearchError, match="holds files that are not a thinksearch training run"):
        tr.train(small_config(tiny_model_dir, data_file, other), overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"


def test_adapter_reload_changes_the_output(run, tiny_model_dir):
    import torch

    from thinksearch import models

    base, tok = models.load(str(tiny_model_dir), dtype="float32", device="cpu")
    tuned, _ = models.load(f"{tiny_model_dir}+{run.output_dir}", dtype="float32", device="cpu")
    ids = tok(fmt.render(tok, fmt.prompt_messages("今天比特币的价格是多少？"), add_generation_prompt=True),
              return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        diff = (tuned(**ids).logits - base(**ids).logits).abs().max().item()
    assert diff > 1e-2


def test_merge_gives_the_logits_of_base_plus_adapter(run, tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from thinksearch import models

    out = tr.merge(run.output_dir, tmp_path / "merged")
    assert not (out / "adapter_config.json").exists() and (out / "config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)  # plain transformers, no peft
    assert type(merged).__module__.startswith("transformers.")
    peft_model, tok = models.load(f"{tiny_model_dir}+{run.output_dir}", dtype="float32", device="cpu")
    base, _ = models.load(str(tiny_model_dir), dtype="float32", device="cpu")
    ids = tok(["<|im_start|>user\n周长比是多少？<|im_end|>\n<|im_start|>assistant\n"], return_tensors="pt",
              add_special_tokens=False)
    with torch.no_grad():
        a, b, c = merged(**ids).logits, peft_model(**ids).logits, base(**ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    assert (a - c).abs().max() > 1e-2  # and the adapter did change something
    with pytest.raises(ThinksearchError, match="already exists and is not empty; pass --overwrite"):
        tr.merge(run.output_dir, out)
    assert tr.merge(run.output_dir, out, overwrite=True) == out


def test_tool_call_token_rows_are_trained_in_both_embeddings(run, tiny_model_dir):
    """<tool_call>/</tool_call> rows of the input embeddings and the (untied) LM head move; others do not."""
    import torch

    from thinksearch import models

    base, tok = models.load(str(tiny_model_dir), dtype="float32", device="cpu")
    tuned, _ = models.load(f"{tiny_model_dir}+{run.output_dir}", dtype="float32", device="cpu")
    assert not base.config.tie_word_embeddings
    trained = [tok.convert_tokens_to_ids(t) for t in ("<tool_call>", "</tool_call>")]
    others = [tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")]
    ids = torch.tensor([trained + others])
    hidden = torch.randn(1, 1, base.config.hidden_size)
    with torch.no_grad():
        emb = tuned.get_input_embeddings()(ids) - base.get_input_embeddings()(ids)
        head = tuned.get_output_embeddings()(hidden)[0, 0] - base.get_output_embeddings()(hidden)[0, 0]
    assert emb[0, :2].abs().amax(-1).min() > 0 and emb[0, 2:].abs().max() == 0
    assert head[trained].abs().min() > 0 and head[others].abs().max() == 0


def test_token_rows_get_their_own_learning_rate(tiny_model_dir, data_file, tmp_path):
    cfg = small_config(tiny_model_dir, data_file, tmp_path / "run", learning_rate=1e-3, trainable_tokens_lr_scale=10.0)
    resolved, tok, data = tr.load_data(cfg)
    trainer = tr.build_trainer(cfg, resolved, tok, data, tr.sft_args(cfg, tmp_path / "run", "fp32", has_eval=True), "fp32")
    opt = trainer.create_optimizer()
    rows = {id(p) for n, p in trainer.model.named_parameters() if "trainable_tokens_delta" in n}
    assert len(rows) == 2  # input embeddings and LM head
    lrs = {g["lr"] for g in opt.param_groups if any(id(p) in rows for p in g["params"])}
    assert len(lrs) == 1 and lrs.pop() == pytest.approx(1e-2)
    assert all(not any(id(p) in rows for p in g["params"]) for g in opt.param_groups if g["lr"] == pytest.approx(1e-3))
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(p.requires_grad for p in trainer.model.parameters())


def test_merge_cli_errors(tmp_path, capsys):
    assert cli.main(["merge", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err == f"error: '{tmp_path}' is not a LoRA adapter directory (no adapter_config.json)\n"


def test_batches_are_padded_dynamically_and_grouped_by_length(tiny_model_dir, tmp_path):
    rows = [thinking_row(i, trace_len=1 + (i * 7) % 9) for i in range(16)]
    cfg = small_config(tiny_model_dir, write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "run",
                       eval_fraction=0.0, max_length=1024, group_by_length=True)  # off by default
    resolved, tok, data = tr.load_data(cfg)
    args = tr.sft_args(cfg, tmp_path / "run", "fp32", has_eval=False)
    trainer = tr.build_trainer(cfg, resolved, tok, data, args, "fp32")
    widths, wasted = [], 0
    for batch in trainer.get_train_dataloader():
        real = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == int(real.max())  # padded to the batch's own longest row only
        wasted += int((batch["attention_mask"] == 0).sum())
        widths.append(batch["input_ids"].shape[1])
        labels = batch["labels"]
        assert bool((labels[batch["attention_mask"] == 0] == -100).all())
    assert max(widths) < cfg.max_length and len(set(widths)) > 2
    lengths = [len(e.input_ids) for e in data.train]
    in_file_order = sum(max(lengths[i:i + 2]) * 2 - sum(lengths[i:i + 2]) for i in range(0, 16, 2))
    assert wasted < in_file_order  # length grouping pairs rows of similar length


def test_padding_free_gives_the_same_first_loss(tiny_model_dir, data_file, tmp_path):
    losses = {}
    for pf in (False, True):
        cfg = small_config(tiny_model_dir, data_file, tmp_path / f"pf{pf}", padding_free=pf, max_steps=1,
                           eval_fraction=0.0)
        losses[pf] = tr.train(cfg).metrics["first_loss"]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


# ----------------------------------------------------------------------------- crash safety


KILLED_RUN = """
import sys, time
from transformers import TrainerCallback
from thinksearch import train
from thinksearch.config import TrainConfig

class Slow(TrainerCallback):  # gives the test time to kill the run between checkpoints
    def on_step_end(self, args, state, control, **kw):
        time.sleep(0.4)

cfg = TrainConfig(**__CFG__)
train.train(cfg, callbacks=[Slow()])
"""


@pytest.fixture(scope="module")
def killed_run(tiny_model_dir, data_file, tmp_path_factory):
    """A run SIGKILLed after its second checkpoint was sealed (steps 2 and 4 of 10)."""
    out = tmp_path_factory.mktemp("killed") / "run"
    cfg = small_config(tiny_model_dir, data_file, out)
    script = KILLED_RUN.replace("__CFG__", repr(vars(cfg)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    seal = out / "checkpoints" / "checkpoint-4" / tr.SEAL_FILE
    deadline = time.monotonic() + 240
    while not seal.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint within 240 s")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    return cfg, out


def _copy_run(killed_run, dest: Path) -> TrainConfig:
    cfg, out = killed_run
    shutil.copytree(out, dest)
    return TrainConfig(**{**vars(cfg), "output_dir": str(dest)})


def test_resume_after_kill_reaches_the_same_final_step(killed_run, run, tmp_path):
    cfg = _copy_run(killed_run, tmp_path / "run")
    with pytest.raises(ThinksearchError, match="already holds a training run \\(running"):
        tr.train(cfg)
    result = tr.train(cfg, resume=True)
    m = result.metrics
    assert m["resumed_from"] is not None and int(m["resumed_from"].split("-")[1]) >= 4
    assert m["global_step"] == run.metrics["global_step"] == 10
    assert 0 < m["tokens"]["processed"] < run.metrics["tokens"]["processed"]  # this session's tokens only
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "complete"
    # The steps before the kill are in the history too (restored from the checkpoint).
    assert [h["step"] for h in m["history"] if "loss" in h] == list(range(1, 11))


def test_resume_refuses_changed_data(killed_run, tmp_path):
    cfg = _copy_run(killed_run, tmp_path / "run")
    data = Path(cfg.data[0])
    original = data.read_text(encoding="utf-8")
    try:
        data.write_text(original + json.dumps(thinking_row(123), ensure_ascii=False) + "\n", encoding="utf-8")
        with pytest.raises(ThinksearchError, match="the training data changed since .* was started"):
            tr.train(cfg, resume=True)
    finally:
        data.write_text(original, encoding="utf-8")


def test_corrupted_checkpoint_is_detected_with_a_clear_message(killed_run, tmp_path):
    cfg = _copy_run(killed_run, tmp_path / "run")
    ckdir = tmp_path / "run" / "checkpoints"
    newest = max((p for p in ckdir.iterdir() if (p / tr.SEAL_FILE).exists()), key=lambda p: int(p.name.split("-")[1]))
    target = newest / "optimizer.pt"
    size = target.stat().st_size
    with open(target, "r+b") as fh:
        fh.truncate(size // 2)
    older = [p.name for p in tr.list_checkpoints(ckdir) if p != newest and (p / tr.SEAL_FILE).exists()]
    with pytest.raises(ThinksearchError) as e:
        tr.train(cfg, resume=True)
    assert str(e.value) == (f"checkpoint {newest} is corrupted: optimizer.pt is truncated ({size // 2} of {size} "
                            f"bytes); delete that directory to resume from {older[-1]}, or start over with --overwrite")
    # A checkpoint whose save was interrupted (never sealed) is discarded; the one before it is used.
    shutil.rmtree(newest)
    shutil.copytree(ckdir / older[-1], newest)
    (newest / tr.SEAL_FILE).unlink()
    result = tr.train(cfg, resume=True)
    assert result.metrics["resumed_from"] == older[-1] and result.metrics["global_step"] == 10
    assert any("is incomplete" in n for n in result.notes)


def test_checkpoint_seal_detects_missing_and_changed_files(tmp_path):
    ck = tmp_path / "checkpoint-3"
    ck.mkdir()
    (ck / "a.bin").write_bytes(b"x" * 10)
    assert tr.checkpoint_problem(ck) == ("incomplete", "it was never sealed (interrupted while saving)")
    tr.seal_checkpoint(ck, 3)
    assert tr.checkpoint_problem(ck) is None
    (ck / "a.bin").write_bytes(b"y" * 10)
    assert tr.checkpoint_problem(ck) == ("corrupted", "a.bin does not match its checksum")
    (ck / "a.bin").unlink()
    assert tr.checkpoint_problem(ck) == ("corrupted", "a.bin is missing")


# ----------------------------------------------------------------------------- scale-out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The decision weights' divisor is gathered from both ranks (trainer._get_num_items_in_batch).
@pytest.mark.parametrize("extra", [[], ["--decision-weight", "3"]], ids=["plain", "decision-weight"])
def test_two_processes_with_accelerate_agree_on_the_adapter(tiny_model_dir, data_file, tmp_path, extra):
    from safetensors.torch import load_file

    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           "-m", "thinksearch", "train", "--model", str(tiny_model_dir), "--data", str(data_file),
           "--output-dir", str(out), "--max-steps", "3", "--batch-size", "2", "--grad-accum", "1",
           "--eval-fraction", "0", "--skip-bad-rows", "--max-length", "400", "--precision", "fp32",
           "--learning-rate", "1e-2", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["effective_batch"] == 4 and m["global_step"] == 3
    assert (m["tokens"]["train_decision"] is None) == (not extra)
    hashes = m["rank_adapter_sha256"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert tr.adapter_digest(load_file(str(out / "adapter_model.safetensors"))) == hashes[0]
    assert proc.stdout.count("adapter: ") == 1  # the summary is printed once, by the main process


def test_train_help_lists_the_recipe_defaults():
    text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "--lora-r" in text and "reference recipe: 16" in text and "--resume" in text and "--overwrite" in text
    assert "--skip-bad-rows" in text and "--target-modules" in text


def test_module_doctests():
    import doctest

    from thinksearch.train import build, checkpoints, data, merging, run

    results = [doctest.testmod(m) for m in (tr, data, checkpoints, build, run, merging)]
    assert sum(r.attempted for r in results) > 0 and sum(r.failed for r in results) == 0


def test_importing_the_package_imports_no_torch():
    """The modules that subclass torch/transformers/trl classes load only when a run builds its trainer."""
    code = ("import sys, thinksearch.train as t; t.train, t.merge, t.encode; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules)); "
            "t.keep_mask; print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "True"]  # and the lazy names do load when asked for


def test_peft_outside_the_tested_versions_is_refused_in_one_line():
    from importlib.metadata import version

    tr.require_supported_peft()  # the installed one is supported
    for bad in ("0.22.0", "0.20.3", "1.0.0"):
        with pytest.raises(ThinksearchError) as e:
            tr.require_supported_peft(bad)
        assert str(e.value) == (f"peft {bad} is installed, but training patches PEFT internals and is tested with "
                                f"peft{tr.SUPPORTED_PEFT}; install a supported version: "
                                f"pip install 'peft{tr.SUPPORTED_PEFT}'")
    tr.require_supported_peft("0.21.9")
    assert version("peft").startswith("0.21.")
    # pyproject.toml states the same bound as the check.
    pyproject = (SRC.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert re.findall(r'"(peft[^"]*)"', pyproject) == [f"peft{tr.SUPPORTED_PEFT}"]


def test_sparse_head_matches_trls_fused_head(tiny_model_dir, data_file, tmp_path):
    """Our CPU loss head gives TRL's loss and gradients (only faster on CPU)."""
    # No trainable token rows here: TRL's fused kernel cannot train LM-head rows (see build_trainer).
    cfg = small_config(tiny_model_dir, data_file, tmp_path / "run", eval_fraction=0.0, batch_size=4, trainable_tokens=[])
    resolved, tok, data = tr.load_data(cfg)
    args = tr.sft_args(cfg, tmp_path / "run", "fp32", has_eval=False)
    got = {}
    for sparse in (True, False):
        trainer = tr.build_trainer(cfg, resolved, tok, data, args, "fp32", sparse_head=sparse)
        batch = next(iter(trainer.get_train_dataloader()))
        assert (batch["attention_mask"] == 0).any()  # padded: ours drops the mask, TRL's keeps it
        trainer.model.train()
        trainer.compute_loss(trainer.model, dict(batch)).backward()
        loss = trainer.compute_loss(trainer.model, dict(batch)).item()
        grads = [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]
        got[sparse] = (loss, grads)
    assert got[True][0] == pytest.approx(got[False][0], rel=1e-5)
    for a, b in zip(got[True][1], got[False][1]):
        assert (a - b).abs().max() <= 1e-5 + 1e-4 * b.abs().max()


def test_cheap_token_rows_give_peft_s_loss_and_gradients(tiny_model_dir, data_file, tmp_path):
    """The patched trainable-token layers compute what PEFT's own forward computes."""
    import torch
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    cfg = small_config(tiny_model_dir, data_file, tmp_path / "run", eval_fraction=0.0, batch_size=4)
    resolved, tok, data = tr.load_data(cfg)
    trainer = tr.build_trainer(cfg, resolved, tok, data, tr.sft_args(cfg, tmp_path / "run", "fp32", has_eval=False),
                               "fp32", sparse_head=True)
    layers = [m for m in trainer.model.modules() if isinstance(m, TrainableTokensLayer)]
    assert len(layers) == 2 and all("forward" in vars(m) for m in layers)  # embeddings and LM head, patched
    batch = dict(next(iter(trainer.get_train_dataloader())))
    assert any(int(i) in layers[0].token_indices["default"] for i in batch["input_ids"].flatten())
    trainer.model.train()
    got = []
    for patched in (True, False):
        if not patched:
            for m in layers:
                del m.forward  # back to PEFT's
        trainer.model.zero_grad()
        torch.manual_seed(0)  # the same LoRA dropout masks in both passes
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        got.append((loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}))
    (l1, g1), (l2, g2) = got
    assert l1 == pytest.approx(l2, rel=1e-6)
    assert g1.keys() == g2.keys() and any("trainable_tokens_delta" in n for n in g1)
    for n in g1:
        assert (g1[n] - g2[n]).abs().max() <= 1e-6 + 1e-5 * g2[n].abs().max(), n


def test_keep_mask_keeps_each_element_independently_with_1_minus_p():
    import torch

    torch.manual_seed(0)
    kept = tr.keep_mask(torch.empty(1000, 1001), 0.05).float()  # odd size: the last 64-bit draw is partly used
    assert abs(1 - kept.mean().item() - 0.05) < 0.002  # 1M draws: 4.5 standard deviations
    # No pattern along rows or columns (a mask reused across positions would show here).
    assert kept.mean(0).std() < 0.02 and kept.mean(1).std() < 0.02


def _lora_pair(p: float):
    """Two identical LoRA models (random B, so the adapter is not a no-op), the first patched."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.Linear(40, 8))
    ours = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["0", "1"], lora_dropout=p,
                                           init_lora_weights=False))
    theirs = copy.deepcopy(ours)
    assert tr.cheap_lora(ours) == 2
    return ours, theirs


def test_cheap_lora_gives_peft_s_outputs_and_gradients():
    import torch

    ours, theirs = _lora_pair(0.0)
    x = torch.randn(5, 24)
    got = []
    for model in (ours, theirs):
        model.train()
        out = model(x)
        out.square().sum().backward()
        got.append((out, {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (o1, g1), (o2, g2) = got
    assert torch.allclose(o1, o2, atol=1e-6) and g1.keys() == g2.keys() and len(g1) == 4
    for n in g1:
        assert torch.allclose(g1[n], g2[n], atol=1e-5), n


def test_cheap_lora_dropout_keeps_the_expectation():
    import torch

    ours, theirs = _lora_pair(0.3)
    x = torch.randn(5, 24)
    ours.eval(), theirs.eval()
    expected = theirs(x)
    assert torch.allclose(ours(x), expected, atol=1e-6)  # no dropout outside training
    ours.train()
    first = ours.base_model.model[0]
    with torch.no_grad():
        draws = torch.stack([first(x) for _ in range(4000)])
    assert not torch.allclose(draws[0], draws[1])  # dropout is on
    # Inverted dropout: the mean over masks is the output without dropout.
    assert torch.allclose(draws.mean(0), theirs.base_model.model[0](x), atol=0.05)


def test_sparse_head_chunks_give_the_same_loss_and_gradient():
    import torch

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(37, 8, requires_grad=True)
    target = torch.randint(0, 50, (37,))
    whole, hits = tr.sparse_head_loss(head, hidden, target, chunk=100)
    (g1,) = torch.autograd.grad(whole, hidden)
    parts, hits2 = tr.sparse_head_loss(head, hidden, target, chunk=10)
    (g2,) = torch.autograd.grad(parts, hidden)
    assert torch.allclose(whole, parts, atol=1e-5) and torch.allclose(g1, g2, atol=1e-6) and hits == hits2
    one_block, hits3 = tr.sparse_head_loss(head, hidden, target, chunk=100, block_rows=37)  # as on a GPU
    (g3,) = torch.autograd.grad(one_block, hidden)
    assert torch.allclose(whole, one_block, atol=1e-5) and torch.allclose(g1, g3, atol=1e-6) and hits == hits3
    expected = torch.nn.functional.cross_entropy(head(hidden), target, reduction="sum")
    assert torch.allclose(whole, expected, atol=1e-5)


@pytest.mark.parametrize("block", [None, 1, "all"], ids=["cpu-default", "one-row", "all-rows-as-on-a-gpu"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cross_entropy_matches_torch(dtype, block):
    """Every block size, including the single block of all rows that a GPU takes, gives torch's values."""
    import torch

    torch.manual_seed(0)
    logits = (torch.randn(21, 300) * 4).to(getattr(torch, dtype)).requires_grad_()
    target = torch.randint(0, 300, (21,))
    target[:5] = logits[:5].detach().argmax(-1)  # some hits for sure
    before = logits.detach().clone()
    block_rows = logits.shape[0] if block == "all" else block
    loss, hits = tr.cross_entropy(logits, target, block_rows)
    (grad,) = torch.autograd.grad(loss * 0.5, logits)
    ref = logits.detach().float().requires_grad_()
    expected = torch.nn.functional.cross_entropy(ref, target, reduction="sum")
    (expected_grad,) = torch.autograd.grad(expected * 0.5, ref)
    assert torch.allclose(loss, expected, rtol=1e-5)
    assert grad.dtype == logits.dtype and torch.equal(logits.detach(), before)
    tol = 1e-6 if dtype == "float32" else 4e-3
    assert torch.allclose(grad.float(), expected_grad, atol=tol)
    assert int(hits) == int((logits.detach().argmax(-1) == target).sum()) >= 5
    none = torch.zeros(0, 300, requires_grad=True)  # a batch without trained positions
    empty, _ = tr.cross_entropy(none, torch.zeros(0, dtype=torch.long), None if block is None else 1)
    assert float(empty) == 0 and torch.autograd.grad(empty, none)[0].shape == (0, 300)


def test_more_bad_inputs_each_get_one_line(tiny_model_dir, run, data_file, tmp_path):
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ThinksearchError, match="--precision fp16 needs a GPU"):
            tr.pick_precision("fp16")
    with pytest.raises(ThinksearchError, match="--resume and --overwrite contradict each other"):
        tr.train(small_config(tiny_model_dir, data_file, tmp_path / "x"), resume=True, overwrite=True)
    with pytest.raises(ThinksearchError, match="carries an adapter; train from a base model"):
        tr.load_data(small_config(f"{tiny_model_dir}+{run.output_dir}", data_file, tmp_path / "y"))
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"messages": []},\n oops\n]\n', encoding="utf-8")
    with pytest.raises(ThinksearchError, match=r"broken\.json:3: invalid JSON: Expecting value"):
        tr.read_rows([broken], skip_bad=True)  # a broken array stops even with --skip-bad-rows
    broken.write_text('[\n {"messages": []}\n {"messages": []}\n]\n', encoding="utf-8")
    with pytest.raises(ThinksearchError, match=r"broken\.json:3: invalid JSON: expected ',' or ']' after an array item"):
        tr.read_rows([broken], skip_bad=True)


def test_saved_config_reads_the_train_section_and_ignores_an_unreadable_file(tmp_path):
    assert tr.saved_config(tmp_path) is None  # no run here
    saved = tmp_path / tr.CONFIG_FILE
    saved.write_text("train:\n  lora_r: 8\n", encoding="utf-8")
    assert tr.saved_config(tmp_path) == {"lora_r": 8}
    for text in ("train: [unclosed\n", "- a list\n", "train: 3\n"):
        saved.write_text(text, encoding="utf-8")
        assert tr.saved_config(tmp_path) is None, text


def test_end_process_group_tears_down_the_launchers_group(tmp_path):
    import torch.distributed as dist

    tr.end_process_group()  # no group: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    tr.end_process_group()
    assert not dist.is_initialized()
