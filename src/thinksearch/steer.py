"""Shift the search decision of a model trained with decision lines, and calibrate the shift.

A model trained with ``synth.decision_line`` opens every trace with one of
:data:`thinksearch.format.DECISION_LINES`. The lines share their first tokens and part at one
token, so the whole search decision is made there. Seeds of one recipe rank questions almost
alike at that token (AUC of fresh-data against reasoning questions 0.99 on three seeds) but draw
the line in different places: fresh-data recall went 133, 90 and 145 of 147 (README, Results).
The agent reads the log-probabilities of the lines' deciding tokens and searches when the
search lines' summed probability, shifted by ``b`` in log-odds, beats the no-search line's
(:meth:`Steering.choose`); the shift moves the line and keeps the ranking.

``thinksearch calibrate`` picks ``b`` for an adapter on pool questions it was not trained on:
the ``b`` on a grid of 0.1 that maximises fresh-data recall minus the false-search rate on
reasoning questions (Youden's J), the one nearest 0 on a tie; it may be negative, for a seed
that searches reasoning questions. It writes ``ADAPTER/decision.json``,
and the agent applies the shift from there (``--decision-shift`` overrides it):

    thinksearch calibrate runs/quickstart/adapter --data runs/quickstart/data.jsonl
"""

from __future__ import annotations

import functools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from thinksearch import format as fmt
from thinksearch.errors import ThinksearchError

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.evaluate.evalset import EvalItem

DECISION_FILE = "decision.json"
MAX_SHIFT = 4.0
RULE = "summed"
"""How margins are taken (:func:`margin`); a calibration made with another rule is made again."""
# What a turn that opens with each decision line starts with (synth writes the same: rows.decided).
OPENINGS = {k: f"{fmt.THINK_OPEN}\n{line}\n" for k, line in fmt.DECISION_LINES.items()}


def decision_tokens(tokenizer: Any, prompt: str) -> tuple[list[int], dict[str, int]]:
    """The tokens every decision line shares after ``prompt`` (prompt included), and each
    line's first own token.

    Tokenized in context, as the model sees them, so a merge across the shared part and the
    differing part cannot go unnoticed: lines whose first own tokens coincide fail loudly.
    """
    seqs = {k: tokenizer(prompt + f"{fmt.THINK_OPEN}\n" + line, add_special_tokens=False)["input_ids"]
            for k, line in fmt.DECISION_LINES.items()}
    first = next(iter(seqs.values()))
    n = 0
    while all(len(s) > n and s[n] == first[n] for s in seqs.values()):
        n += 1
    heads = {k: s[n] for k, s in seqs.items()}
    if len(set(heads.values())) != len(heads):
        raise ThinksearchError(f"the decision lines share their first differing token with this tokenizer: {heads}")
    return first[:n], heads


def margin(logp: dict[str, float]) -> float:
    """log p(searching) - log p(not searching) at the deciding token, from each line's
    log-probability there (missing: never chosen). The search lines' probabilities are summed:
    they are two ways of saying "search", and a question split between them (fresh data read as
    an unknown fact) is still one the model would search. Taking the likelier line alone ranked
    fresh-data above reasoning questions less well on both seeds probed (README, Results)."""
    search = [v for k, v in logp.items() if k != "thinking"]
    top = max(search, default=-math.inf)
    total = top + math.log(sum(math.exp(v - top) for v in search)) if top > -math.inf else -math.inf
    return total - logp.get("thinking", -math.inf)


@dataclass(frozen=True)
class Steering:
    """How the agent takes a first turn's decision: open the turn with ``prefix``, read the
    log-probabilities of the lines' deciding tokens after it, and open with the line
    :meth:`choose` picks."""

    shift: float
    prefix: str
    """The text every decision line's turn opens with, up to the deciding token."""
    tokens: dict[str, int]
    """Each line's deciding token."""
    opening_tokens: int
    """Tokens of the longest line with its tag, counted against the turn's limit."""

    def choose(self, logp: dict[int, float], temperature: float = 0.0, rng: random.Random | None = None) -> str:
        """The whole decision line to open with ('' when no line's token was reported), from the
        deciding tokens' log-probabilities: greedy, the search lines when together (:func:`margin`)
        they beat the no-search line after the shift, then the likelier of them; with a
        temperature, a line drawn with the shift on the search lines' logits."""
        lines = {k: logp[t] for k, t in self.tokens.items() if t in logp}
        if not lines:
            return ""
        if temperature > 0:
            kinds, top = list(lines), max(lines.values())
            weights = [math.exp((lines[k] + (self.shift if k != "thinking" else 0.0) - top) / temperature) for k in kinds]
            return OPENINGS[(rng or random).choices(kinds, weights)[0]]
        if margin(lines) + self.shift <= 0:
            return OPENINGS["thinking"]
        return OPENINGS[max((k for k in lines if k != "thinking"), key=lines.__getitem__)]


@functools.lru_cache(maxsize=8)
def steering(tokenizer: Any, shift: float) -> Steering:
    """The steering of ``shift`` for a model with this tokenizer's chat template (kept, since
    the server builds an agent per request)."""
    prompt = fmt.render(tokenizer, [{"role": "user", "content": "？"}], add_generation_prompt=True)
    shared, heads = decision_tokens(tokenizer, prompt)
    n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    prefix = tokenizer.decode(shared[n:])
    texts = {k: tokenizer.decode([t]) for k, t in heads.items()}
    # The engines hand back text: the prefix must tokenize as in training, and each deciding
    # token must decode to text of its own (not a piece of a character).
    if tokenizer(prompt + prefix, add_special_tokens=False)["input_ids"] != shared \
            or len(set(texts.values())) != len(texts) or any(not t or "\ufffd" in t for t in texts.values()):
        raise ThinksearchError(f"this tokenizer splits the decision lines where a shift cannot act on them: {texts}")
    longest = max(len(tokenizer(opening, add_special_tokens=False)["input_ids"]) for opening in OPENINGS.values())
    return Steering(shift, prefix, heads, longest)


def applied_shift(asked: float | None, adapter: str | Path | None) -> float | None:
    """The shift the agent takes the decision with: ``asked`` (0: none, the model's own first
    token), else the one calibrated beside ``adapter``, 0 included; None: no steering."""
    if asked is not None:
        return float(asked) or None
    return saved_shift(adapter)


def saved_shift(adapter: str | Path | None) -> float | None:
    """The shift ``thinksearch calibrate`` wrote beside an adapter; None if there is none."""
    if adapter is None:
        return None
    path = Path(adapter).expanduser() / DECISION_FILE
    if not path.is_file():
        return None
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["shift"])
    except (ValueError, KeyError, TypeError) as e:
        raise ThinksearchError(f"{path} is not a calibration file ({e.__class__.__name__}: {e}); rerun thinksearch calibrate") from None


# -- calibration

def margins(model: Any, tokenizer: Any, items: Sequence["EvalItem"], batch_size: int = 8) -> list[dict[str, Any]]:
    """Per question, one forward pass: log-probabilities of each line's deciding token,
    its :func:`margin`, and whether the top token is a deciding token at all."""
    from thinksearch.generation import next_logprobs

    sequences: list[list[int]] = []
    heads: dict[str, int] | None = None
    for it in items:
        prompt = fmt.render(tokenizer, fmt.build_messages(it.question, system=it.system), add_generation_prompt=True)
        ids, h = decision_tokens(tokenizer, prompt)
        if heads is not None and h != heads:
            raise ThinksearchError(f"the decision lines tokenize differently after question {it.id}")
        heads = h
        sequences.append(ids)
    out: list[dict[str, Any]] = []
    for row in next_logprobs(model, tokenizer.pad_token_id, sequences, batch_size):
        lines = {k: round(float(row[t]), 4) for k, t in (heads or {}).items()}
        out.append({"logp": lines, "margin": round(margin(lines), 4), "top_is_a_line": int(row.argmax()) in (heads or {}).values(),
                    "top_p": round(math.exp(float(row.max())), 4)})
    return out


def searched(scored: Sequence[tuple[str | None, float]], shift: float) -> dict[str, tuple[int, int]]:
    """Per side of the policy: (questions whose shifted margin favours a search line, questions)."""
    out = {k: [0, 0] for k in ("fresh_data", "reasoning", "knowledge")}
    for kind, margin in scored:
        if kind in out:
            out[kind][1] += 1
            out[kind][0] += margin + shift > 0
    return {k: (s, n) for k, (s, n) in out.items()}


def best_shift(scored: Sequence[tuple[str | None, float]], max_shift: float = MAX_SHIFT) -> float:
    """The shift in [-max_shift, max_shift] (grid 0.1) with the highest fresh-data recall minus
    reasoning false-search rate, the one nearest 0 on a tie: a seed that searches too little is
    shifted up, one that searches reasoning questions is shifted down."""
    c = searched(scored, 0.0)
    if not c["fresh_data"][1] or not c["reasoning"][1]:
        raise ThinksearchError("calibrating the decision shift needs fresh-data and reasoning questions; "
                               f"got {c['fresh_data'][1]} and {c['reasoning'][1]}")
    steps = int(round(max_shift * 10))
    best, best_j = 0.0, None
    for i in sorted(range(-steps, steps + 1), key=abs):  # nearest 0 first, so it wins ties
        c = searched(scored, i / 10)
        (fs, fn), (rs, rn) = c["fresh_data"], c["reasoning"]
        j = fs / fn - rs / rn
        if best_j is None or j > best_j + 1e-12:
            best, best_j = i / 10, j
    return best


def calibrated(adapter: str | Path, per_kind: int) -> dict[str, Any] | None:
    """The calibration already beside ``adapter`` when it was made for these weights with
    ``per_kind`` questions a side; else None."""
    from thinksearch.files import read_json
    from thinksearch.gguf_cache import adapter_fingerprint

    record = read_json(Path(adapter) / DECISION_FILE)
    if isinstance(record, dict) and record.get("adapter_fingerprint") == adapter_fingerprint(adapter) \
            and record.get("per_kind") == per_kind and record.get("rule") == RULE and "shift" in record:
        return record
    return None


def has_decision_lines(data: str | Path) -> bool:
    """Whether any training row's assistant turn opens with a decision line."""
    from thinksearch.files import read_items

    openings = tuple(OPENINGS.values())
    return any(str(m.get("content") or "").startswith(openings)
               for _, row in read_items(data, "training data") if isinstance(row, dict)
               for m in row.get("messages", []) if m.get("role") == "assistant")


def describe(record: dict[str, Any]) -> str:
    """The shift and what it does on the calibration questions, in a few words."""
    def rate(side: str, key: str) -> str:
        c = record[side][key]
        return f"{c['k']}/{c['n']}"

    return (f"{record['shift']:+g}: fresh-data searched {rate('unshifted', 'fresh_data')} → {rate('shifted', 'fresh_data')}, "
            f"reasoning {rate('unshifted', 'reasoning')} → {rate('shifted', 'reasoning')} (held-out pool questions)")


def calibration_items(pools: Sequence[str | Path], trained_on: str | Path | Sequence[str | Path] | None,
                      per_kind: int, seed: int = 0) -> list["EvalItem"]:
    """Up to ``per_kind`` fresh-data and ``per_kind`` reasoning questions from the pools, none of
    them a question of the training rows. Knowledge questions are left out: the shift is chosen
    on the two sides whose answer the policy fixes."""
    from thinksearch import questions as qs
    from thinksearch.evaluate.decision import policy_kind
    from thinksearch.evaluate.evalset import load_eval_set
    from thinksearch.files import read_items

    seen: set[str] = set()
    files = [] if trained_on is None else [trained_on] if isinstance(trained_on, (str, Path)) else list(trained_on)
    for f in files:
        for _, row in read_items(f, "training data"):
            user = next((m.get("content") for m in row.get("messages", []) if m.get("role") == "user"), None)
            if user:
                seen.add(qs.key(str(user)))
    items = [it for p in pools for it in load_eval_set(p).items if qs.key(it.question) not in seen]
    random.Random(seed).shuffle(items)
    picked, taken = [], {"fresh_data": 0, "reasoning": 0}
    for it in items:
        kind = policy_kind(it.type, it.category)
        if kind in taken and taken[kind] < per_kind:
            taken[kind] += 1
            picked.append(it)
    return picked


def calibrate(adapter: str | Path, model: str, items: Sequence["EvalItem"], per_kind: int | None = None,
              batch_size: int = 8, max_shift: float = MAX_SHIFT, note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Probe ``adapter`` (on ``model``) at the decision token on ``items`` (drawn ``per_kind`` a
    side, :func:`calibration_items`), pick the shift, and write it with its counts to
    ``adapter/decision.json``; the written record."""
    from thinksearch import models
    from thinksearch.evaluate.answers import proportion
    from thinksearch.evaluate.decision import policy_kind
    from thinksearch.files import write_json_atomic
    from thinksearch.gguf_cache import adapter_fingerprint

    if not items:
        raise ThinksearchError("no calibration questions: the pools hold none the adapter was not trained on")
    merged, tokenizer = models.load(model, str(adapter))  # the adapter folded in, eval mode
    if note:
        note(f"probing {len(items)} held-out pool questions at the decision token")
    probes = margins(merged, tokenizer, items, batch_size)
    scored = [(policy_kind(it.type, it.category), p["margin"]) for it, p in zip(items, probes)]
    shift = best_shift(scored, max_shift)
    record = {"shift": shift, "rule": RULE, "model": model, "adapter_fingerprint": adapter_fingerprint(adapter), "questions": len(items),
              "per_kind": per_kind,
              "off_path": sum(not p["top_is_a_line"] for p in probes),
              "unshifted": {k: proportion(*c) for k, c in searched(scored, 0.0).items() if c[1]},
              "shifted": {k: proportion(*c) for k, c in searched(scored, shift).items() if c[1]},
              "margins": [{"id": it.id, "kind": k, "margin": m} for it, (k, m) in zip(items, scored)]}
    write_json_atomic(Path(adapter) / DECISION_FILE, record)
    return record
