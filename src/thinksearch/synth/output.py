"""What a synth run leaves on disk: the row and failure logs, the reference export, the stats.

The logs are append-only JSONL, flushed and fsync'd per row and locked against a second writer
(:class:`thinksearch.files.JsonlLog`); the stats go to ``<output>.stats.json`` beside them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from thinksearch import files
from thinksearch import format as fmt
from thinksearch.errors import ThinksearchError
from thinksearch.files import write_json_atomic


class JsonlLog(files.JsonlLog):
    """synth's output and failure files: a second synth on the same file is refused naming --output."""

    busy = "another thinksearch synth is writing {path}; wait for it or pick another --output"


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The complete rows of a synth output file (a partial last line is ignored)."""
    path = Path(path)
    if not path.is_file():
        raise ThinksearchError(f"data file not found: {path}")
    return files.read_log(path)


def sibling(output: str | Path, suffix: str) -> Path:
    """``synthetic_data.jsonl`` → ``synthetic_data{suffix}`` (e.g. ``.stats.json``)."""
    p = Path(output)
    stem = p.name[: -len(p.suffix)] if p.suffix in (".jsonl", ".json") else p.name
    return p.with_name(stem + suffix)


def reference_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Messages in the reference layout: role + content, tool calls written into the content
    exactly as Qwen2.5's template renders them (so a trainer without tool support sees the same text)."""
    out = []
    for m in messages:
        content = m.get("content") or ""
        if m.get("tool_calls"):
            content = fmt.render_assistant(content, m["tool_calls"])
        out.append({"role": m["role"], "content": content})
    return out


def export_reference(rows: Iterable[dict[str, Any]], dest: str | Path) -> int:
    """Write rows as the reference's single JSON array of ``{"messages", "type"}``; returns the count."""
    data = [{"messages": reference_messages(r["messages"]), "type": r["type"]} for r in rows]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(dest, data)
    return len(data)


@dataclass
class SynthStats:
    """What a run did; printed as a table and saved as JSON beside the output."""

    output: str
    teacher: str = ""
    target: dict[str, int] = field(default_factory=dict)
    rows_in_file: dict[str, int] = field(default_factory=dict)
    """Rows of each type from the current pools, in the output file after this run."""
    kept: Counter = field(default_factory=Counter)
    """Rows written by this run, by type."""
    rejected: Counter = field(default_factory=Counter)
    """Gate rejections by "stage/reason"."""
    failed: Counter = field(default_factory=Counter)
    """Transient failures (teacher or search errors) by "stage/reason"."""
    repairs: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    teacher_requests: int = 0
    searches: int = 0
    seconds: float = 0.0
    pools: dict[str, Any] = field(default_factory=dict)
    dropped_partial_bytes: int = 0
    exhausted: list[str] = field(default_factory=list)
    """Types whose pool ran out before the target was reached."""
    interrupted: str | None = None
    """The signal that stopped the run early (it finished the rows in flight)."""
    error: str | None = None
    gold: Any = None
    """Gold-checked sampling (a :class:`.verify.GoldTally`): pass@1 / pass@k per category; None when off."""
    verified: Counter = field(default_factory=Counter)
    """Rows written by this run by ``meta.verified`` (gold, none), when gold checking is on."""
    unverified: dict[str, Any] = field(default_factory=dict)
    """Thinking rows without gold: in the file, the cap, questions passed over at the cap."""
    search_rows: dict[str, Counter] = field(default_factory=dict)
    """Search rows written by this run, by category: rows, template (the reasoning is the code
    template), abstaining (no result concerned the question; the answer says so)."""

    knowledge: Counter = field(default_factory=Counter)
    """Knowledge-boundary labels (``knowledge_probe``): questions probed, known by the student,
    and kept as search rows because it was not."""

    def add_search_row(self, category: str, template: bool, abstaining: bool) -> None:
        c = self.search_rows.setdefault(category, Counter())
        c["rows"] += 1
        c["template"] += template
        c["abstaining"] += abstaining

    def search_rows_dict(self) -> dict[str, dict[str, Any]]:
        """Per category and in all: rows, template and abstaining counts and shares."""
        def line(c: Counter) -> dict[str, Any]:
            n = c["rows"]
            return {"rows": n, "template": c["template"], "template_share": round(c["template"] / n, 3) if n else None,
                    "abstaining": c["abstaining"], "abstaining_share": round(c["abstaining"] / n, 3) if n else None}

        out = {cat: line(c) for cat, c in sorted(self.search_rows.items())}
        if out:
            out["all"] = line(sum(self.search_rows.values(), Counter()))
        return out

    @property
    def samples_per_minute(self) -> float:
        return 60.0 * sum(self.kept.values()) / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        return all(self.rows_in_file.get(k, 0) >= n for k, n in self.target.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output, "teacher": self.teacher, "target": self.target,
            "rows_in_file": self.rows_in_file, "kept": dict(self.kept),
            "rejected": dict(sorted(self.rejected.items())), "failed": dict(sorted(self.failed.items())),
            "repairs": dict(self.repairs),
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "teacher_requests": self.teacher_requests, "searches": self.searches,
            "seconds": round(self.seconds, 2), "samples_per_minute": round(self.samples_per_minute, 3),
            "pools": self.pools, "dropped_partial_bytes": self.dropped_partial_bytes,
            "exhausted": self.exhausted, "complete": self.complete,
            "interrupted": self.interrupted, "error": self.error,
            "search_rows": self.search_rows_dict(),
            **({"knowledge": dict(self.knowledge)} if self.knowledge else {}),
            # Only with gold checking on, so a k=1 run's stats keep their shape.
            **({"gold": self.gold.to_dict(), "verified": dict(self.verified), "unverified": self.unverified}
               if self.gold is not None else {}),
        }

    def table(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        t = Table(title=Text(f"synth → {self.output}"), show_header=True)
        t.add_column("")
        t.add_column("value", justify="right")
        for k in self.target:
            t.add_row(f"{k} rows", f"{self.rows_in_file.get(k, 0)} / {self.target[k]} (+{self.kept.get(k, 0)} this run)")
        for label, n in sorted(self.rejected.items()):
            t.add_row(f"rejected: {label}", str(n))
        for label, n in sorted(self.failed.items()):
            t.add_row(f"failed: {label}", str(n))
        for label, n in sorted(self.repairs.items()):
            t.add_row(f"repaired: {label}", str(n))
        if self.gold is not None:
            for cat, c in self.gold.to_dict()["by_category"].items():
                t.add_row(f"gold {cat}: pass@1 / pass@{self.gold.k}", f"{c['pass_at_1']} / {c['pass_at_k']} of {c['tried']}")
            for label, n in sorted(self.verified.items()):
                t.add_row(f"verified: {label}", str(n))
        if self.knowledge:
            k = self.knowledge
            t.add_row("knowledge probe: known / probed", f"{k['known']} / {k['probed']} ({k['search_rows']} kept as search rows)")
        t.add_row("teacher", self.teacher)
        t.add_row("tokens (prompt / completion)", f"{self.prompt_tokens} / {self.completion_tokens}")
        t.add_row("time", f"{self.seconds:.1f} s")
        t.add_row("samples per minute", f"{self.samples_per_minute:.2f}")
        return t
