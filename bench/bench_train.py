"""Benchmark: LoRA training throughput and memory, reference-style Trainer vs `thinksearch train`.

Same rows, same model, same LoRA (r=16, alpha=32, dropout 0.05, all linear projections), same
batch size, gradient accumulation and number of optimizer steps. The baseline is the reference
style: a plain transformers ``Trainer`` with every row padded to 1024 tokens and labels equal to
the input ids (loss on every token, full logits). Its precision is ``--baseline-precision``:
``fp32`` (default: a plain Trainer's own, as the reference script runs on a CPU, its fp16 flag
needing a GPU) or ``same`` (the precision ours picks, bf16 autocast on a CPU with AVX512-BF16,
which isolates what batching and the loss head save). Ours is ``thinksearch.train.train`` with
its defaults: assistant-only loss through a sparse LM head, dynamic padding over
length-grouped batches, precision picked by hardware, frozen weights stored in that precision.

Each side runs in its own subprocess so its peak resident memory (``ru_maxrss``) is its own.
Figures: real (non-pad) tokens per second of training time, and peak RSS.
The number of rows is steps x batch x accumulation, so both sides see every row exactly once.

Run as: ``python bench/bench_train.py`` (offline 0.5B model; nothing else heavy should run meanwhile)
or ``python bench/bench_train.py --quick`` (tiny in-process model, seconds).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "bench")]

PAD_TO = 1024

# Sentences the synthetic rows are built from; varied so the tokenizer sees realistic text.
_REASONING = [
    "设小正方形的边长为a，大正方形的边长为b，根据题意b²=4a²，所以b=2a。",
    "周长分别是4a和4b=8a，因此周长比为8a:4a=2:1。",
    "先把问题拆成两部分：已知条件是什么，要求的量又是什么。",
    "如果把速度记为v，时间记为t，那么路程s=vt，这是一个线性关系。",
    "注意这里的单位不一致，需要先把分钟换算成小时，再代入公式。",
    "用反证法：假设结论不成立，那么会推出与已知条件矛盾的结果。",
    "我们可以列一个方程：2x+3=11，移项得到2x=8，所以x=4。",
    "这道题的关键在于发现数列的规律：每一项都是前两项之和。",
    "考虑边界情况：当n=1时结论显然成立，再假设n=k时成立。",
    "由于概率之和必须等于1，所以剩下的那种情况的概率是1-0.3-0.45=0.25。",
    "比较两种方案的总成本：方案一是120元加每月15元，方案二是每月25元。",
    "当使用时间超过12个月时，方案一更划算；否则方案二更便宜。",
    "光在真空中的速度约为每秒30万公里，太阳光到达地球大约需要8分20秒。",
    "天空呈蓝色是因为瑞利散射：波长越短的光被散射得越强。",
    "这个说法需要检查：它混淆了相关性和因果关系。",
    "把三角形的三边代入勾股定理，3²+4²=9+16=25=5²，所以它是直角三角形。",
    "我再核对一遍计算：12×15=180，180÷4=45，结果一致。",
    "从能量守恒的角度看，动能的增加等于势能的减少。",
    "The key observation is that the function is monotonic on this interval, so the maximum is at the endpoint.",
    "Let me double-check the arithmetic before writing the final answer.",
]
_ANSWERS = [
    "周长比是2:1。因为面积比是边长比的平方，边长比为2:1，周长与边长成正比。",
    "答案是x=4。代回原方程验证：2×4+3=11，成立。",
    "使用超过12个月时选择方案一更省钱，12个月以内选择方案二。",
    "天空看起来是蓝色的，主要是因为大气分子对短波长的蓝光散射更强（瑞利散射）。",
    "这个三角形是直角三角形，直角所对的边长为5。",
    "剩下那种情况的概率是0.25，即25%。",
    "So the answer is 42: the maximum is reached at x = 6.",
]
_QUESTIONS = [
    "如果一个正方形的面积是另一个正方形面积的4倍，那么它们的周长比是多少？",
    "解方程2x+3=11，并说明每一步的理由。",
    "手机套餐：方案一办卡120元、每月15元；方案二每月25元。怎么选更划算？",
    "为什么天空是蓝色的？",
    "边长分别为3、4、5的三角形是什么三角形？",
    "一个事件有三种结果，其中两种的概率是0.3和0.45，第三种是多少？",
    "What is the maximum of f(x) = -(x-6)^2 + 42 on [0, 10]?",
]
_SEARCH_Q = [
    ("今天比特币的价格是多少？", "比特币价格 今日"),
    ("北京明天的天气怎么样？", "北京 明天 天气预报"),
    ("最新发布的iPhone是哪一款？", "最新 iPhone 发布"),
    ("今年诺贝尔物理学奖颁给了谁？", "诺贝尔物理学奖 今年 得主"),
    ("现在美元兑人民币汇率是多少？", "美元 人民币 汇率 今日"),
    ("上海地铁最近有新线路开通吗？", "上海地铁 新线路 开通"),
]
_SNIPPETS = [
    "据最新行情数据显示，该资产今日开盘后震荡上行，截至发稿时报价较前一交易日上涨约2.3%，成交量明显放大。分析人士认为短期波动仍将持续。",
    "气象台发布预报：明天白天多云转晴，最高气温18摄氏度，最低气温6摄氏度，北风三到四级，空气质量良到轻度污染。",
    "在今天凌晨举行的发布会上，公司正式推出了新一代产品，新机型搭载更新的芯片，续航提升，起售价与上一代持平。",
    "评审委员会宣布，今年的奖项授予三位科学家，以表彰他们在实验方法上的开创性工作，相关成果已被广泛应用。",
    "中国外汇交易中心公布的数据显示，今日中间价较上一交易日小幅调升，市场人士表示汇率在合理均衡水平上保持基本稳定。",
    "市交通部门表示，新线路将于本月底开通试运营，全长约30公里，设站20座，可与多条既有线路换乘。",
    "多家媒体援引知情人士的话报道，相关政策细则预计将在下个月公布，具体实施时间尚未确定。",
]


def _text(rng: random.Random, pool: list[str], lo: int, hi: int) -> str:
    """Whole sentences from ``pool``, about lo..hi characters (cut at a sentence, never mid-way)."""
    target = rng.randint(lo, hi)
    out = rng.choice(pool)
    while len(out) < target:
        nxt = rng.choice(pool)
        if len(out) + len(nxt) > hi:
            break
        out += nxt
    return out


def build_rows(n: int, seed: int = 0, scale: float = 1.0) -> list[dict]:
    """``n`` rows in the synthesized format (half thinking, half search) of realistic lengths.

    With Qwen's tokenizer the rows are about 350-1000 tokens (mean about 650), all under the
    baseline's 1024 so neither side cuts or skips any. ``scale`` shortens every text (the tiny
    test tokenizer spends about three tokens per Chinese character).
    """
    from types import SimpleNamespace

    from thinksearch import format as fmt

    def n_(x: int) -> int:
        return max(1, int(x * scale))

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if i % 2 == 0:
            q = rng.choice(_QUESTIONS)
            msgs = fmt.thinking_messages(q, _text(rng, _REASONING, n_(200), n_(800)), _text(rng, _ANSWERS, n_(40), n_(160)))
            rows.append({"id": f"t-{i}", "type": "thinking", "messages": msgs, "meta": {"bench": True}})
        else:
            q, query = rng.choice(_SEARCH_Q)
            results = [SimpleNamespace(title=f"{query} 相关报道{j}", snippet=_text(rng, _SNIPPETS, n_(60), n_(160)),
                                       url=f"https://news.example.com/{i}/{j}", date="2025-06-0%d" % (j + 1),
                                       source="新闻") for j in range(rng.randint(3, 5))]
            msgs = fmt.search_messages(q, _text(rng, _REASONING[:4], n_(20), n_(80)), query,
                                       fmt.render_results(results, n_(300), n_(1200)),
                                       "根据搜索结果，" + _text(rng, _SNIPPETS, n_(60), n_(200)) + "[1]")
            rows.append({"id": f"s-{i}", "type": "search", "messages": msgs, "meta": {"bench": True}})
    return rows


def sample_rows(path: str, n: int, tokenizer, seed: int = 0) -> list[dict]:
    """A seeded sample of ``n`` rows of a synthesized JSONL that fit the baseline's 1024 tokens."""
    from thinksearch.train import encode

    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if len(encode(tokenizer, r["messages"]).input_ids) <= PAD_TO]
    if len(rows) < n:
        raise SystemExit(f"{path}: only {len(rows)} rows fit in {PAD_TO} tokens, {n} needed")
    return random.Random(seed).sample(rows, n)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _cpu_clock():
    """A TrainerCallback measuring the process CPU time of training (robust to other load on the machine)."""
    from transformers import TrainerCallback

    class CpuClock(TrainerCallback):
        seconds = 0.0

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.process_time()

        def on_train_end(self, args, state, control, **kw):
            self.seconds = time.process_time() - self.t0

    return CpuClock()


def run_baseline(model_ref: str, rows_file: Path, batch: int, accum: int, steps: int, precision: str,
                 workdir: Path) -> dict:
    """Reference style: plain Trainer, every row padded to 1024, labels = input ids, full logits."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from thinksearch import format as fmt
    from thinksearch import models

    resolved = models.resolve(model_ref)
    tok = models.load_tokenizer(resolved)
    model = AutoModelForCausalLM.from_pretrained(resolved.path)
    rows = [json.loads(line) for line in rows_file.read_text(encoding="utf-8").splitlines()]
    texts = [fmt.render(tok, r["messages"]) for r in rows]
    enc = tok(texts, padding="max_length", max_length=PAD_TO, truncation=True, add_special_tokens=False)
    enc["labels"] = [list(ids) for ids in enc["input_ids"]]
    real = sum(sum(m) for m in enc["attention_mask"])
    ds = Dataset.from_dict(dict(enc))
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=str(workdir / "baseline"), per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
        max_steps=steps, learning_rate=2e-4, logging_steps=1, save_strategy="no", report_to="none",
        bf16=precision == "bf16", use_cpu=not torch.cuda.is_available(), disable_tqdm=True, seed=0,
    )
    clock = _cpu_clock()
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[clock])
    out = trainer.train()
    seconds = float(out.metrics["train_runtime"])
    return {"real_tokens": real, "padded_tokens": PAD_TO * len(rows), "train_seconds": round(seconds, 2),
            "real_tokens_per_s": round(real / seconds, 2), "cpu_seconds": round(clock.seconds, 2),
            "real_tokens_per_cpu_s": round(real / clock.seconds, 2), "peak_rss_mib": round(_peak_rss_mib(), 1),
            "final_loss": out.training_loss, "steps": trainer.state.global_step, "rows": len(rows)}


def run_ours(model_ref: str, rows_file: Path, batch: int, accum: int, steps: int, precision: str,
             workdir: Path) -> dict:
    from thinksearch.config import TrainConfig
    from thinksearch.train import train

    cfg = TrainConfig(model=model_ref, data=[str(rows_file)], output_dir=str(workdir / "ours"), batch_size=batch,
                      grad_accum=accum, max_steps=steps, eval_fraction=0.0, save_steps=10_000, logging_steps=1,
                      precision=precision, max_length=PAD_TO,
                      # Length grouping is one of the speed features this bench measures (its saved
                      # results have it); train's default turned it off for the search decision's sake.
                      group_by_length=True)
    clock = _cpu_clock()
    m = train(cfg, overwrite=True, callbacks=[clock]).metrics
    real = m["tokens"]["processed"]
    seconds = m["train_seconds"]
    return {"real_tokens": real, "assistant_tokens": m["tokens"]["train_assistant"],
            "train_seconds": round(seconds, 2), "real_tokens_per_s": round(real / seconds, 2),
            "cpu_seconds": round(clock.seconds, 2), "real_tokens_per_cpu_s": round(real / clock.seconds, 2),
            "peak_rss_mib": round(_peak_rss_mib(), 1), "final_loss": m["train_loss"], "steps": m["global_step"],
            "rows": m["rows"]["train"], "precision": m["precision"]}


def _child(args: argparse.Namespace) -> None:
    fn = run_baseline if args.side == "baseline" else run_ours
    result = fn(args.model, Path(args.rows_file), args.batch, args.accum, args.steps, args.precision,
                Path(args.workdir))
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny in-process model (checks the script in seconds)")
    ap.add_argument("--model", default=None, help="model reference (default: the offline 0.5B alias)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default 3; quick: 8)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--data", help="take the rows from this synthesized JSONL (e.g. runs/quickstart/data.jsonl, "
                                   "a seeded sample) instead of building rows of fixed realistic lengths")
    ap.add_argument("--baseline-precision", choices=["fp32", "same"], default="fp32",
                    help="fp32: a plain Trainer's default; same: the precision ours picks")
    ap.add_argument("--precision", help=argparse.SUPPRESS)
    ap.add_argument("--side", choices=["baseline", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--rows-file", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        _child(args)
        return

    from common import write_result

    from thinksearch import models
    from thinksearch.train import encode, pick_precision

    steps = args.steps or (8 if args.quick else 3)
    n_rows = steps * args.batch * args.accum
    ours_precision = pick_precision("auto")
    base_precision = ours_precision if args.baseline_precision == "same" else "fp32"
    with tempfile.TemporaryDirectory(prefix="bench_train.") as tmp:
        work = Path(tmp)
        if args.quick:
            from tiny import save_tiny

            model_ref = str(save_tiny(work / "tiny"))
        else:
            model_ref = args.model or models.DEFAULT_ALIAS
            models.resolve(model_ref)  # prepares an alias once, outside the timed children
        tok = models.load_tokenizer(models.resolve(model_ref))
        if args.data:
            rows = sample_rows(args.data, n_rows, tok)
        else:
            rows = build_rows(n_rows, scale=0.3 if args.quick else 1.0)
        lengths = [len(encode(tok, r["messages"]).input_ids) for r in rows]
        if max(lengths) > PAD_TO:  # the baseline would cut them and ours skip them: not the same work
            raise SystemExit(f"bench rows must fit in {PAD_TO} tokens; longest is {max(lengths)}")
        rows_file = work / "rows.jsonl"
        rows_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        results = {}
        for side in ("baseline", "ours"):
            out = work / f"{side}.json"
            cmd = [sys.executable, __file__, "--side", side, "--model", model_ref, "--rows-file", str(rows_file),
                   "--batch", str(args.batch), "--accum", str(args.accum), "--steps", str(steps),
                   "--precision", base_precision if side == "baseline" else ours_precision,
                   "--workdir", str(work), "--result", str(out)]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            results[side] = {**json.loads(out.read_text()), "wall_seconds": round(time.perf_counter() - t0, 1)}
            print(f"{side}: {results[side]}", file=sys.stderr)
    base, ours = results["baseline"], results["ours"]
    speed = ours["real_tokens_per_s"] / base["real_tokens_per_s"]
    cpu_speed = ours["real_tokens_per_cpu_s"] / base["real_tokens_per_cpu_s"]
    memory = base["peak_rss_mib"] / ours["peak_rss_mib"]
    name = ("train_quick" if args.quick else "train") + ("_synth_rows" if args.data else "") + (
        "_same_precision" if args.baseline_precision == "same" else "")
    write_result(
        name,
        baseline={**base, "precision": base_precision,
                  "setup": f"transformers Trainer, rows padded to {PAD_TO}, labels = input ids"},
        ours={**ours, "setup": "thinksearch.train defaults: assistant-only loss (sparse LM head), dynamic padding, "
                               "length-grouped batches"},
        ratio=speed, target=3.0,
        notes=("ratio = ours/baseline real (non-pad) tokens per second of training wall time; target 3x "
               "(cpu_time_ratio: the same per second of process CPU time, less sensitive to other load). "
               "memory_ratio = baseline/ours peak RSS; target >= 1/0.7 = 1.43 (ours <= 0.7x baseline). "
               "Shared, noisy machine: absolute figures vary, the ratios are what counts."),
        extra={"model": "tiny (tests/tiny.py)" if args.quick else model_ref, "rows": n_rows, "optimizer_steps": steps,
               "batch": args.batch, "grad_accum": args.accum,
               "rows_source": args.data or "build_rows() (fixed realistic lengths)",
               "cpu_time_ratio": round(cpu_speed, 3),
               "memory_ratio": round(memory, 3), "memory_target": round(1 / 0.7, 3),
               "meets_memory_target": ours["peak_rss_mib"] <= 0.7 * base["peak_rss_mib"],
               "row_tokens": {"mean": round(sum(lengths) / n_rows, 1), "min": min(lengths), "max": max(lengths)}},
    )
    print(f"\nreal tokens/s: baseline {base['real_tokens_per_s']}, ours {ours['real_tokens_per_s']} "
          f"-> {speed:.2f}x (target 3x); per CPU second: {cpu_speed:.2f}x")
    print(f"peak RSS MiB: baseline {base['peak_rss_mib']}, ours {ours['peak_rss_mib']} "
          f"-> ours = {ours['peak_rss_mib'] / base['peak_rss_mib']:.2f}x baseline (target <= 0.7x)")


if __name__ == "__main__":
    main()
