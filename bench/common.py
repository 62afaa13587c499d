"""Shared bits of the benchmarks: machine facts and the JSON every benchmark writes.

Each benchmark is ``bench/bench_<name>.py``; it prints its figures and writes
``bench/results/<name>.json`` with ``name, date, machine, baseline, ours, ratio, target``
(DESIGN.md section 9). On a shared, noisy machine only the ratio is meaningful.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version()}
    # transformers on a CPU runs bf16 only where it is native, else fp32 at 2-3x the time: the
    # same "AMD EPYC" name has come with and without it.
    from thinksearch.models import cpu_has_bf16

    info["cpu_bf16"] = cpu_has_bf16()
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def write_result(name: str, baseline: dict[str, Any], ours: dict[str, Any], ratio: float, target: float,
                 notes: str = "", extra: dict[str, Any] | None = None, out_dir: Path = RESULTS) -> Path:
    """Print and save one benchmark's JSON; returns the path written."""
    record = {
        "name": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "baseline": baseline,
        "ours": ours,
        "ratio": round(ratio, 3),
        "target": target,
        "meets_target": ratio >= target,
        "notes": notes or "shared machine: absolute figures are noisy, the ratio is what counts",
        **(extra or {}),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, ensure_ascii=False, indent=2))
    return path
