"""Building SFT rows: one batch of questions through the teacher's stages, gated, made into rows.

A thinking batch asks every question's analysis, then every answer; a search batch asks every
reason + query, runs the searches, then asks every grounded answer. Asking a stage for the
whole batch at once lets a local teacher generate in one batch and a server see concurrent
requests. Tags, the system prompt and the tool-call JSON are inserted by :mod:`thinksearch.format`;
the only text code writes into a row is the decision line here, and the template reasoning and
the abstaining answer of :mod:`.templates`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from thinksearch import format as fmt
from thinksearch.synth.gates import (_SHOWN_RE, Rejection, answer_problem, check_citations, check_text,
                                     echoes_prompt, invented_in_query, parse_query_reply, pasted_result, reasoning_problem,
                                     slot_problem, trimmed, unsupported_in_answer)
from thinksearch.synth.output import SynthStats
from thinksearch.synth.prompts import (BRIEF_TASK, analysis_messages, answer_messages, grounded_messages, hint_messages,
                                       query_messages)
from thinksearch.synth.templates import abstention, template_reasoning, with_opening
from thinksearch.synth.verify import Tried, candidate_seed, candidates, hint_answer, pick, rationalised
from thinksearch.teacher import TeacherReply, TeacherRequest

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.config import SynthConfig
    from thinksearch.questions import Question
    from thinksearch.search.base import Result, SearchBackend
    from thinksearch.teacher import Teacher


TEMPLATE_REPAIR = "reasoning: template"
"""How a row records that its reasoning is :func:`.templates.template_reasoning`: this repair in ``meta.gates.repairs``."""
TRIM_REPAIR = "analysis: trimmed"
"""How a thinking row records that its trace was cut at its last full sentence (``trim_analysis``)."""
ABSTAINED = "abstained"
"""``meta.answer`` of a search row none of whose results concerned the question: its answer is
:func:`.templates.abstention`, written by code (the teacher wrote the rest)."""


# Written by code, like the tags (``decision_line``): the teacher's text follows on the next line.
DECISION_LINES = fmt.DECISION_LINES


def decided(kind: str, trace: str, cfg: "SynthConfig") -> str:
    """``trace`` opened with the decision line of ``kind`` when ``cfg.decision_line`` is set.

    >>> from thinksearch.config import SynthConfig
    >>> decided("search", "金价每天都在变。", SynthConfig(decision_line=True))
    '这个问题要用到会变化的最新信息，需要搜索。\\n金价每天都在变。'
    """
    return f"{DECISION_LINES[kind]}\n{trace}" if cfg.decision_line else trace


@dataclass
class Item:
    id: str
    type: str
    question: str
    gold: "Question | None" = None
    """What the pool file says about the question (category, gold); None: nothing."""


@dataclass
class Outcome:
    item: Item
    row: dict[str, Any] | None = None
    rejection: Rejection | None = None
    repairs: list[str] = field(default_factory=list)
    tried: Tried | None = None
    """A gold-checked question: whether its first / any candidate was right (pass@1, pass@k)."""


def _seed(cfg: "SynthConfig", item: Item, stage: int) -> int:
    return (cfg.seed * 1_000_003 + int(item.id[2:10], 16) * 7 + stage) % (2**31)


def _temperature(cfg: "SynthConfig", k: int) -> float:
    return cfg.sample_temperature if k > 1 else cfg.temperature


def _request(cfg: "SynthConfig", messages: list[dict[str, Any]], max_tokens: int, item: Item, stage: int,
             j: int = 0, k: int = 1) -> TeacherRequest:
    """Candidate ``j`` of ``k`` of one stage of ``item`` (k > 1: gold-checked sampling)."""
    return TeacherRequest(messages, max_tokens=max_tokens, temperature=_temperature(cfg, k), top_p=cfg.top_p,
                          seed=candidate_seed(_seed(cfg, item, stage), j))


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


def _category(item: Item) -> dict[str, str]:
    """``{"category": …}`` when the pool names one: the data report counts rows by it, and a row
    outlives the pool file it came from (which may be edited or gone by then)."""
    category = _category_name(item)
    return {"category": category} if category else {}


def _meta(cfg: "SynthConfig", teacher: "Teacher", stages: dict[str, int], replies: list[TeacherReply],
          passed: list[str], repairs: list[str], k: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "teacher": teacher.name,
        "sampling": {"temperature": _temperature(cfg, k), "top_p": cfg.top_p, "seed": cfg.seed, "max_tokens": stages},
        "finish_reasons": [r.finish_reason for r in replies],
        "tokens": {"prompt": sum(r.prompt_tokens for r in replies), "completion": sum(r.completion_tokens for r in replies)},
        "gates": {"passed": passed, "repairs": repairs},
        **extra,
    }


def _thinking_candidates(slots: Sequence[tuple[Item, int, int]], prompts: Sequence[list[dict[str, Any]]], stage: int,
                         teacher: "Teacher", cfg: "SynthConfig", call: Any) -> list[Outcome]:
    """Candidate ``j`` of ``k`` of each item in ``slots``: the analysis asked with ``prompts``
    (seeded as ``stage``), then the answer given the analysis (``stage + 1``); one outcome each."""
    gate = (cfg.max_repetition,)
    first = call(teacher, [_request(cfg, m, cfg.max_tokens_analysis, it, stage, j, k) for (it, j, k), m in zip(slots, prompts)])
    cands = [Outcome(it) for it, _, _ in slots]
    traces: dict[int, tuple[str, str]] = {}
    for s, reply in enumerate(first):
        if cfg.trim_analysis and reply.finish_reason == "length":
            cut = trimmed(reply, use_reasoning=True)
            if cut is not None:
                reply = cut
                cands[s].repairs.append(TRIM_REPAIR)
        got = check_text(reply, "analysis", cfg.min_trace_chars, *gate, use_reasoning=True)
        if not isinstance(got, Rejection) and cfg.brief_traces:
            got = echoes_prompt(got[0], BRIEF_TASK) or got
        if isinstance(got, Rejection):
            cands[s].rejection = got
        else:
            traces[s] = got
    todo = sorted(traces)
    second = call(teacher, [_request(cfg, answer_messages(slots[s][0].question, traces[s][0]), cfg.max_tokens_answer,
                                     slots[s][0], stage + 1, slots[s][1], slots[s][2]) for s in todo])
    stages = {"analysis": cfg.max_tokens_analysis, "answer": cfg.max_tokens_answer}
    for s, reply in zip(todo, second):
        it, _, k = slots[s]
        got = check_text(reply, "answer", cfg.min_answer_chars, *gate)
        if not isinstance(got, Rejection):
            got = answer_problem(got[0], it.question, cfg.min_answer_chars) or got
        if isinstance(got, Rejection):
            got.stage = "answer"
            cands[s].rejection = got
            continue
        trace, source = traces[s]
        cands[s].row = {
            "id": it.id, "type": "thinking",
            "messages": fmt.thinking_messages(it.question, decided("thinking", trace, cfg), got[0]),
            "meta": _meta(cfg, teacher, stages, [first[s], reply], ["analysis", "answer"], cands[s].repairs, k, trace_source=source,
                          **_category(it)),
        }
    return cands


def thinking_batch(items: Sequence[Item], teacher: "Teacher", cfg: "SynthConfig", call: Any) -> list[Outcome]:
    """Stage 1 (analysis) for every candidate, then stage 2 (answer given the analysis).

    An item checked against gold has k candidates (:func:`.verify.candidates`), asked in the
    same two batched calls as every other item's, so k costs batch width, not extra rounds;
    :func:`.verify.pick` then keeps the first candidate that matches gold. With ``gold_hint``,
    the items no candidate got right are asked once more, together, with the answer as a hint.
    """
    slots = [(it, j, k) for it in items for k in (candidates(cfg, it),) for j in range(k)]
    cands = _thinking_candidates(slots, [analysis_messages(it.question, cfg.brief_traces) for it, _, _ in slots], 1, teacher, cfg, call)
    outcomes = []
    for it in items:
        mine = [c for c, (ci, _, _) in zip(cands, slots) if ci is it]
        (row, rejection), tried = pick(cfg, it, mine)
        outcomes.append(Outcome(it, row, rejection, [r for c in mine for r in c.repairs], tried))
    if cfg.gold_hint:
        missed = [n for n, o in enumerate(outcomes) if o.rejection is not None and o.rejection.label == "gold/mismatch"]
        hinted = [(items[n], 0, 1) for n in missed]
        prompts = [hint_messages(it.question, hint_answer(it.gold), cfg.brief_traces) for it, _, _ in hinted]
        # Seeded as stages 3 and 4: a rerun asks the same, and no seed of stages 1-2 is reused.
        for n, cand in zip(missed, _thinking_candidates(hinted, prompts, 3, teacher, cfg, call)):
            outcomes[n].row, outcomes[n].rejection = rationalised(items[n], cand)
            outcomes[n].repairs += cand.repairs
    return outcomes


def _probed_unknown(item: Item) -> bool:
    """A thinking-pool question in a search batch: one the student got wrong when probed (.knowledge)."""
    return item.type == "thinking"


def _category_name(item: Item) -> str | None:
    return item.gold.category if item.gold is not None else None


def search_batch(items: Sequence[Item], teacher: "Teacher", backend: "SearchBackend", cfg: "SynthConfig",
                 call: Any, stats: SynthStats) -> list[Outcome]:
    """Stage 1 (reason + query) for every item, the searches, then stage 2 (grounded answer).

    With ``relevance_gate``, only the results that concern the question are shown (in the tool
    turn and to the teacher); an item with none gets no stage 2: its answer is the code-written
    :func:`.templates.abstention`, and the tool turn shows what the search returned, so the
    student sees unrelated results answered by saying so. With ``slot_gate``, a grounded answer
    to a question asking for a clock time or a day that gives neither is rejected when the
    results give one, and replaced by an abstention that names what is missing when they do not.
    With ``search_gold``, a question whose pool row carries gold is checked against it: the
    teacher answers only when a shown result holds the key fact (else code abstains), and its
    answer must state that fact (else grounded/misses_gold).
    """
    from thinksearch.search.base import SearchError
    from thinksearch.synth.relevance import relevant, result_text

    first = call(teacher, [_request(cfg, query_messages(it.question), cfg.max_tokens_query, it, 1) for it in items])
    outcomes = [Outcome(it) for it in items]
    golds = [_search_gold(cfg, it) for it in items]
    found: dict[int, tuple[str, str, list["Result"], str]] = {}
    abstaining: dict[int, tuple[str, str, list["Result"], str, str | None]] = {}
    for i, reply in enumerate(first):
        it = items[i]
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
        invented = invented_in_query(query, it.question) if cfg.query_gate else None
        if invented is not None:
            outcomes[i].rejection = invented
            continue
        # The reason to search a question the student got wrong when probed is that
        # measurement, which code states; the teacher's reasons say "this changes", which is
        # false of a stable fact.
        why = "knowledge_probe" if _probed_unknown(it) else None
        if why is None:
            problem = reasoning_problem(reasoning, it.question)
            if problem is not None and not cfg.search_reason_fallback:
                outcomes[i].rejection = problem
                continue
            why = problem.reason if problem is not None else None
        if why is not None:
            # Seeded like the row's stage 1: a rerun writes the same wording.
            reasoning = template_reasoning(query, _category_name(it), _seed(cfg, it, 1))
            outcomes[i].repairs.append(f"{TEMPLATE_REPAIR} ({why})")
        try:
            stats.searches += 1
            results = list(backend.search(query, cfg.search.k))
        except SearchError as e:
            outcomes[i].rejection = Rejection("search", "search_error", str(e).splitlines()[0] if str(e) else type(e).__name__,
                                              query, transient=True)
            continue
        gold = golds[i]
        if cfg.relevance_gate or gold is not None:
            on_topic = relevant(it.question, results, cfg.relevance_threshold)
            kept = [r for r, ok in zip(results, on_topic) if ok or (gold is not None and _holds(gold, result_text(r)))]
            if gold is not None and not (gold.answerable and _holds(gold, _render(cfg, kept))):
                # The gold says what came back cannot answer: on-topic results lacking the fact are
                # shown as such (meta.missing), unrelated ones as unrelated.
                shown = kept if any(on_topic) else results
                abstaining[i] = (reasoning, query, shown, _render(cfg, shown), MISSING_ANSWER if any(on_topic) else None)
                continue
            if not kept:
                abstaining[i] = (reasoning, query, results, _render(cfg, results), None)
                continue
            results = kept
        found[i] = (reasoning, query, results, _render(cfg, results))
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
        if not isinstance(cited, Rejection):
            cited = pasted_result(answer, [r.title for r in results[:shown]])
        if not isinstance(cited, Rejection) and cfg.number_gate:
            cited = unsupported_in_answer(answer, items[i].question, text)
        gold = golds[i]
        if not isinstance(cited, Rejection) and gold is not None and not _holds(gold, answer, anywhere=False):
            cited = Rejection("grounded", "misses_gold", f"the answer does not state {' / '.join(gold.answers)}", answer)
        if not isinstance(cited, Rejection) and cfg.slot_gate:
            missing = slot_problem(answer, items[i].question, text)
            if isinstance(missing, str):  # the results concern the question but do not say it
                abstaining[i] = (reasoning, query, results, text, missing)
                continue
            cited = missing
        if isinstance(cited, Rejection):
            cited.stage = "grounded"
            outcomes[i].rejection = cited
            continue
        outcomes[i].row = _search_row(items[i], cfg, teacher, backend, stages, [first[i], reply], outcomes[i].repairs,
                                      reasoning, query, results[:shown], text, with_opening(answer, cfg.answer_opening),
                                      verified=gold is not None)
    for i, (reasoning, query, results, text, missing) in sorted(abstaining.items()):
        shown = len(_SHOWN_RE.findall(text))
        outcomes[i].row = _search_row(items[i], cfg, teacher, backend, {"query": cfg.max_tokens_query}, [first[i]],
                                      outcomes[i].repairs, reasoning, query, results[:shown], text,
                                      abstention(items[i].question, query, results[:shown], missing), answer=ABSTAINED,
                                      missing=missing, verified=golds[i] is not None)
    return outcomes


MISSING_ANSWER = "答案"
"""``meta.missing`` of a row whose results concern the question but, by the pool's gold, do not answer it."""


def _search_gold(cfg: "SynthConfig", item: Item) -> "Question | None":
    """The pool's gold for a search question (``search_gold`` on, ``answerable`` set), else None."""
    g = item.gold
    return g if cfg.search_gold and item.type == "search" and g is not None and g.answerable is not None else None


def _holds(gold: "Question", text: str, anywhere: bool = True) -> bool:
    """Does ``text`` state the gold key fact (the eval's scorer; ``anywhere``: not just its conclusion)?"""
    from thinksearch.scoring import matches_gold

    return bool(gold.answers) and matches_gold(text, gold.answers, gold.match, anywhere)


def _render(cfg: "SynthConfig", results: Sequence["Result"]) -> str:
    return fmt.render_results(results, cfg.search.max_result_chars, cfg.search.max_total_chars)


def _search_row(it: Item, cfg: "SynthConfig", teacher: "Teacher", backend: "SearchBackend", stages: dict[str, int],
                replies: list[TeacherReply], repairs: list[str], reasoning: str, query: str, results: Sequence["Result"],
                text: str, answer_text: str, answer: str = "teacher", missing: str | None = None,
                verified: bool = False) -> dict[str, Any]:
    # An abstaining row either passed no relevance gate (nothing was relevant) or its results
    # lack what the question asks for (``missing``, meta.missing); its grounded answer is code's.
    passed = ["query", "search"] + (["relevance"] if cfg.relevance_gate and (answer == "teacher" or missing) else []) \
        + (["grounded"] if answer == "teacher" else [])
    extra = {"missing": missing} if missing is not None else {}
    if verified:  # checked against the pool's gold: states the key fact, or abstains where gold says it must
        extra["verified"] = "gold"
    return {
        "id": it.id, "type": "search",
        "messages": fmt.search_messages(it.question, decided("knowledge" if _probed_unknown(it) else "search", reasoning, cfg), query, text, answer_text),
        "meta": _meta(cfg, teacher, stages, replies, passed, repairs,
                      search_backend=getattr(backend, "name", type(backend).__name__), search_query=query,
                      results=[r.to_dict() for r in results], answer=answer, **extra, **_category(it)),
    }
