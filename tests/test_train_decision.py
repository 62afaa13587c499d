"""The decision weight (train.decision_weight): which tokens carry the search decision, and the weighted loss."""

from __future__ import annotations

import math

import pytest

from test_train import _token_bytes, search_row, small_config, thinking_row, write_jsonl
from thinksearch import train as tr
from thinksearch.config import TrainConfig
from thinksearch.errors import ConfigError

# ----------------------------------------------------------------------------- the positions


class PiecesTokenizer:
    """A tokenizer whose ids are indices into a list of pieces: it tokenizes exactly as it is told.

    Lets a test give the merges of Qwen2.5's tokenizer (``>\\n\\n`` in one token), which the
    tiny test tokenizer does not make.
    """

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def decode(self, ids: list[int], **_: object) -> str:
        return "".join(self.pieces[i] for i in ids)


def _picked(pieces: list[str], opening: int) -> list[str]:
    tok = PiecesTokenizer(pieces)
    return [pieces[i] for i in tr.decision_positions(tok, list(range(len(pieces))), opening)]


def test_qwen_style_merges_weight_the_tag_token_that_carries_the_newlines():
    # As Qwen2.5 tokenizes the rows (checked on the real tokenizer): the tag's last token holds
    # the newlines after it, ">\n" before a call and ">\n\n" before an answer.
    search = ["<th", "inking", ">\n", "离", "岸", "人民币", "报价", "每", "分", "。\n", "</", "thinking", ">\n",
              "<tool_call>", "\n", '{"', "}\n", "</tool_call>", "<|im_end|>"]
    assert _picked(search, 4) == ["离", "岸", "人民币", "报价", ">\n", "<tool_call>"]
    answer = ["<th", "inking", ">\n", "温室", "效应", "\n", "</", "thinking", ">\n\n", "温室", "效应", "<|im_end|>"]
    # A trace shorter than the opening: it stops before </thinking>.
    assert _picked(answer, 8) == ["温室", "效应", "\n", ">\n\n", "温室"]
    assert _picked(answer, 0) == [">\n\n", "温室"]


def test_whitespace_tokens_are_passed_over_to_the_first_token_that_decides():
    pieces = ["<thinking>", "\n", "需要", "搜索", "\n", "</thinking>", "\n", "\n", "答", "案", "<|im_end|>"]
    assert _picked(pieces, 1) == ["需要", "\n", "\n", "答"]


def test_turns_without_a_closed_trace():
    # Never closed (cut short): the opening only.
    assert _picked(["<th", "inking", ">\n", "设", "边", "长"], 2) == ["设", "边"]
    # Not a trace (the answer after the search results): nothing.
    assert _picked(["根据", "搜索", "结果", "<|im_end|>"], 8) == []
    # Closed and nothing after it but the end of the turn: ending the turn is the decision.
    assert _picked(["<thinking>", "想", "</thinking>", "<|im_end|>"], 1) == ["想", "<|im_end|>"]


def test_a_token_cut_inside_a_character_is_still_found():
    # Byte-level tokens may split a character; the prefix of such a cut decodes to U+FFFD.
    class Bytes(PiecesTokenizer):
        def decode(self, ids: list[int], **_: object) -> str:
            return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace")

    pieces = [b"<thinking>\n", "需".encode()[:2], "需要".encode()[2:], b"\n</", b"thinking>", b"\n\n",
              "答".encode()[:1], "答".encode()[1:]]
    got = tr.decision_positions(Bytes(pieces), list(range(len(pieces))), 1)
    assert got == [1, 5, 6]  # the first byte piece of 需; after the tag "\n\n" and the first piece of 答


@pytest.mark.parametrize("row", [search_row(0), thinking_row(0)], ids=["search", "thinking"])
def test_the_weighted_tokens_of_a_rendered_row(tiny_tokenizer, row):
    """On a row rendered through the chat template: the trace's first tokens, and <tool_call> or the answer."""
    enc = tr.encode(tiny_tokenizer, row["messages"], decision_tokens=3)
    plain = tr.encode(tiny_tokenizer, row["messages"])
    assert (plain.input_ids, plain.assistant_masks, plain.decision_mask) == (enc.input_ids, enc.assistant_masks, [])
    pieces = _token_bytes(tiny_tokenizer, enc.input_ids)
    picked = [i for i, d in enumerate(enc.decision_mask) if d]
    assert all(enc.assistant_masks[i] for i in picked)  # only trained tokens are weighted

    first = next(m for m in row["messages"] if m["role"] == "assistant")
    trace = first["content"].split("<thinking>\n")[1].split("\n</thinking>")[0]
    opening, after = picked[:3], picked[3:]
    assert opening == list(range(opening[0], opening[0] + 3))
    assert b"".join(pieces[:opening[0]]).endswith(b"<|im_start|>assistant\n<thinking>\n")
    assert trace.encode().startswith(b"".join(pieces[i] for i in opening))
    # Then the tokens after </thinking>: blanks, and the one that decides.
    assert b"".join(pieces[:after[0]]).endswith(b"</thinking>")
    assert after == list(range(after[0], after[-1] + 1))
    assert all(not pieces[i].strip() for i in after[:-1])
    decides = pieces[after[-1]]
    if row["type"] == "search":
        assert decides == b"<tool_call>"
        # The second assistant turn answers from the results: no trace, nothing weighted.
        assert b"".join(pieces[after[-1] + 1:]).count(b"<|im_start|>assistant\n") == 1
    else:
        answer = first["content"].split("</thinking>\n\n")[1]
        assert decides.strip() and answer.encode().startswith(decides)
    assert len(picked) == 3 + len(after)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("kw, message", [
    (dict(decision_weight=0), r"--decision-weight \(decision_weight\): must be > 0, got 0"),
    (dict(decision_weight=-2.0), r"--decision-weight \(decision_weight\): must be > 0, got -2.0"),
    (dict(decision_weight=math.inf), r"--decision-weight \(decision_weight\): must be a finite number"),
    (dict(decision_tokens=-1), r"--decision-tokens \(decision_tokens\): must be >= 0, got -1"),
    (dict(decision_weight=2.0, packing=True), r"--decision-weight \(decision_weight\): cannot be used with --packing"),
])
def test_bad_decision_settings_name_the_flag(kw, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kw)


def test_defaults_train_every_token_alike():
    cfg = TrainConfig()
    assert cfg.decision_weight == 1.0 and cfg.decision_tokens == 8
    TrainConfig(decision_tokens=0, decision_weight=0.5, packing=False)  # a weight under 1 is allowed


def test_optimizer_steps_draw_rows_at_random_unless_length_grouping_is_asked_for(tmp_path):
    # Grouped by length, the long search rows and the short thinking rows fill separate steps,
    # and the seed decides which kind the last steps push the decision towards.
    assert tr.build.sft_args(TrainConfig(), tmp_path, "fp32", has_eval=False).train_sampling_strategy == "random"
    grouped = TrainConfig(group_by_length=True)
    assert tr.build.sft_args(grouped, tmp_path, "fp32", has_eval=False).train_sampling_strategy == "group_by_length"


# ----------------------------------------------------------------------------- the loss


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory):
    rows = [thinking_row(i, trace_len=1 + i % 3) if i % 2 else search_row(i) for i in range(8)]
    return write_jsonl(tmp_path_factory.mktemp("decision") / "rows.jsonl", rows)


def _trainer(tiny_model_dir, rows_file, tmp_path, **kw):
    # No LoRA dropout: two forward passes over one batch must give the same values.
    cfg = small_config(tiny_model_dir, rows_file, tmp_path / "run", eval_fraction=0.0, batch_size=4,
                       lora_dropout=0.0, **kw)
    resolved, tok, data = tr.load_data(cfg)
    trainer = tr.build_trainer(cfg, resolved, tok, data, tr.sft_args(cfg, tmp_path / "run", "fp32", has_eval=False),
                               "fp32")
    trainer.model.train()
    return trainer, data


def _loss_and_grads(trainer, batch, **kw):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(batch), **kw)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def _reference(trainer, batch, weights):
    """The weighted mean cross-entropy computed plainly: full logits, torch's per-token loss."""
    import torch
    import torch.nn.functional as F

    trainer.model.zero_grad()
    logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    target = batch["labels"][:, 1:]
    mask = target != -100
    per_token = F.cross_entropy(logits[:, :-1][mask].float(), target[mask], reduction="none")
    w = weights[:, 1:][mask].to(torch.float32)
    loss = (per_token * w).sum() / w.sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def _close(a, b, tol=1e-5):
    return all((a[n] - b[n]).abs().max() <= tol * (1 + b[n].abs().max()) for n in b) and a.keys() == b.keys()


def test_weight_one_is_the_plain_mean_exactly(tiny_model_dir, rows_file, tmp_path):
    import torch

    trainer, data = _trainer(tiny_model_dir, rows_file, tmp_path)
    assert all(e.decision_mask == [] for e in data.train)  # not even looked for
    assert "loss_weight" not in trainer.train_dataset.column_names
    batch = next(iter(trainer.get_train_dataloader()))
    assert "loss_weight" not in batch
    loss, grads = _loss_and_grads(trainer, batch)
    ref, ref_grads = _reference(trainer, batch, torch.ones_like(batch["labels"]))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6) and _close(grads, ref_grads)
    # The weighted path with every weight 1 computes the same values bit for bit.
    ones = dict(batch, loss_weight=torch.ones_like(batch["labels"], dtype=torch.float32))
    loss1, grads1 = _loss_and_grads(trainer, ones)
    assert torch.equal(loss1, loss) and all(torch.equal(grads1[n], grads[n]) for n in grads)
    n = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
    n1 = trainer._get_num_items_in_batch([ones], torch.device("cpu"))
    assert float(n) == float(n1) == int((batch["labels"][:, 1:] != -100).sum())


def test_weighted_loss_is_the_hand_computed_weighted_mean(tiny_model_dir, rows_file, tmp_path):
    import torch

    w = 4.0
    trainer, data = _trainer(tiny_model_dir, rows_file, tmp_path, decision_weight=w, decision_tokens=3)
    batch = next(iter(trainer.get_train_dataloader()))
    # Each row's weights sit beside its tokens: w on its decision tokens, 1 elsewhere, 0 on the pads.
    by_ids = {tuple(e.input_ids): e for e in data.train}
    for ids, weights, att in zip(batch["input_ids"], batch["loss_weight"], batch["attention_mask"]):
        e = by_ids[tuple(ids[att.bool()].tolist())]
        expected = [w if d else 1.0 for d in e.decision_mask] + [0.0] * int((att == 0).sum())
        assert weights.tolist() == expected and sum(e.decision_mask) >= 4
    weights = batch["loss_weight"]
    trained = batch["labels"][:, 1:] != -100
    n = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
    assert float(n) == pytest.approx(float(weights[:, 1:][trained].sum()))
    assert float(n) > int(trained.sum())  # the decision tokens count w times

    ref, ref_grads = _reference(trainer, batch, weights)
    for kw in ({}, {"num_items_in_batch": n}):  # one batch alone, and as the Trainer calls it
        loss, grads = _loss_and_grads(trainer, batch, **kw)
        assert loss.item() == pytest.approx(ref.item(), rel=1e-6) and _close(grads, ref_grads)
    plain, _ = _reference(trainer, batch, torch.ones_like(weights))
    assert abs(plain.item() - ref.item()) > 1e-4  # the weights do change the loss

    # Gradient accumulation: two micro-batches divided by the weights of both give the mean of all.
    halves = [{k: v[s] for k, v in batch.items()} for s in (slice(0, 2), slice(2, 4))]
    n_both = trainer._get_num_items_in_batch(halves, torch.device("cpu"))
    assert float(n_both) == pytest.approx(float(n))
    trainer.model.zero_grad()
    total = sum(trainer.compute_loss(trainer.model, h, num_items_in_batch=n_both) for h in halves)
    assert total.item() == pytest.approx(ref.item(), rel=1e-5)


def test_padding_free_batches_keep_the_weights_beside_their_labels(tiny_model_dir, rows_file, tmp_path):
    import torch

    trainer, data = _trainer(tiny_model_dir, rows_file, tmp_path, decision_weight=2.5, padding_free=True)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and batch["loss_weight"].shape == batch["input_ids"].shape
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
    by_ids = {tuple(e.input_ids): e for e in data.train}
    for a, b in zip(starts, starts[1:]):
        e = by_ids[tuple(batch["input_ids"][0, a:b].tolist())]
        assert batch["loss_weight"][0, a:b].tolist() == [2.5 if d else 1.0 for d in e.decision_mask]
    loss, _ = _loss_and_grads(trainer, batch)
    assert torch.isfinite(loss)


def test_a_weighted_run_trains_and_counts_its_decision_tokens(tiny_model_dir, rows_file, tmp_path):
    result = tr.train(small_config(tiny_model_dir, rows_file, tmp_path / "run", eval_fraction=0.2, max_steps=2,
                                   decision_weight=3.0, decision_tokens=4))
    m = result.metrics
    assert m["global_step"] == 2 and math.isfinite(m["last_loss"]) and m["eval_loss"] is not None
    # Four trace tokens and at least the token after </thinking> in each trained row.
    assert m["tokens"]["train_decision"] >= 5 * m["rows"]["train"]
    assert tr.saved_config(result.output_dir)["decision_weight"] == 3.0


def test_weights_need_the_sparse_head(tiny_model_dir, rows_file, tmp_path):
    cfg = small_config(tiny_model_dir, rows_file, tmp_path / "run", eval_fraction=0.0, decision_weight=2.0)
    resolved, tok, data = tr.load_data(cfg)
    args = tr.sft_args(cfg, tmp_path / "run", "fp32", has_eval=False)
    with pytest.raises(ConfigError, match=r"--decision-weight \(train.decision_weight\): needs the sparse loss head"):
        tr.build_trainer(cfg, resolved, tok, data, args, "fp32", sparse_head=False)
