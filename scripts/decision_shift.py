"""What a fixed shift of the search decision, chosen on held-out pool questions, would do (issue 20).

``scripts/decision_probe.py`` gives, per question, ``margin`` = log p(a search line) - log p(the
no-search line) at the decision token. Seeds of one recipe rank the questions almost alike (AUC
fresh-data against reasoning about 0.99) but draw the line in different places, so recall moves
from seed to seed while false searches stay near zero. Adding a shift ``b`` to the margin moves
the line without changing the ranking.

The shift is chosen per adapter on a calibration probe (pool questions the adapter was not
trained on, never the eval set): the ``b`` on a grid of 0.1 from minus ``--max-shift`` to ``--max-shift``
that maximises fresh-data recall minus the reasoning questions' false-search rate (Youden's J),
the nearest 0 on a tie (:func:`thinksearch.steer.best_shift`; the results of 2026-12-07 were
chosen from 0 up). It is then applied, unchanged, to the evaluation probe of the same adapter.
This is what the probe says the decision would be; it changes no model and runs nothing.

    python scripts/decision_probe.py runs/v/s2 --data pool_heldout.jsonl --out pool.json
    python scripts/decision_probe.py runs/v/s2 --out eval.json
    python scripts/decision_shift.py --calibration pool.json --pool pool_heldout.jsonl \
        --target eval.json --out shift.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

KINDS = ("fresh_data", "reasoning", "knowledge")


def kinds_of(data: Path) -> dict[str, str | None]:
    """Each question id of an eval-format file, and its side of the search policy."""
    from thinksearch.evaluate.decision import policy_kind
    from thinksearch.evaluate.evalset import load_eval_set

    return {it.id: policy_kind(it.type, it.category) for it in load_eval_set(data).items}


def counts(questions: list[dict], kinds: dict[str, str | None], shift: float) -> dict[str, tuple[int, int]]:
    """Per kind: (questions whose shifted margin favours a search line, questions)."""
    from thinksearch.steer import searched

    return searched([(kinds.get(q["id"]), q["margin"]) for q in questions], shift)


def best_shift(questions: list[dict], kinds: dict[str, str | None], max_shift: float = 4.0) -> float:
    """The shift thinksearch calibrate would pick from this probe (:func:`thinksearch.steer.best_shift`)."""
    from thinksearch import steer
    from thinksearch.errors import ThinksearchError

    try:
        return steer.best_shift([(kinds.get(q["id"]), q["margin"]) for q in questions], max_shift)
    except ThinksearchError as e:
        raise SystemExit(str(e)) from None


def figures(c: dict[str, tuple[int, int]]) -> dict[str, dict]:
    from thinksearch.evaluate.answers import proportion

    return {k: proportion(*c[k]) for k in KINDS}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", type=Path, required=True, help="decision_probe.py JSON on held-out pool questions")
    ap.add_argument("--pool", type=Path, required=True, help="the eval-format file that calibration probe ran on")
    ap.add_argument("--target", type=Path, required=True, help="decision_probe.py JSON on the eval set, same adapters")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "eval" / "test.jsonl", help="the eval set the target ran on")
    ap.add_argument("--max-shift", type=float, default=4.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    pool_kinds, eval_kinds = kinds_of(args.pool), kinds_of(args.data)
    if set(pool_kinds) & set(eval_kinds):
        raise SystemExit(f"{args.pool} shares question ids with {args.data}: calibrate on questions the eval does not hold")
    calibration = {a["adapter"]: a["questions"] for a in json.loads(args.calibration.read_text())["adapters"]}
    result = {"calibration": str(args.calibration), "target": str(args.target), "adapters": []}
    for a in json.loads(args.target.read_text())["adapters"]:
        if a["adapter"] not in calibration:
            raise SystemExit(f"{args.calibration} has no probe of {a['adapter']}")
        b = best_shift(calibration[a["adapter"]], pool_kinds, args.max_shift)
        entry = {"adapter": a["adapter"], "shift": b,
                 "pool": {"unshifted": figures(counts(calibration[a["adapter"]], pool_kinds, 0.0)),
                          "shifted": figures(counts(calibration[a["adapter"]], pool_kinds, b))},
                 "eval": {"unshifted": figures(counts(a["questions"], eval_kinds, 0.0)),
                          "shifted": figures(counts(a["questions"], eval_kinds, b))}}
        result["adapters"].append(entry)
        line = {side: {k: f"{v['k']}/{v['n']}" for k, v in entry["eval"][side].items()} for side in ("unshifted", "shifted")}
        print(json.dumps({"adapter": a["adapter"], "shift": b, "eval": line}, ensure_ascii=False), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
