"""Stage 1: turn question pools into SFT rows with a teacher model (DESIGN.md sections 2, 3).

Each question goes through separate prompts, rendered through the teacher's chat template:

- thinking sample: (1) the analysis, which becomes the ``<thinking>`` trace (a reasoning
  teacher's own ``</think>``-separated reasoning is used when it gives one); (2) the final
  answer, given the analysis;
- search sample: (1) a short reason why fresh data is needed plus a query, asked for as JSON
  and validated; then the search backend runs the query (a failure is recorded, never papered
  over with invented results); (2) the answer, grounded in the numbered results and citing [n].

Questions are processed in batches (stage 1 for the batch, then the searches, then stage 2)
so a local teacher generates a batch at once and a server sees concurrent requests. Every
teacher text passes quality gates; a rejection is counted and logged with its reason, and the
question is replaced by the next one from the (seeded, shuffled) pool until the requested
number of rows is reached. Tags, the system prompt and the tool-call JSON are inserted by
:mod:`thinksearch.format`, never written by the teacher.

Output is append-only JSONL, flushed and fsync'd per row. Row ids are a hash of the question,
so rerunning the same command skips what is done; a partial last line left by a crash is cut
off at the start. SIGINT / SIGTERM finish the batch in flight, write the stats and exit
cleanly (a second signal stops at once).

Failures go to a second JSONL file (``<output>.failures.jsonl``), one record per attempt with
stage, reason, detail and the offending text. On a rerun, a question a quality gate rejected
is not asked again (the same teacher would most likely fail the same way, and its place is
already taken by the next question; ``--retry-rejected`` asks again), while a question that
failed for a transient reason (teacher error after all retries, search error) is eligible
again whenever the target is not yet met. Many transient failures in a row stop the run: the
backend is down, and burning through the pool would only fill the failures file.

Run as: ``thinksearch synth --config configs/quickstart.yaml``.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from thinksearch import files
from thinksearch import format as fmt
from thinksearch import questions as qs
from thinksearch.errors import ThinksearchError
from thinksearch.files import shipped, shipped_hint, write_json_atomic
from thinksearch.teacher import TeacherReply, TeacherRequest

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from thinksearch.config import SynthConfig
    from thinksearch.search.base import Result, SearchBackend
    from thinksearch.teacher import Teacher

KINDS = ("thinking", "search")

# ----------------------------------------------------------------------------- prompts
# The teacher's prompts (not the student's system prompt, which format.py owns). Short output
# is asked for on purpose: the quickstart teacher is a 0.5B model on a CPU, where every token
# costs, and short traces are what a 0.5B student can learn to write.

TEACHER_SYSTEM = "你是一位知识渊博、表达简洁的中文助手。只输出被要求的内容，不要使用任何标签、标记或Markdown标题。"

ANALYSIS_PROMPT = (
    "请针对下面的问题写出你的思考过程：理解题意，列出关键步骤或依据，必要时验证结果。"
    "只写思考过程本身，不要另写最终答案的总结。简洁清楚，一般不超过200字。\n\n问题：{question}"
)
ANSWER_PROMPT = (
    "问题：{question}\n\n思考过程：\n{analysis}\n\n"
    "请根据上面的思考过程，直接给出面向用户的最终回答。准确、简洁，一到三句话，不要复述思考过程。"
)
# Three examples on different subjects, each naming what changes: given one stock sentence
# ("this needs real-time data"), a 0.5B teacher copies it for almost every question, and a
# student trained on it learns a phrase that fits any question, science and opinion included.
QUERY_EXAMPLES = "\n".join(json.dumps(e, ensure_ascii=False) for e in (
    {"reasoning": "比特币的价格每分每秒都在变，我记得的数字早已过时，要查今天的行情。", "query": "比特币价格 今日"},
    {"reasoning": "日本首相会因选举和换届而更替，我知道的人选可能已经不是现任，需要核实。", "query": "日本现任首相"},
    {"reasoning": "成都明天的天气要看最新的预报，凭记忆无法知道。", "query": "成都 明天天气预报"},
))
QUERY_PROMPT = (
    "下面的问题需要最新或实时的信息才能准确回答。请用一句话说明：这个问题问的哪一项信息会随时间变化，为什么不能凭记忆回答；"
    "再给出一个简短的搜索关键词。只输出一个JSON对象，格式参考下面的例子（每行一个）：\n{examples}\n"
    "query只占一行，不超过20个字。\n\n问题：{question}"
)
GROUNDED_PROMPT = (
    "问题：{question}\n\n搜索结果：\n{results}\n\n"
    "请只根据上面的搜索结果，用自己的话回答问题：先直接给出答案，并在用到的信息后用方括号编号标注来源，例如“……[1]”。"
    "不要照抄搜索结果的原文，不要编造搜索结果中没有的信息；如果搜索结果不足以回答，请如实说明。回答简洁，一到三句话。"
)


def _chat(user: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": TEACHER_SYSTEM}, {"role": "user", "content": user}]


def analysis_messages(question: str) -> list[dict[str, Any]]:
    return _chat(ANALYSIS_PROMPT.format(question=question))


def answer_messages(question: str, analysis: str) -> list[dict[str, Any]]:
    return _chat(ANSWER_PROMPT.format(question=question, analysis=analysis))


def query_messages(question: str) -> list[dict[str, Any]]:
    return _chat(QUERY_PROMPT.format(question=question, examples=QUERY_EXAMPLES))


def grounded_messages(question: str, results_text: str) -> list[dict[str, Any]]:
    return _chat(GROUNDED_PROMPT.format(question=question, results=results_text))


# ----------------------------------------------------------------------------- gates


@dataclass
class Rejection:
    """Why a question produced no row. ``transient`` failures (teacher or search errors) may be
    retried by a later run; gate rejections are final unless ``--retry-rejected``."""

    stage: str
    reason: str
    detail: str = ""
    text: str = ""
    transient: bool = False

    @property
    def label(self) -> str:
        return f"{self.stage}/{self.reason}"


_LABEL_RE = re.compile(r"^\s*(?:\*\*)?(?:思考过程|分析过程|分析|推理过程|最终回答|最终答案|回答|答案)(?:\*\*)?\s*[:：]\s*")
_RUN_RE = re.compile(r"(.{1,12}?)\1{7,}", re.DOTALL)


def repetition(text: str, n: int = 12) -> float:
    """Share of repeated ``n``-character spans (whitespace ignored): 0 for prose, near 1 for loops.

    >>> repetition("设小正方形的边长为a，大正方形的边长为b，则b²=4a²，所以b=2a，周长比为2:1。")
    0.0
    >>> repetition("我们需要计算面积。" * 10) > 0.5
    True
    """
    s = "".join(text.split())
    if len(s) < 2 * n:
        return 0.0
    spans = [s[i : i + n] for i in range(len(s) - n + 1)]
    return 1 - len(set(spans)) / len(spans)


def is_loop(text: str, max_repetition: float) -> bool:
    """A repetition loop: many repeated spans, or a short unit repeated 8+ times over 20+ characters.

    >>> is_loop("答案是" + "哈" * 20, 0.3), is_loop("周长比是2:1。", 0.3), is_loop("10亿=1000000000", 0.3)
    (True, False, False)
    """
    if repetition(text) > max_repetition:
        return True
    return any(len(m.group(0)) >= 20 for m in _RUN_RE.finditer("".join(text.split())))


def clean(text: str) -> str:
    """Strip a leading label the teacher may add (``思考过程：``, ``答案：`` …) and outer space.

    >>> clean("**最终答案**：周长比是2:1。")
    '周长比是2:1。'
    """
    return _LABEL_RE.sub("", text.strip(), count=1).strip()


def check_text(reply: TeacherReply, stage: str, min_chars: int, max_repetition: float,
               use_reasoning: bool = False) -> tuple[str, str] | Rejection:
    """Gate one teacher reply; returns (text, source) or why it is rejected.

    ``use_reasoning``: take the teacher's own ``</think>`` reasoning when it gave one (the
    thinking trace); otherwise the reasoning is discarded and only the reply text is used.
    """
    if reply.error is not None or reply.finish_reason == "error":
        return Rejection(stage, "teacher_error", reply.error or "unknown error", transient=True)
    source = "reasoning" if use_reasoning and reply.reasoning else "text"
    text = clean(reply.reasoning if source == "reasoning" else reply.text)  # type: ignore[arg-type]
    if reply.finish_reason == "length":
        return Rejection(stage, "truncated", "finish_reason length", text[-200:])
    if not text:
        return Rejection(stage, "empty", "nothing after </think>" if reply.reasoning is not None else "")
    leaked = fmt.find_tags(text)
    if leaked:
        return Rejection(stage, "leaked_tags", ", ".join(leaked), text)
    if len(text) < min_chars:
        return Rejection(stage, "too_short", f"{len(text)} < {min_chars} characters", text)
    if is_loop(text, max_repetition):
        return Rejection(stage, "repetition", f"repeated spans {repetition(text):.2f}", text)
    return text, source


def _json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (code fences and prose around it are tolerated)."""
    decoder = json.JSONDecoder(strict=False)  # small teachers put raw newlines inside strings
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


_QUERY_REASONS = {
    "empty query": "query_empty",
    "query spans several lines": "query_multiline",
    "query contains tags": "query_tags",
}
_QUOTES = "\"'“”‘’「」『』《》`"


# Words that say why a search is needed. Weaker cues (今天, 目前, 现任, a bare 查 as in 查理)
# are left out: the 0.5B teacher uses them in made-up statements ("现任主席是……") as often as
# in reasons. Negated reasons ("他不会随时间变化，可以凭记忆回答") are refused.
_SEARCH_CUES = ("搜索", "要查", "需要查", "查询", "查看", "查一", "实时", "变", "过时", "更新", "最近", "近期", "预报", "核实")
_NOT_A_REASON = ("不会随", "不会变", "没有变化", "可以凭记忆")
# Bigrams every reasoning may share with its question; they do not make it specific.
_GENERIC_BIGRAMS = frozenset({"这个", "个问", "问题", "需要", "最新", "实时", "多少", "什么", "怎么", "么样", "哪些"})


def reasoning_problem(reasoning: str, question: str) -> Rejection | None:
    """Gates on a search row's reasoning, which becomes the student's whole thinking before the call.

    It must say why a search is needed (a cue such as 变, 过时, 查, beyond those the question
    has) and be about this question (two or more bigrams in common with it, beyond generic
    ones), so the student learns to tie the decision to what is asked rather than a stock
    sentence that fits any question.

    >>> reasoning_problem("这个问题需要最新的实时数据，我需要搜索当前的信息。", "英国首相叫什么名字？").reason
    'generic_reasoning'
    >>> reasoning_problem("英国首相是乔治·华盛顿。", "英国首相叫什么名字？").reason
    'no_search_reason'
    >>> reasoning_problem("北约秘书长是某某，他不会随时间变化。", "北约秘书长是谁？").reason
    'no_search_reason'
    >>> reasoning_problem("英国首相会随大选更替，我知道的可能不是现任，需要查。", "英国首相叫什么名字？") is None
    True
    """
    # A cue copied from the question ("实时票房第一的是……") is not a reason.
    if (not any(reasoning.count(cue) > question.count(cue) for cue in _SEARCH_CUES)
            or any(no in reasoning for no in _NOT_A_REASON)):
        return Rejection("query", "no_search_reason", "the reasoning does not say why a search is needed", reasoning)
    shared = (qs.grams(qs.key(reasoning)) & qs.grams(qs.key(question))) - _GENERIC_BIGRAMS
    if len(shared) < 2:
        return Rejection("query", "generic_reasoning", "the reasoning does not mention what the question asks", reasoning)
    return None


def template_reasoning(query: str) -> str:
    """The thinking of a search row whose teacher gave no usable reason (``search_reason_fallback``).

    It opens with the query, so the sentence starts from what is asked, as a teacher's reason
    would; one fixed opening for every row would fit any question, science included.

    >>> template_reasoning("温网男单冠军")
    '温网男单冠军：这类信息会随时间变化，我记得的可能已经过时，需要搜索最新的情况。'
    """
    return f"{query}：这类信息会随时间变化，我记得的可能已经过时，需要搜索最新的情况。"


# Written by code, like the tags (``decision_line``): the teacher's text follows on the next line.
DECISION_LINES = {
    "thinking": "这个问题靠推理和已有知识就能回答，不需要搜索。",
    "search": "这个问题要用到会变化的最新信息，需要搜索。",
}


def decided(kind: str, trace: str, cfg: "SynthConfig") -> str:
    """``trace`` opened with the decision line of ``kind`` when ``cfg.decision_line`` is set.

    >>> from thinksearch.config import SynthConfig
    >>> decided("search", "金价每天都在变。", SynthConfig(decision_line=True))
    '这个问题要用到会变化的最新信息，需要搜索。\\n金价每天都在变。'
    """
    return f"{DECISION_LINES[kind]}\n{trace}" if cfg.decision_line else trace


def parse_query_reply(text: str, min_chars: int, max_repetition: float) -> tuple[str, str, list[str]] | Rejection:
    """Read search stage 1's JSON: (reasoning, query, repairs made) or why it is unusable.

    A query spread over several lines, or wrapped in quotes, is repaired (joined with spaces,
    unquoted) and the repair recorded; one that is empty, too long or carries tags is rejected.

    >>> parse_query_reply('{"reasoning": "需要实时数据。", "query": "比特币\\n价格"}', 2, 0.3)
    ('需要实时数据。', '比特币 价格', ['query: joined 2 lines'])
    >>> parse_query_reply('{"reasoning": "需要实时数据。", "query": ""}', 2, 0.3).reason
    'query_empty'
    """
    obj = _json_object(text)
    if obj is None:
        return Rejection("query", "not_json", "no JSON object in the reply", text)
    reasoning, query = obj.get("reasoning"), obj.get("query")
    if not isinstance(query, str):
        return Rejection("query", "query_missing", "no string 'query' field", text)
    if not isinstance(reasoning, str):
        return Rejection("query", "reasoning_missing", "no string 'reasoning' field", text)
    reasoning = clean(reasoning)
    repairs: list[str] = []
    q = query.strip()
    if "\n" in q or "\r" in q:
        lines = [line for line in q.splitlines() if line.strip()]
        q = " ".join(" ".join(lines).split())
        repairs.append(f"query: joined {len(lines)} lines")
    if len(q) >= 2 and q[0] in _QUOTES and q[-1] in _QUOTES:
        q = q[1:-1].strip()
        repairs.append("query: removed quotes")
    problem = fmt.query_problem(q)
    if problem is not None:
        reason = _QUERY_REASONS.get(problem, "query_too_long" if "longer" in problem else "query_invalid")
        return Rejection("query", reason, problem, query)
    for name, value, least in (("reasoning", reasoning, min_chars),):
        if not value:
            return Rejection("query", "reasoning_empty", "", text)
        leaked = fmt.find_tags(value)
        if leaked:
            return Rejection("query", "leaked_tags", ", ".join(leaked), value)
        if len(value) < least:
            return Rejection("query", "too_short", f"{name}: {len(value)} < {least} characters", value)
        if is_loop(value, max_repetition):
            return Rejection("query", "repetition", name, value)
    return reasoning, q, repairs


_CITE_RE = re.compile(r"\[(\d{1,3})\]")
_SHOWN_RE = re.compile(r"^\[\d+\] ", re.MULTILINE)  # a line of the tool turn: "[1] title — snippet"
ECHO_SIMILARITY = 0.8


def answer_problem(answer: str, question: str, min_chars: int) -> Rejection | None:
    """Gates on a final answer beyond the text checks: it must say something of its own.

    Rejects an answer that is only citations, that copies a line of the tool turn (``[1] 标题 — …``,
    a small teacher's favourite shortcut), or that merely repeats the question.

    >>> answer_problem("[2]", "最新的Python版本是多少？", 2).reason
    'too_short'
    >>> answer_problem("[1] 美元兑人民币汇率 — 摘要 (新闻, 2025-06-01)", "今天美元汇率多少？", 2).reason
    'copied_results'
    >>> answer_problem("上海到杭州的高铁今天还有票吗？[1]", "上海到杭州的高铁今天还有票吗？", 2).reason
    'echoes_question'
    >>> answer_problem("今天的汇率约为7.1[1]。", "今天美元汇率多少？", 2) is None
    True
    """
    body = _CITE_RE.sub("", answer).strip()
    if len(body) < min_chars:
        return Rejection("", "too_short", f"{len(body)} < {min_chars} characters besides citations", answer)
    if _SHOWN_RE.search(answer):
        return Rejection("", "copied_results", "a line of the answer is a copied search result", answer)
    if qs.similarity(body, question) >= ECHO_SIMILARITY:
        return Rejection("", "echoes_question", f"similarity to the question {qs.similarity(body, question):.2f}", answer)
    return None

_WIDE_CITE_RE = re.compile(r"[【［](\d{1,3})[】］]")


def check_citations(answer: str, n_results: int) -> tuple[str, list[str]] | Rejection:
    """A grounded answer must cite [n] for existing results only (when there are results).

    Full-width brackets (【1】) are rewritten to [1] and the repair recorded.

    >>> check_citations("约为6万美元【1】。", 3)
    ('约为6万美元[1]。', ['citations: full-width brackets'])
    >>> check_citations("约为6万美元[4]。", 3).reason
    'bad_citation'
    """
    repairs: list[str] = []
    if _WIDE_CITE_RE.search(answer):
        answer = _WIDE_CITE_RE.sub(r"[\1]", answer)
        repairs.append("citations: full-width brackets")
    if n_results == 0:
        return answer, repairs
    cited = {int(c) for c in _CITE_RE.findall(answer)}
    if not cited:
        return Rejection("grounded", "no_citation", f"no [n] among {n_results} results", answer)
    bad = sorted(c for c in cited if not 1 <= c <= n_results)
    if bad:
        return Rejection("grounded", "bad_citation", f"cites {bad} but there are {n_results} results", answer)
    return answer, repairs


# ----------------------------------------------------------------------------- output files


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


# ----------------------------------------------------------------------------- stats


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
        t.add_row("teacher", self.teacher)
        t.add_row("tokens (prompt / completion)", f"{self.prompt_tokens} / {self.completion_tokens}")
        t.add_row("time", f"{self.seconds:.1f} s")
        t.add_row("samples per minute", f"{self.samples_per_minute:.2f}")
        return t


# ----------------------------------------------------------------------------- generation


@dataclass
class Item:
    id: str
    type: str
    question: str


@dataclass
class Outcome:
    item: Item
    row: dict[str, Any] | None = None
    rejection: Rejection | None = None
    repairs: list[str] = field(default_factory=list)


def _seed(cfg: "SynthConfig", item: Item, stage: int) -> int:
    return (cfg.seed * 1_000_003 + int(item.id[2:10], 16) * 7 + stage) % (2**31)


def _request(cfg: "SynthConfig", messages: list[dict[str, Any]], max_tokens: int, item: Item, stage: int) -> TeacherRequest:
    return TeacherRequest(messages, max_tokens=max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                          seed=_seed(cfg, item, stage))


class _Counter:
    """Tokens and requests of the teacher calls a batch made."""

    def __init__(self, stats: SynthStats):
        self.stats = stats

    def __call__(self, teacher: "Teacher", requests: list[TeacherRequest]) -> list[TeacherReply]:
        if not requests:
            return []
        replies = teacher.generate(requests)
        if len(replies) != len(requests):
            raise RuntimeError(f"teacher {teacher.name} returned {len(replies)} replies for {len(requests)} requests")
        for r in replies:
            self.stats.prompt_tokens += r.prompt_tokens
            self.stats.completion_tokens += r.completion_tokens
        self.stats.teacher_requests += len(requests)
        return replies


def _meta(cfg: "SynthConfig", teacher: "Teacher", stages: dict[str, int], replies: list[TeacherReply],
          passed: list[str], repairs: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "teacher": teacher.name,
        "sampling": {"temperature": cfg.temperature, "top_p": cfg.top_p, "seed": cfg.seed, "max_tokens": stages},
        "finish_reasons": [r.finish_reason for r in replies],
        "tokens": {"prompt": sum(r.prompt_tokens for r in replies), "completion": sum(r.completion_tokens for r in replies)},
        "gates": {"passed": passed, "repairs": repairs},
        **extra,
    }


def thinking_batch(items: Sequence[Item], teacher: "Teacher", cfg: "SynthConfig", call: Any) -> list[Outcome]:
    """Stage 1 (analysis) for every item, then stage 2 (answer given the analysis)."""
    gate = (cfg.max_repetition,)
    first = call(teacher, [_request(cfg, analysis_messages(it.question), cfg.max_tokens_analysis, it, 1) for it in items])
    outcomes = [Outcome(it) for it in items]
    traces: dict[int, tuple[str, str]] = {}
    for i, reply in enumerate(first):
        got = check_text(reply, "analysis", cfg.min_trace_chars, *gate, use_reasoning=True)
        if isinstance(got, Rejection):
            outcomes[i].rejection = got
        else:
            traces[i] = got
    todo = sorted(traces)
    second = call(teacher, [_request(cfg, answer_messages(items[i].question, traces[i][0]), cfg.max_tokens_answer, items[i], 2)
                            for i in todo])
    stages = {"analysis": cfg.max_tokens_analysis, "answer": cfg.max_tokens_answer}
    for i, reply in zip(todo, second):
        got = check_text(reply, "answer", cfg.min_answer_chars, *gate)
        if not isinstance(got, Rejection):
            got = answer_problem(got[0], items[i].question, cfg.min_answer_chars) or got
        if isinstance(got, Rejection):
            got.stage = "answer"
            outcomes[i].rejection = got
            continue
        trace, source = traces[i]
        answer = got[0]
        it = items[i]
        outcomes[i].row = {
            "id": it.id, "type": "thinking",
            "messages": fmt.thinking_messages(it.question, decided("thinking", trace, cfg), answer),
            "meta": _meta(cfg, teacher, stages, [first[i], reply], ["analysis", "answer"], [], trace_source=source),
        }
    return outcomes


def search_batch(items: Sequence[Item], teacher: "Teacher", backend: "SearchBackend", cfg: "SynthConfig",
                 call: Any, stats: SynthStats) -> list[Outcome]:
    """Stage 1 (reason + query) for every item, the searches, then stage 2 (grounded answer)."""
    from thinksearch.search.base import SearchError

    first = call(teacher, [_request(cfg, query_messages(it.question), cfg.max_tokens_query, it, 1) for it in items])
    outcomes = [Outcome(it) for it in items]
    found: dict[int, tuple[str, str, list["Result"], str]] = {}
    for i, reply in enumerate(first):
        got = check_text(reply, "query", 1, cfg.max_repetition)
        if isinstance(got, Rejection):
            outcomes[i].rejection = got
            continue
        parsed = parse_query_reply(got[0], cfg.min_trace_chars, cfg.max_repetition)
        if isinstance(parsed, Rejection):
            outcomes[i].rejection = parsed
            continue
        reasoning, query, repairs = parsed
        outcomes[i].repairs += repairs
        problem = reasoning_problem(reasoning, items[i].question)
        if problem is not None:
            if not cfg.search_reason_fallback:
                outcomes[i].rejection = problem
                continue
            reasoning = template_reasoning(query)
            outcomes[i].repairs.append(f"reasoning: template ({problem.reason})")
        try:
            stats.searches += 1
            results = list(backend.search(query, cfg.search.k))
        except SearchError as e:
            outcomes[i].rejection = Rejection("search", "search_error", str(e).splitlines()[0] if str(e) else type(e).__name__,
                                              query, transient=True)
            continue
        text = fmt.render_results(results, cfg.search.max_result_chars, cfg.search.max_total_chars)
        found[i] = (reasoning, query, results, text)
    todo = sorted(found)
    second = call(teacher, [_request(cfg, grounded_messages(items[i].question, found[i][3]), cfg.max_tokens_grounded, items[i], 2)
                            for i in todo])
    stages = {"query": cfg.max_tokens_query, "grounded": cfg.max_tokens_grounded}
    for i, reply in zip(todo, second):
        got = check_text(reply, "grounded", cfg.min_answer_chars, cfg.max_repetition)
        if isinstance(got, Rejection):
            outcomes[i].rejection = got
            continue
        reasoning, query, results, text = found[i]
        # Only results the tool turn actually shows may be cited (the total cap can drop some).
        shown = len(_SHOWN_RE.findall(text))
        answer = got[0]
        cited = check_citations(answer, shown if cfg.require_citation else 0)
        if not isinstance(cited, Rejection):
            answer, more = cited
            cited = answer_problem(answer, items[i].question, cfg.min_answer_chars)
            outcomes[i].repairs += more
        if isinstance(cited, Rejection):
            cited.stage = "grounded"
            outcomes[i].rejection = cited
            continue
        it = items[i]
        outcomes[i].row = {
            "id": it.id, "type": "search",
            "messages": fmt.search_messages(it.question, decided("search", reasoning, cfg), query, text, answer),
            "meta": _meta(cfg, teacher, stages, [first[i], reply], ["query", "search", "grounded"],
                          outcomes[i].repairs, search_backend=getattr(backend, "name", type(backend).__name__),
                          search_query=query, results=[r.to_dict() for r in results[:shown]]),
        }
    return outcomes


# ----------------------------------------------------------------------------- the run


class _Queue:
    """Walks one type's shuffled pool, handing out questions until the target is reached."""

    def __init__(self, kind: str, questions: list[str], target: int, done: set[str], skip: set[str]):
        self.kind, self.questions, self.target = kind, questions, target
        self.done, self.skip = done, skip
        self.kept = sum(1 for q in questions if qs.question_id(kind, q) in done)
        self.pos = 0

    @property
    def needed(self) -> int:
        return max(0, self.target - self.kept)

    def take(self, n: int) -> list[Item]:
        items: list[Item] = []
        while len(items) < min(n, self.needed) and self.pos < len(self.questions):
            q = self.questions[self.pos]
            self.pos += 1
            qid = qs.question_id(self.kind, q)
            if qid in self.done or qid in self.skip:
                continue
            items.append(Item(qid, self.kind, q))
        return items

    @property
    def exhausted(self) -> bool:
        return self.needed > 0 and self.pos >= len(self.questions)


def _say(console: "Console", text: str, style: str | None = None) -> None:
    """One status line; never parsed as rich markup (paths and errors may hold brackets)."""
    console.print(text, style=style, markup=False, highlight=False)


class _Stop:
    """SIGINT / SIGTERM: the first asks the run to stop after the batch in flight; the second stops now."""

    def __init__(self, console: "Console"):
        self.console = console
        self.signal: str | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = name
        _say(self.console, f"{name}: finishing the rows in flight, then stopping (send it again to stop at once)",
             "yellow")

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _load_pools(cfg: "SynthConfig", console: "Console") -> dict[str, qs.Pool]:
    held_out: list[str] = []
    if cfg.eval_questions:
        if not shipped(cfg.eval_questions).exists():
            raise ThinksearchError(f"eval file not found: {cfg.eval_questions}{shipped_hint(cfg.eval_questions)} (it is used "
                                   "to decontaminate the pools; pass --eval-questions null to skip that)")
        held_out = qs.read_questions(cfg.eval_questions)
    paths = {"thinking": cfg.thinking_questions, "search": cfg.search_questions}
    targets = {"thinking": cfg.num_thinking, "search": cfg.num_search}
    pools = {k: qs.load_pool(paths[k], held_out, cfg.near_duplicate_threshold) for k in KINDS if targets[k] > 0}
    if len(pools) == 2:
        qs.separate(pools["thinking"], pools["search"])
    for kind, pool in pools.items():
        dropped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in pool.report["dropped"].items())
        _say(console, f"{kind} pool {pool.path}: {pool.loaded} questions, {len(pool.questions)} kept"
                      + (f" (dropped {dropped})" if dropped else ""))
        if not pool.questions:
            raise ThinksearchError(f"no {kind} questions left in {pool.path} after removing duplicates and eval overlaps")
    return pools


def synthesize(
    cfg: "SynthConfig",
    teacher: "Teacher | None" = None,
    search: "SearchBackend | None" = None,
    console: "Console | None" = None,
    progress: bool = True,
) -> SynthStats:
    """Run stage 1 to completion (or until interrupted); resumable. Returns the run's stats.

    ``teacher`` and ``search`` are built from ``cfg`` when not given (tests and notebooks pass
    their own). Stats are written to ``<output>.stats.json`` whatever happens.
    """
    from rich.console import Console

    # soft_wrap: messages stay one line each (no wrapping at 80 columns in logs and pipes)
    console = console or Console(stderr=True, soft_wrap=True)
    started = time.monotonic()
    stats = SynthStats(output=cfg.output, target={k: n for k, n in (("thinking", cfg.num_thinking), ("search", cfg.num_search)) if n})
    pools = _load_pools(cfg, console)
    stats.pools = {k: p.report for k, p in pools.items()}

    out = JsonlLog(cfg.output)
    existing = out.open()
    fails = JsonlLog(cfg.failures or sibling(cfg.output, ".failures.jsonl"), lock=False)
    built: list[Any] = []
    queues: dict[str, _Queue] = {}
    try:
        failures = fails.open()
        stats.dropped_partial_bytes = out.dropped_bytes + fails.dropped_bytes
        if out.dropped_bytes:
            _say(console, f"{cfg.output}: dropped a partial last line ({out.dropped_bytes} bytes) "
                 "left by an interrupted run", "yellow")
        done = {str(r.get("id")) for r in existing}
        last_failure = {str(f.get("id")): f for f in failures}
        skip = set() if cfg.retry_rejected else {i for i, f in last_failure.items() if not f.get("transient")}
        queues = {k: _Queue(k, qs.shuffled(p.questions, f"{cfg.seed}:{k}"), stats.target[k], done, skip)
                  for k, p in pools.items()}
        total_needed = sum(q.needed for q in queues.values())
        if total_needed == 0:
            _say(console, f"nothing to do: {cfg.output} already holds the requested rows")
        else:
            if teacher is None:
                from thinksearch.teacher import make_teacher

                _say(console, f"teacher: {cfg.teacher.backend} {cfg.teacher.model}")
                teacher = make_teacher(cfg.teacher)
                built.append(teacher)
            stats.teacher = teacher.name
            check = getattr(teacher, "check", None)
            if callable(check):
                check()
            if search is None and "search" in queues and queues["search"].needed:
                from thinksearch.search import make_backend

                search = make_backend(cfg.search, teacher=teacher)
                built.append(search)
            with _Stop(console) as stop:
                _loop(cfg, teacher, search, queues, stats, out, fails, console, stop, progress, total_needed)
                stats.interrupted = stop.signal
    except ThinksearchError as e:
        stats.error = str(e)
        raise
    finally:
        out.close()
        fails.close()
        for obj in reversed(built):
            close = getattr(obj, "close", None)
            if callable(close):
                close()
        for k, q in queues.items():
            stats.rows_in_file[k] = q.kept
            if q.exhausted:
                stats.exhausted.append(k)
        stats.seconds = time.monotonic() - started
        _save_stats(stats, console)
    if cfg.export_reference:
        n = export_reference(read_rows(cfg.output), cfg.export_reference)
        _say(console, f"exported {n} rows in the reference layout to {cfg.export_reference}")
    return stats


def _save_stats(stats: SynthStats, console: "Console") -> None:
    path = sibling(stats.output, ".stats.json")
    try:
        write_json_atomic(path, stats.to_dict())
    except OSError as e:  # never hide the run's own outcome behind a stats write error
        _say(console, f"could not write {path}: {e}", "yellow")


def _loop(cfg: "SynthConfig", teacher: "Teacher", search: "SearchBackend | None", queues: dict[str, _Queue],
          stats: SynthStats, out: JsonlLog, fails: JsonlLog, console: "Console", stop: _Stop,
          show_progress: bool, total: int) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from thinksearch.progress import progress

    call = _Counter(stats)
    t0 = time.monotonic()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.1f} rows/min"), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn(), TextColumn("{task.fields[note]}")]
    kinds = list(queues)
    turn = 0
    errors_in_a_row = 0
    with progress(*columns, console=console, bar=show_progress) as bar:
        task = bar.add_task("synth", total=total, rate=0.0, note="")
        while stop.signal is None:
            items: list[Item] = []
            for _ in kinds:
                kind = kinds[turn % len(kinds)]
                turn += 1
                items = queues[kind].take(cfg.batch_size)
                if items:
                    break
            if not items:
                break
            if items[0].type == "thinking":
                outcomes = thinking_batch(items, teacher, cfg, call)
            else:
                assert search is not None
                outcomes = search_batch(items, teacher, search, cfg, call, stats)
            for o in outcomes:
                for rep in o.repairs:
                    stats.repairs[rep] += 1
                if o.row is not None:
                    out.append(o.row)
                    queues[o.item.type].done.add(o.item.id)
                    queues[o.item.type].kept += 1
                    stats.kept[o.item.type] += 1
                    errors_in_a_row = 0
                    bar.advance(task)
                    continue
                rej = o.rejection
                assert rej is not None
                (stats.failed if rej.transient else stats.rejected)[rej.label] += 1
                fails.append({"id": o.item.id, "type": o.item.type, "question": o.item.question, "stage": rej.stage,
                              "reason": rej.reason, "detail": rej.detail, "text": fmt.cap(rej.text, 500),
                              "transient": rej.transient, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
                errors_in_a_row = errors_in_a_row + 1 if rej.transient else 0
                if errors_in_a_row >= cfg.max_consecutive_errors:
                    where = "search backend" if rej.reason == "search_error" else "teacher"
                    raise ThinksearchError(
                        f"stopped after {errors_in_a_row} {rej.reason.replace('_', ' ')}s in a row (last: {rej.detail}); "
                        f"fix the {where} and rerun the same command to resume")
            minutes = (time.monotonic() - t0) / 60
            rejected = sum(stats.rejected.values()) + sum(stats.failed.values())
            bar.update(task, rate=sum(stats.kept.values()) / minutes if minutes > 0 else 0.0,
                       note=f"{rejected} rejected" if rejected else "")
    if stop.signal is not None:
        _say(console, f"stopped by {stop.signal} after finishing the rows in flight; "
                      "rerun the same command to resume")
