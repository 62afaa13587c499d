"""Quality gates on teacher text (DESIGN.md section 3).

Each check returns the usable text (cleaned, sometimes repaired, the repair named) or a
:class:`Rejection` with the stage and reason, which the run counts and logs to the failures
file. The gates are pure functions of the text, so they are tested one by one without a teacher.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Sequence

from thinksearch import format as fmt
from thinksearch import questions as qs
from thinksearch.teacher import TeacherReply


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


_SENTENCE_END_RE = re.compile(r"[。！？!?；;]|\n")
_STATEMENT_RE = re.compile(r"[^。！!]*[。！!]")  # clauses up to a full stop or exclamation mark


def trimmed(reply: TeacherReply, use_reasoning: bool = False) -> TeacherReply | None:
    """A reply cut off by its token limit, ended after its last complete sentence as if it had
    stopped there; None when that keeps less than half of it (what is left is no trace).

    A sentence ends at a full-width stop, ``!?;`` or a line end (a ``.`` may be a decimal point),
    but not where the line is a heading or a label that announces what was cut (``### 结论``,
    ``2. **计算体积**：``): a trace must not end on a promise.

    >>> trimmed(TeacherReply("先算总价：3件共90元。再减去优惠：90-10", finish_reason="length")).text
    '先算总价：3件共90元。'
    >>> trimmed(TeacherReply("1. 正方体的棱长是3厘米，每个面都是正方形。\\n2. **计算体积**：\\n", finish_reason="length")).text
    '1. 正方体的棱长是3厘米，每个面都是正方形。'
    >>> trimmed(TeacherReply("好。先算总价：3件共90元，再减去优惠", finish_reason="length")) is None
    True
    """
    field = "reasoning" if use_reasoning and reply.reasoning else "text"
    text = (getattr(reply, field) or "").rstrip()
    for m in reversed(list(_SENTENCE_END_RE.finditer(text))):
        if m.end() < len(text) / 2:
            break
        kept = text[:m.end()].rstrip()
        last = kept.splitlines()[-1].strip() if kept else ""
        if last and not last.endswith(("：", ":")) and not last.startswith("#"):
            return replace(reply, **{field: kept}, finish_reason="stop")
    return None


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
# A result pasted anywhere in an answer, also after a lead-in ("……排名：[1] title — snippet").
_PASTED_RE = re.compile(r"\[\d+\] [^\n\[\]]{1,80} — ")
ECHO_SIMILARITY = 0.8


def answer_problem(answer: str, question: str, min_chars: int) -> Rejection | None:
    """Gates on a final answer beyond the text checks: it must say something of its own.

    Rejects an answer that is only citations, that copies a line of the tool turn (``[1] 标题 — …``,
    a small teacher's favourite shortcut), or that merely repeats the question.

    >>> answer_problem("[2]", "最新的Python版本是多少？", 2).reason
    'too_short'
    >>> answer_problem("[1] 美元兑人民币汇率 — 摘要 (新闻, 2025-06-01)", "今天美元汇率多少？", 2).reason
    'copied_results'
    >>> answer_problem("全球云计算市场份额排名：[1] 2024年全球智能手机出货量 — 根据IDC的数据……", "全球云计算市场份额排名？", 2).reason
    'copied_results'
    >>> answer_problem("上海到杭州的高铁今天还有票吗？[1]", "上海到杭州的高铁今天还有票吗？", 2).reason
    'echoes_question'
    >>> answer_problem("今天的汇率约为7.1[1]。", "今天美元汇率多少？", 2) is None
    True

    Nor may it be only a source line, or end in a question (a small teacher's way of saying
    nothing: "新能源汽车购置税免吗？[1]" for "新能源汽车购置税还免吗？").

    >>> answer_problem("（thinksearch 离线语料（整理自公开资料，非实时）, 2024-10-15）", "各省公务员联考笔试是在哪天？", 2).reason
    'source_only'
    >>> answer_problem("新能源汽车购置税免吗？[1]", "新能源汽车购置税还免吗？", 2).reason
    'asks_back'
    """
    body = _CITE_RE.sub("", answer).strip()
    if len(body) < min_chars:
        return Rejection("", "too_short", f"{len(body)} < {min_chars} characters besides citations", answer)
    if _PASTED_RE.search(answer):
        return Rejection("", "copied_results", "a line of the answer is a copied search result", answer)
    if qs.similarity(body, question) >= ECHO_SIMILARITY:
        return Rejection("", "echoes_question", f"similarity to the question {qs.similarity(body, question):.2f}", answer)
    if len(_unbracketed(body).strip(" 。，,.;；")) < min_chars:
        return Rejection("", "source_only", "only a bracketed source line", answer)
    if body.endswith(("？", "?")):
        return Rejection("", "asks_back", "the answer ends in a question", answer)
    return None


def echoes_prompt(trace: str, task: str, run: int = 6) -> Rejection | None:
    """Reject a trace that repeats ``run`` or more characters of the task's wording in a row:
    a trace that writes the instruction as its own labels ("最后一句给出结论：……") teaches the
    student those labels instead of reasoning.

    >>> echoes_prompt("最后一句给出结论：甲说的是真话。", "用两三句话写出推理，最后一句给出结论。").detail
    "repeats '最后一句给出'"
    >>> echoes_prompt("甲和丙的话互相矛盾，所以乙说的是真话。", "用两三句话写出推理，最后一句给出结论。") is None
    True
    """
    hit = next((task[i:i + run] for i in range(len(task) - run + 1) if task[i:i + run] in trace), None)
    return None if hit is None else Rejection("analysis", "echoes_prompt", f"repeats {hit!r}", trace)


_BRACKETED_RE = re.compile(r"[（(][^（）()]*[）)]")


def _unbracketed(text: str) -> str:
    """``text`` without its bracketed parts, nested ones too."""
    while (less := _BRACKETED_RE.sub("", text)) != text:
        text = less
    return text


# What a question asks for when it names the unit of its answer: a clock time (几点) or a day
# (哪天). An answer that gives another unit presents the passage as answering what it does not:
# "最早一班高铁几点发车？" → the line's opening date, "哪天举行？" → the year the race began.
_SLOTS = (
    ("具体时间（几点）", re.compile(r"几点|几时"),
     re.compile(r"\d{1,2}\s*[:：]\s*\d{2}|\d{1,2}\s*点|[零一二两三四五六七八九十]{1,3}点")),
    ("具体日期（哪一天）", re.compile(r"哪一?天|几号|几月几|哪日|什么日子"),
     re.compile(r"\d{1,2}\s*[日号]|\d{1,2}\s*/\s*\d{1,2}\b|(?:周|星期|礼拜)[一二三四五六日天]|[一二三四五六七八九十]{1,3}[日号]")),
)


def asked_slot(question: str) -> tuple[str, re.Pattern[str]] | None:
    """What ``question`` asks for, when it names it (a clock time, a day), and the pattern of an answer giving it.

    >>> asked_slot("北京南站到上海虹桥最早一班高铁几点发车？")[0], asked_slot("英国首相是谁？")
    ('具体时间（几点）', None)
    """
    return next(((name, given) for name, asks, given in _SLOTS if asks.search(question)), None)


def slot_problem(answer: str, question: str, results_text: str) -> Rejection | str | None:
    """Gate on a grounded answer to a question that asks for a clock time or a day.

    None when the answer gives one (or the question asks for neither); a Rejection when the
    results give one and the answer does not (the teacher misread them); else the missing
    slot's name, for an abstaining answer: the results concern the question but do not say it.

    >>> slot_problem("F1中国大奖赛在2024年4月19日至21日举行[1]。", "F1中国大奖赛哪天在上海举行？", "…4月19日至21日…") is None
    True
    >>> slot_problem("上海国际赛车场自2004年起举办F1中国大奖赛。", "F1中国大奖赛哪天在上海举行？", "…4月19日至21日…").reason
    'misses_slot'
    >>> slot_problem("最早一班高铁发车于2011年6月30日。", "最早一班高铁几点发车？", "2011年6月30日开通运营")
    '具体时间（几点）'
    """
    slot = asked_slot(question)
    if slot is None or slot[1].search(answer):
        return None
    name, given = slot
    if given.search(results_text):
        return Rejection("grounded", "misses_slot", f"the question asks for {name}; the results give one, the answer does not",
                         answer)
    return name


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


def invented_in_query(query: str, question: str) -> Rejection | None:
    """Gate on a search query: it may not carry numbers the question does not (a version, a
    date, a figure the teacher made up and then searched for, "VS Code 最近一次更新了 2023.7.2").

    Numbers compare by value with the eval's reader (:func:`thinksearch.scoring.numbers`), so
    ``一年期`` in the question allows ``1年期`` in the query.

    >>> invented_in_query("VS Code 最近一次更新了 2023.7.2。", "VS Code最新版本是多少？").reason
    'query_invented'
    >>> invented_in_query("iPhone 16 价格", "iPhone 16多少钱？") is None
    True

    Nor may it share none of the question's key terms (:func:`.relevance.key_terms`): a query
    for a name the teacher made up ("艾瑞克" for "王者荣耀新出的英雄是谁？") finds nothing about the
    question, and the row would teach searching for a guess.

    >>> invented_in_query("艾瑞克", "王者荣耀新出的英雄是谁？").reason
    'query_off_topic'

    Nor may it state something (a clause ended by 。 or ！ that the question does not hold): the
    teacher's guess at the answer, searched as if it were the subject ("温度高，静电电会降低门把手的温度。"
    for the static-shock question), teaches searching for a claim.

    >>> invented_in_query("星巴克全天营业。", "星巴克营业到几点？").reason
    'query_statement'
    >>> invented_in_query("星巴克营业到几点？", "星巴克营业到几点？") is None
    True
    """
    from thinksearch import scoring
    from thinksearch.synth.relevance import coverage, key_terms

    allowed = set(scoring.numbers(question))
    extra = [n for n in scoring.numbers(query) if n not in allowed]
    if extra:
        shown = ", ".join(dict.fromkeys(format(n, "f") for n in extra))
        return Rejection("query", "query_invented", f"numbers not in the question: {shown}", query)
    terms = key_terms(question)
    if terms and coverage(terms, query) == 0:
        return Rejection("query", "query_off_topic", f"none of the question's key terms ({', '.join(t.word for t in terms)})", query)
    said = [c for c in _STATEMENT_RE.findall(query) if qs.key(c) not in qs.key(question)]
    if said:
        return Rejection("query", "query_statement", f"states what the question does not: {said[0].strip()}", query)
    return None


def pasted_result(answer: str, titles: Sequence[str]) -> Rejection | None:
    """Gate on a grounded answer: a result's title followed by a dash is that result pasted whole
    (the tool turn's "title — text" layout, which the teacher also rewrites as "title——text").

    >>> pasted_result("北京冬季供暖与寒冷天气——北京的法定供暖期一般为……", ["北京冬季供暖与寒冷天气"]).reason
    'copied_results'
    >>> pasted_result("北约秘书长吕特（2024年10月起）[1]", ["北约秘书长吕特（2024年10月起）"]) is None
    True
    """
    for title in titles:
        title = " ".join(title.split())
        if title and re.search(re.escape(title) + r"\s*[—–-]", answer):
            return Rejection("grounded", "copied_results", f"the result “{title[:24]}” pasted whole", answer)
    return None


def unsupported_in_answer(answer: str, question: str, results_text: str) -> Rejection | None:
    """Gate on a grounded answer: every number in it must be in the question or the results.

    The same check the eval reports as the unsupported-number rate
    (:func:`thinksearch.scoring.unsupported_numbers`), so a row that passes cannot teach the
    student what the eval counts against it.

    >>> unsupported_in_answer("金价约3500美元[1]，涨了27%。", "金价多少？", "[1] 金价接近3500美元").reason
    'unsupported_numbers'
    >>> unsupported_in_answer("金价约3,500美元[1]。", "金价多少？", "[1] 金价接近3500美元") is None
    True
    """
    from thinksearch import scoring

    support = scoring.unsupported_numbers(answer, question, results_text)
    if support.unsupported:
        shown = ", ".join(dict.fromkeys(support.unsupported))
        return Rejection("grounded", "unsupported_numbers", f"numbers in neither the question nor the results: {shown}",
                         answer)
    return None
