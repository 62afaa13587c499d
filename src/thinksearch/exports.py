"""Training rows for other trainers: LLaMA-Factory, TRL, OpenAI fine-tuning, the reference layout.

Every format keeps what the assistant says before a call (the ``<thinking>`` trace): trainers
that keep only the call teach a model to call without thinking. Rows are read and checked as
``thinksearch train`` reads them, so a row that breaks the format stops the export with
``file:line``; a row that is valid for us but cannot be written in a format (LLaMA-Factory's
strict turn alternation) stops it the same way.

Run as: ``thinksearch export-data runs/quickstart/data.jsonl --format trl --out exports/trl``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from thinksearch import format as fmt
from thinksearch.errors import ThinksearchError
from thinksearch.files import read_json, write_json_atomic, write_text_atomic

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.train import Row

FORMATS = ("llamafactory", "trl", "openai", "reference")
DATASET_NAME = "thinksearch"
"""The dataset's name in LLaMA-Factory's dataset_info.json (``dataset: thinksearch``)."""
# LLaMA-Factory's sharegpt roles (its documented defaults for role tags).
LF_ROLES = {"user": "human", "assistant": "gpt", "call": "function_call", "tool": "observation"}


@dataclass
class ExportResult:
    files: list[Path]
    """What was written, the data file first."""
    rows: int
    skipped: list[str] = field(default_factory=list)
    """``file:line: why`` of each bad row left out (only with ``skip_bad``)."""


def _calls(where: str, i: int, msg: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """An assistant turn's text and its calls; calls written inline as ``<tool_call>`` text (the
    reference layout) are lifted out, the text around them kept."""
    content, calls = msg.get("content") or "", list(msg.get("tool_calls") or [])
    if calls or fmt.TOOL_OPEN not in content:
        return content, calls
    parsed = fmt.parse(content)
    if parsed.invalid_calls:
        raise ThinksearchError(f"{where}: message {i} (assistant): unreadable <tool_call> ({parsed.invalid_calls[0].error})")
    text = fmt._CALL_RE.sub("", content).rstrip()
    return text, [c.as_message_call() for c in parsed.tool_calls]


def _split(row: "Row") -> tuple[str | None, list[dict[str, Any]]]:
    """(system prompt, the other turns with every assistant call structured)."""
    msgs = row.messages
    system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else None
    out = []
    for i, m in enumerate(msgs, 1):
        if m["role"] == "system":
            continue
        if m["role"] == "assistant":
            text, calls = _calls(row.where, i, m)
            m = {"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}
        out.append(m)
    return system, out


def _call_text(call: dict[str, Any]) -> str:
    fn = call["function"]
    return f"{fmt.TOOL_OPEN}\n{fmt.tool_call_json(fn['name'], fn['arguments'])}\n{fmt.TOOL_CLOSE}"


# ----------------------------------------------------------------------------- per format


def llamafactory_row(row: "Row") -> dict[str, Any]:
    """One sharegpt row: ``conversations`` of human / gpt / function_call / observation turns,
    ``system`` and ``tools`` (a JSON string, as LLaMA-Factory reads it).

    A call turn's value is the assistant's text followed by the ``<tool_call>`` block(s): LLaMA-Factory
    (0.9.5, qwen template) keeps the text before the call and reformats the call in Qwen's format.
    """
    system, msgs = _split(row)
    conv: list[dict[str, str]] = []
    for m in msgs:
        role = m["role"]
        if role == "assistant" and m.get("tool_calls"):
            calls = "\n".join(_call_text(c) for c in m["tool_calls"])
            text = m["content"].rstrip()
            conv.append({"from": LF_ROLES["call"], "value": f"{text}\n{calls}" if text else calls})
        else:
            conv.append({"from": LF_ROLES[role], "value": m["content"]})
    # LLaMA-Factory's converter drops a row whose turns do not alternate human/observation then
    # gpt/function_call, ending on the assistant: say so here, with the line, instead.
    for k, turn in enumerate(conv):
        odd = k % 2 == 0
        if (turn["from"] in ("human", "observation")) != odd:
            what = "several tool results after one call" if turn["from"] == "observation" else \
                "two user or two assistant turns in a row"
            raise ThinksearchError(f"{row.where}: LLaMA-Factory's sharegpt format needs alternating turns "
                                   f"(user or tool, then assistant); this row has {what} (turn {k + 1})")
    out: dict[str, Any] = {"conversations": conv}
    if system is not None:
        out["system"] = system
    out["tools"] = json.dumps([fmt.SEARCH_TOOL_SCHEMA], ensure_ascii=False)
    return out


def llamafactory_dataset_info(file_name: str) -> dict[str, Any]:
    """The dataset_info.json entry that tells LLaMA-Factory how to read the file."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": LF_ROLES["user"],
                 "assistant_tag": LF_ROLES["assistant"], "observation_tag": LF_ROLES["tool"],
                 "function_tag": LF_ROLES["call"], "system_tag": "system"},
    }


def trl_row(row: "Row") -> dict[str, Any]:
    """``messages`` with ``tool_calls`` (arguments as objects, what Qwen's template renders) and ``tool``
    turns, plus a ``tools`` column of JSON schemas that TRL's SFTTrainer passes to the chat template."""
    system, msgs = _split(row)
    messages = ([{"role": "system", "content": system}] if system is not None else []) + msgs
    return {"messages": messages, "tools": [fmt.SEARCH_TOOL_SCHEMA]}


def openai_row(row: "Row") -> dict[str, Any]:
    """OpenAI chat fine-tuning: calls with ids and arguments as JSON strings; tool turns answer an id."""
    system, msgs = _split(row)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system is not None else []
    pending: list[str] = []
    n = 0
    for m in msgs:
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                n += 1
                fn = c["function"]
                calls.append({"id": f"call_{n}", "type": "function",
                              "function": {"name": fn["name"], "arguments": json.dumps(fn["arguments"], ensure_ascii=False)}})
            pending = [c["id"] for c in calls]
            # content stays (the thinking before the call); OpenAI's format allows text beside calls
            messages.append({"role": "assistant", "content": m["content"], "tool_calls": calls})
        elif m["role"] == "tool":
            if not pending:
                raise ThinksearchError(f"{row.where}: a tool result has no call left to answer (OpenAI's format pairs each with a call id)")
            messages.append({"role": "tool", "tool_call_id": pending.pop(0), "content": m["content"]})
        else:
            messages.append({"role": m["role"], "content": m["content"]})
    return {"messages": messages, "tools": [fmt.SEARCH_TOOL_SCHEMA]}


# ----------------------------------------------------------------------------- export


def _jsonl(rows: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def export_data(data: str | Path | Sequence[str | Path], out: str | Path, format: str,
                skip_bad: bool = False) -> ExportResult:
    """Convert synthesized rows (JSONL, or the reference JSON array) to ``format`` under ``out``."""
    from thinksearch.train import read_rows

    if format not in FORMATS:
        raise ThinksearchError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    paths = [data] if isinstance(data, (str, Path)) else list(data)
    rows, skipped = read_rows(paths, skip_bad=skip_bad)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ThinksearchError(f"--out must be a directory, {out} is a file")
    out.mkdir(parents=True, exist_ok=True)
    notes = [f"{s.where}: {s.detail}" for s in skipped]
    if format == "reference":
        from thinksearch.synth import export_reference

        dest = out / "synthetic_data.json"  # the reference's own file name
        export_reference(({"messages": r.messages, "type": r.type} for r in rows), dest)
        return ExportResult([dest], len(rows), notes)
    convert = {"llamafactory": llamafactory_row, "trl": trl_row, "openai": openai_row}[format]
    converted = [convert(r) for r in rows]  # all rows first: a bad one stops before anything is written
    if format == "llamafactory":
        dest = out / f"{DATASET_NAME}.jsonl"
        write_text_atomic(dest, _jsonl(converted))
        info_path = out / "dataset_info.json"
        info = read_json(info_path) if info_path.exists() else {}
        if not isinstance(info, dict):
            raise ThinksearchError(f"{info_path} exists but is not a JSON object; move it away or pick another --out")
        info[DATASET_NAME] = llamafactory_dataset_info(dest.name)  # other datasets listed there stay
        write_json_atomic(info_path, info)
        return ExportResult([dest, info_path], len(rows), notes)
    dest = out / "train.jsonl"
    write_text_atomic(dest, _jsonl(converted))
    return ExportResult([dest], len(rows), notes)
