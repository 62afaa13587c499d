"""Synthesis throughput: batching the local teacher, and concurrency against a server.

(a) ``local``: the offline 0.5B model as teacher. The same thinking samples (stage 1 analysis,
    then stage 2 answer, the pipeline's own prompts rendered through the chat template) are
    generated once one question at a time and once in batches of 8, same token limits, greedy.
    Stage 2's prompts are built from one stage-1 pass so both modes get identical inputs.
    Target: batched ≥ 3x samples per minute.
(b) ``openai``: the same requests through the ``openai`` teacher, 8 in flight vs one at a
    time, against an OpenAI-compatible server given by ``--base-url`` (vLLM, llama.cpp ...)
    or, without it, ``thinksearch serve`` started here on the same model, which batches
    concurrent requests. Target: ≥ 3x when the server batches. ``--quick`` runs it
    against the scripted test server with a fixed per-request delay instead: a simulation
    of a batching server, labelled as such in the JSON.

Results: ``bench/results/synth_local.json`` and ``bench/results/synth_openai.json``
(``--quick`` writes under ``bench/results/quick/``, not committed).

Run as: ``python bench/bench_synth.py --part local``, ``python bench/bench_synth.py --part openai``
(starts ``thinksearch serve``) or ``... --part openai --base-url http://127.0.0.1:8000/v1 --served-model NAME``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, write_result  # noqa: E402

QUESTIONS = [
    "如果一个正方形的面积是另一个正方形面积的4倍，那么它们的周长比是多少？",
    "为什么冬天窗户内侧会结霜？",
    "一个数的3倍加5等于20，这个数是多少？",
    "递归函数为什么需要终止条件？",
    "鸡兔同笼共10个头28只脚，鸡和兔各有几只？",
    "二分查找的时间复杂度是多少，为什么？",
    "水的沸点为什么在高原上会变低？",
    "进程和线程有什么区别？",
    "如何判断一个年份是不是闰年？",
    "从1加到100的和是多少？",
    "为什么铁会生锈而金不会？",
    "快速排序在最坏情况下为什么会退化？",
    "一列火车长200米，以每秒20米的速度通过一座1000米的桥需要多久？",
    "复利和单利有什么区别？",
    "为什么飞机能在空中飞行？",
    "TCP三次握手为什么不是两次？",
]


def stage_requests(teacher, questions, analysis_tokens, answer_tokens):
    """Stage-1 requests, and stage-2 requests built from one stage-1 pass (shared by both modes)."""
    from thinksearch import synth
    from thinksearch.teacher import TeacherRequest

    first = [TeacherRequest(synth.analysis_messages(q), max_tokens=analysis_tokens, temperature=0.0) for q in questions]
    traces = teacher.generate(first)
    second = [TeacherRequest(synth.answer_messages(q, t.reasoning or t.text or "（空）"), max_tokens=answer_tokens, temperature=0.0)
              for q, t in zip(questions, traces)]
    return first, second


def timed(teacher, first, second, one_at_a_time: bool):
    t0 = time.perf_counter()
    if one_at_a_time:
        replies = [teacher.generate([r])[0] for r in first + second]
    else:
        replies = teacher.generate(first) + teacher.generate(second)
    seconds = time.perf_counter() - t0
    tokens = sum(r.completion_tokens for r in replies)
    return {"seconds": round(seconds, 2), "samples": len(first), "samples_per_minute": round(60 * len(first) / seconds, 3),
            "completion_tokens": tokens, "tokens_per_s": round(tokens / seconds, 2),
            "finish_length": sum(r.finish_reason == "length" for r in replies)}


def bench_local(args) -> None:
    from thinksearch.config import TeacherConfig
    from thinksearch.teacher import LocalTeacher

    questions = QUESTIONS[: args.questions]
    if args.quick:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from tiny import save_tiny  # the tests' in-process tiny model: checks the script, measures nothing real
        import tempfile

        model_ref = str(save_tiny(Path(tempfile.mkdtemp()) / "tiny"))
    else:
        model_ref = args.model
    t0 = time.perf_counter()
    batched_teacher = LocalTeacher(TeacherConfig(model=model_ref, batch_size=args.batch_size, dtype=args.dtype))
    load_s = time.perf_counter() - t0
    single_teacher = LocalTeacher(TeacherConfig(model=model_ref, batch_size=1, dtype=args.dtype),
                                  model=batched_teacher.model, tokenizer=batched_teacher.tokenizer)
    first, second = stage_requests(batched_teacher, questions, args.analysis_tokens, args.answer_tokens)
    # Alternate the modes and keep each one's best run: on a shared machine another job can
    # slow a single run several-fold (two processes' OpenMP threads fighting over 2 cores).
    runs: dict[str, list[dict]] = {"baseline": [], "ours": []}
    for _ in range(args.repeats):
        runs["baseline"].append(timed(single_teacher, first, second, one_at_a_time=True))
        print("one at a time:", runs["baseline"][-1], flush=True)
        runs["ours"].append(timed(batched_teacher, first, second, one_at_a_time=False))
        print(f"batch {args.batch_size}:", runs["ours"][-1], flush=True)
    baseline = max(runs["baseline"], key=lambda r: r["samples_per_minute"])
    ours = max(runs["ours"], key=lambda r: r["samples_per_minute"])
    ratio = ours["samples_per_minute"] / baseline["samples_per_minute"]
    out = RESULTS / "quick" if args.quick else RESULTS
    write_result(
        "synth_local", {"mode": "one question at a time", **baseline}, {"mode": f"batches of {args.batch_size}", **ours},
        ratio, 3.0, out_dir=out,
        notes=("QUICK CHECK with the tiny random test model: not a measurement. " if args.quick else "")
        + "A sample = stage 1 (analysis) + stage 2 (answer) for one thinking question, the pipeline's prompts, greedy; "
        f"same requests and token limits in both modes; modes alternated {args.repeats}x, best run of each kept "
        "(all runs under 'runs'). Shared machine: the ratio is what counts.",
        extra={"teacher": args.model if not args.quick else "tiny test model", "dtype": args.dtype,
               "questions": len(questions), "max_tokens": {"analysis": args.analysis_tokens, "answer": args.answer_tokens},
               "model_load_s": round(load_s, 1), "runs": runs},
    )


class _Serve:
    """``thinksearch serve`` on a free local port: a real server that batches concurrent requests."""

    def __init__(self, model: str, max_batch: int):
        import socket
        import subprocess

        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.proc = subprocess.Popen([sys.executable, "-m", "thinksearch", "serve", "--model", model, "--engine", "transformers",
                                      "--port", str(port), "--max-batch", str(max_batch)])
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"thinksearch serve exited with {self.proc.returncode}")
            try:
                if httpx.get(self.base_url + "/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise SystemExit("thinksearch serve did not start within 10 minutes")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def bench_openai(args) -> None:
    from thinksearch.config import TeacherConfig
    from thinksearch.teacher import OpenAITeacher

    server = None
    base_url, model = args.base_url, args.served_model
    if args.quick:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from teacher_server import Server

        server = Server(delay_s=args.delay_s).start()
        base_url, model = server.base_url, "scripted"
        server_desc = (f"SIMULATION: scripted test server, fixed {args.delay_s} s per request served concurrently "
                       "(a model of a batching server); measures only the client's concurrency")
    elif not base_url:
        server = _Serve(args.model, args.concurrency)
        base_url, model = server.base_url, "thinksearch"
        server_desc = f"thinksearch serve --model {args.model} --max-batch {args.concurrency} (started by this script)"
    else:
        server_desc = f"{base_url} model {model}"
    questions = (QUESTIONS * 4)[: args.requests]

    def teacher(concurrency: int) -> OpenAITeacher:
        t = OpenAITeacher(TeacherConfig(backend="openai", model=model, base_url=base_url, concurrency=concurrency,
                                        api_key_env=args.api_key_env, timeout_s=600))
        t.check()
        return t

    try:
        from thinksearch import synth
        from thinksearch.teacher import TeacherRequest

        reqs = [TeacherRequest(synth.analysis_messages(q), max_tokens=args.analysis_tokens, temperature=0.0) for q in questions]
        results = {}
        for name, conc in (("sequential", 1), ("concurrent", args.concurrency)):
            t = teacher(conc)
            t.generate(reqs[:1])  # warm the connection (and the server's caches) before timing
            t0 = time.perf_counter()
            replies = t.generate(reqs)
            seconds = time.perf_counter() - t0
            t.close()
            errors = sum(r.error is not None for r in replies)
            tokens = sum(r.completion_tokens for r in replies)
            results[name] = {"concurrency": conc, "requests": len(reqs), "errors": errors, "seconds": round(seconds, 2),
                             "requests_per_minute": round(60 * len(reqs) / seconds, 2), "completion_tokens": tokens,
                             "tokens_per_s": round(tokens / seconds, 2)}
            print(name, results[name], flush=True)
    finally:
        if server is not None:
            server.stop()
    ratio = results["concurrent"]["requests_per_minute"] / results["sequential"]["requests_per_minute"]
    write_result(
        "synth_openai", results["sequential"], results["concurrent"], ratio, 3.0,
        out_dir=RESULTS / "quick" if args.quick else RESULTS,
        notes=server_desc + ". Same requests (stage-1 analysis prompts, greedy) in both modes.",
        extra={"server": server_desc, "simulation": bool(args.quick), "max_tokens": args.analysis_tokens},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["local", "openai", "both"], default="both")
    ap.add_argument("--quick", action="store_true", help="tiny model / scripted server: checks the script, not a measurement")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="local: teacher model reference")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="local: alternate the two modes this many times, keep the best of each")
    ap.add_argument("--analysis-tokens", type=int, default=64)
    ap.add_argument("--answer-tokens", type=int, default=32)
    ap.add_argument("--base-url", help="openai: a running OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--served-model", default="qwen2.5-coder-0.5b-instruct", help="openai: the model name the server serves")
    ap.add_argument("--api-key-env", default=None)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--delay-s", type=float, default=0.5, help="--quick openai: the simulated per-request latency")
    args = ap.parse_args()
    if args.part in ("local", "both"):
        bench_local(args)
    if args.part in ("openai", "both"):
        bench_openai(args)


if __name__ == "__main__":
    main()
