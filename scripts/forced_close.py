"""What would a tuned model decide if its thinking were closed for it? (issue 20, undecided answers)

An answer is undecided when the trace is still going at the eval's token limit. One fix tried
elsewhere is a thinking budget: at the limit, append ``</thinking>`` and let the model go on.
This script measures what that fix would do, without a new evaluation: it takes a finished
evaluation's undecided first turns, appends ``\\n</thinking>\\n`` to each and lets the same model
(the run's ``model.gguf``, llama.cpp, greedy) write ``--max-tokens`` more. It counts, per kind of
question, how many then search, and how many of the rest answer right (the eval's scorer).

    python scripts/forced_close.py runs/seeds/kd/seed42 --out scripts/results/forced_close_kd.json

The run directory needs ``eval/outputs/tuned.jsonl``, ``model.gguf`` and ``adapter`` (its
tokenizer renders the prompt, as the evaluation did). About 5 minutes on 2 idle cores for 50
undecided answers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SLOTS = 8


def undecided(records: list[dict]) -> list[dict]:
    """The records the eval counts undecided (:func:`thinksearch.evaluate.decision.policy_metrics`)."""
    from thinksearch.evaluate.answers import answer_flags

    return [r for r in records if not (f := answer_flags(r))["searched"] and not f["has_final_answer"]]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a thinksearch run directory with eval/outputs/tuned.jsonl and model.gguf")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="the base the adapter was trained on")
    ap.add_argument("--max-tokens", type=int, default=96, help="new tokens after the forced </thinking>")
    ap.add_argument("--out", type=Path, required=True, help="JSON path")
    args = ap.parse_args(argv)

    import openai

    from thinksearch import format as fmt
    from thinksearch import models
    from thinksearch.agent import build_messages
    from thinksearch.engines.llamacpp import start_server
    from thinksearch.evaluate.answers import answer_flags
    from thinksearch.evaluate.decision import policy_kind
    from thinksearch.evaluate.metrics import question_flags

    records = [json.loads(line) for line in (args.run_dir / "eval" / "outputs" / "tuned.jsonl").open(encoding="utf-8")]
    todo = undecided(records)
    tok = models.load_tokenizer(models.resolve(args.model, str(args.run_dir / "adapter"), prepare_alias=False))
    server = start_server(args.run_dir / "model.gguf", None, 2048, SLOTS, True)
    client = openai.OpenAI(base_url=server.listening_address + "/v1", api_key="local")

    def go_on(r: dict) -> str:
        prompt = fmt.render(tok, build_messages(r["question"]), add_generation_prompt=True)
        prompt += r["output"].rstrip() + "\n</thinking>\n"
        return client.completions.create(model="local", prompt=prompt, max_tokens=args.max_tokens, temperature=0).choices[0].text

    with ThreadPoolExecutor(SLOTS) as ex:
        after = list(ex.map(go_on, todo))
    rows, counts = [], Counter()
    for r, text in zip(todo, after):
        # An uncategorised thinking question stays with reasoning here, as this script always counted it.
        kind = policy_kind(r["type"], r["category"]) or "reasoning"
        # Scored as the eval scores a one-turn record: the turn's own flags, then its final answer.
        output = r["output"].rstrip() + "\n</thinking>\n" + text
        f = answer_flags({**r, "agent": None, "output": output, "flags": question_flags(r["type"], output)})
        searched, right = f["searched"], bool(f["correct"]) and not f["searched"]
        counts[(kind, "searched" if searched else "answered right" if right else "answered, not right")] += 1
        rows.append({"id": r["id"], "kind": kind, "question": r["question"], "trace_tail": r["output"][-120:],
                     "after": text, "searched": searched, "right": right})
    result = {
        "run_dir": str(args.run_dir), "undecided": len(todo), "of": len(records), "max_tokens": args.max_tokens,
        "counts": {f"{k} {v}": n for (k, v), n in sorted(counts.items())}, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result["counts"], ensure_ascii=False, indent=1))
    return result


if __name__ == "__main__":
    main()
