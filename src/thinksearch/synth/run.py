"""The staged run: pools in, rows out, resumable and interruptible (DESIGN.md sections 2, 3).

The pools are loaded and decontaminated, then walked in seeded order, skipping questions whose
row is already in the output and (unless ``--retry-rejected``) those a gate rejected before;
batches alternate between the types until each target is met or its pool runs out. SIGINT /
SIGTERM finish the batch in flight; many transient failures in a row stop the run, since the
backend is down and burning through the pool would only fill the failures file.

Run as: ``thinksearch synth --config configs/quickstart.yaml``.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from thinksearch import format as fmt
from thinksearch import questions as qs
from thinksearch.errors import ThinksearchError
from thinksearch.files import shipped, shipped_hint, write_json_atomic
from thinksearch.questions import KNOWLEDGE
from thinksearch.synth.gates import Rejection
from thinksearch.synth.knowledge import probe
from thinksearch.synth.output import JsonlLog, SynthStats, export_reference, read_rows, sibling
from thinksearch.synth.report import is_template
from thinksearch.synth.rows import ABSTAINED, Item, _Counter, search_batch, thinking_batch
from thinksearch.synth.verify import UNCATEGORISED, GoldTally

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from thinksearch.config import SynthConfig
    from thinksearch.search.base import SearchBackend
    from thinksearch.teacher import Teacher

KINDS = ("thinking", "search")


class _Queue:
    """Walks one type's shuffled pool, handing out questions until the target is reached.

    With ``max_unverified`` set (gold checking on), questions without gold are handed out only
    while the rows of such questions stay under it; past it they are passed over, not rejected.
    """

    def __init__(self, kind: str, questions: list[str], target: int, done: set[str], skip: set[str],
                 pool: qs.Pool | None = None, max_unverified: int | None = None, unverified: int = 0):
        self.kind, self.questions, self.target = kind, questions, target
        self.done, self.skip = done, skip
        self.kept = sum(1 for q in questions if qs.question_id(kind, q) in done)
        self.pos = 0
        self.pool, self.max_unverified, self.unverified = pool, max_unverified, unverified
        self.passed_over = 0
        """Questions not asked because a cap was full: on the thinking queue, questions without gold
        (the unverified cap); on the search queue, ones the gold marks unanswerable (``full``)."""
        self.full: "_AbstentionCap | None" = None
        """Set on the search queue with ``search_gold``: questions the gold marks unanswerable are
        passed over while this cap is full, since their rows could only abstain and be dropped."""

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
            entry = self.pool.entry(q) if self.pool is not None else None
            if self.max_unverified is not None and not (entry and entry.checkable):
                # Counted with the ones already in this batch: their rows are not written yet.
                if self.unverified + sum(not (i.gold and i.gold.checkable) for i in items) >= self.max_unverified:
                    self.passed_over += 1
                    continue
            if self.full is not None and entry is not None and entry.answerable is False and not self.full.room(
                    sum(i.gold is not None and i.gold.answerable is False for i in items), len(items)):
                self.passed_over += 1  # not a rejection: a rerun with room under the cap asks it
                continue
            items.append(Item(qid, self.kind, q, entry))
        return items

    @property
    def exhausted(self) -> bool:
        return self.needed > 0 and self.pos >= len(self.questions)


class _AbstentionCap:
    """Abstaining search rows (no relevant result, or none giving the time or day asked for;
    resumed rows count) against ``max_abstaining_share`` of the search rows written so far.

    Without a cap the shipped corpus would make most search rows abstain (15 of 24 in a real
    synth), and the student would learn to give up on questions the results do answer. The
    share holds at every point of the run, not only at its target: a cap of the rows asked
    for let a synth stopped early keep 31 abstentions among 46 search rows, and the student
    trained on them abstained on 44 of 46 questions whose results held the answer.
    """

    def __init__(self, share: float, target: int, existing: list[dict[str, Any]]):
        self.share = share
        self.cap = int(share * target + 1e-9)
        self.rows = sum(map(self.capped, existing))
        self.search_rows = sum(r.get("type") == "search" for r in existing)

    @staticmethod
    def capped(row: dict[str, Any]) -> bool:
        """An abstaining search row that counts against the cap.

        A knowledge question the student got wrong when probed (:mod:`.knowledge`) does not:
        the shipped corpus holds fresh data only, so its search abstains, and dropping it would
        leave the student answering such questions from a memory known to be wrong.
        """
        meta = row.get("meta") or {}
        return row.get("type") == "search" and meta.get("answer") == ABSTAINED and meta.get("category") not in KNOWLEDGE

    def room(self, pending: int = 0, pending_rows: int = 0) -> bool:
        """Whether one more abstaining row keeps the share, with ``pending`` abstentions among
        ``pending_rows`` search rows not written yet."""
        rows = self.rows + pending + 1
        return rows <= self.cap and rows <= self.share * (self.search_rows + pending_rows + 1) + 1e-9

    def check(self, row: dict[str, Any], ahead: int = 0) -> Rejection | None:
        """None (and the row counted) while there is room, else why the search row is dropped.

        ``ahead``: search rows of the same batch, not abstaining, that are written after it.
        """
        if not self.capped(row):
            self.search_rows += 1
            return None
        if not self.room(pending_rows=ahead):
            missing = row["meta"].get("missing")
            why = f"the results lack the {missing} asked for" if missing else "no relevant result"
            return Rejection("search", "abstention_cap", f"{why}, and {self.rows} of {self.search_rows} search rows "
                             f"abstain already (--max-abstaining-share {self.share:g}, at most {self.cap} in all)",
                             str(row["meta"].get("search_query", "")))
        self.rows += 1
        self.search_rows += 1
        return None


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
        queues = {k: _Queue(k, qs.shuffled(p.questions, f"{cfg.seed}:{k}"), stats.target[k], done, skip, p)
                  for k, p in pools.items()}
        abstaining = _AbstentionCap(cfg.max_abstaining_share, stats.target.get("search", 0), existing)
        if cfg.search_gold and "search" in queues:
            queues["search"].full = abstaining
        if cfg.gold_checked and "thinking" in queues:
            stats.gold = GoldTally(cfg.samples_per_question)
            q = queues["thinking"]
            # A row resumed from an earlier run counts against the cap by its label.
            q.unverified = sum(1 for r in existing if r.get("type") == "thinking"
                               and (r.get("meta") or {}).get("verified") == "none")
            q.max_unverified = int(cfg.max_unverified_share * q.target + 1e-9)
            if not any(c["with_gold"] for c in pools["thinking"].gold_counts().values()):
                _say(console, f"gold checking is on but {pools['thinking'].path} carries no gold (answers / match): "
                              f"every thinking row would be unverified, and the cap (--max-unverified-share) allows {q.max_unverified}", "yellow")
        total_needed = sum(q.needed for q in queues.values())
        if total_needed == 0:
            _say(console, f"nothing to do: {cfg.output} already holds the requested rows")
        else:
            if teacher is None:
                from thinksearch.teacher_choice import make_teacher

                teacher = make_teacher(cfg.teacher)
                built.append(teacher)
                _say(console, f"teacher: {teacher.name}")
            stats.teacher = teacher.name
            check = getattr(teacher, "check", None)
            if callable(check):
                check()
            student = teacher
            if cfg.knowledge_probe and cfg.probe_model is not None:
                from thinksearch.teacher_choice import make_teacher

                student = make_teacher(dataclasses.replace(cfg.teacher, model=cfg.probe_model))
                built.append(student)
                _say(console, f"student (knowledge probe): {student.name}")
            # A knowledge question the student does not know becomes a search row (.knowledge).
            searching = ("search" in queues and queues["search"].needed) or (cfg.knowledge_probe and "thinking" in queues)
            if search is None and searching:
                from thinksearch.search import make_backend

                search = make_backend(cfg.search, teacher=teacher)
                built.append(search)
            with _Stop(console) as stop:
                _loop(cfg, teacher, student, search, queues, abstaining, stats, out, fails, console, stop, progress,
                      total_needed)
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
        if stats.gold is not None and "thinking" in queues:
            q = queues["thinking"]
            stats.unverified = {"rows_in_file": q.unverified, "cap": q.max_unverified, "passed_over": q.passed_over}
        if "search" in queues and queues["search"].passed_over:
            _say(console, f"{queues['search'].passed_over} search questions the gold marks unanswerable were not asked: "
                          f"the abstention cap (--max-abstaining-share) was full")
        stats.seconds = time.monotonic() - started
        _save_stats(stats, console)
        _save_report(cfg, pools, console)
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


def _save_report(cfg: "SynthConfig", pools: dict[str, qs.Pool], console: "Console") -> None:
    from thinksearch.synth.report import write_data_report

    def category(kind: str, question: str) -> str | None:
        return pools[kind].entry(question).category if kind in pools else None

    try:  # after the stats, which it reads; like them, never allowed to hide the run's own outcome
        write_data_report(cfg.output, category)
    except Exception as e:  # noqa: BLE001
        _say(console, f"could not write the data report: {e}", "yellow")


def _loop(cfg: "SynthConfig", teacher: "Teacher", student: "Teacher", search: "SearchBackend | None", queues: dict[str, _Queue],
          abstaining: _AbstentionCap, stats: SynthStats, out: JsonlLog, fails: JsonlLog, console: "Console", stop: _Stop,
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
                labels = probe(items, student, cfg, call) if cfg.knowledge_probe else {}
                unknown = [it for it in items if it.id in labels and not labels[it.id].known]
                outcomes = thinking_batch([it for it in items if it not in unknown], teacher, cfg, call)
                if unknown:
                    assert search is not None
                    outcomes += search_batch(unknown, teacher, search, cfg, call, stats)
                for o in outcomes:
                    if o.item.id in labels:
                        stats.knowledge["probed"] += 1
                        stats.knowledge["known"] += labels[o.item.id].known
                        if o.row is not None:
                            o.row["meta"]["knowledge_probe"] = dataclasses.asdict(labels[o.item.id])
                            stats.knowledge["search_rows"] += o.row["type"] == "search"
            else:
                assert search is not None
                outcomes = search_batch(items, teacher, search, cfg, call, stats)
            searched = [o for o in outcomes if o.row is not None and o.row["type"] == "search"]
            ahead = sum(not abstaining.capped(o.row) for o in searched)
            for o in searched:  # each batch's answered rows make room for its abstentions
                ahead -= not abstaining.capped(o.row)
                o.rejection = abstaining.check(o.row, ahead)
                if o.rejection is not None:
                    o.row = None
            for o in outcomes:
                for rep in o.repairs:
                    stats.repairs[rep] += 1
                if o.tried is not None and stats.gold is not None:
                    stats.gold.add(o.tried)
                if o.row is not None:
                    out.append(o.row)
                    queues[o.item.type].done.add(o.item.id)
                    queues[o.item.type].kept += 1
                    stats.kept[o.item.type] += 1  # by pool: a probed knowledge question may be a search row
                    if o.row["type"] == "search":
                        meta = o.row["meta"]
                        stats.add_search_row(str(meta.get("category") or UNCATEGORISED), is_template(o.row),
                                             meta.get("answer") == ABSTAINED)
                    verified = o.row["meta"].get("verified")
                    if verified is not None:
                        stats.verified[verified] += 1
                        queues[o.item.type].unverified += verified == "none"
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
    if stats.gold is not None:
        for category in stats.gold.never_matched():
            c = stats.gold.by_category[category]
            _say(console, f"thinking category {category}: the teacher matched gold on none of {c['tried']} questions "
                          f"({stats.gold.k} candidates each), so it has no verified rows; its unverified rows stay "
                          "capped by --max-unverified-share (a stronger teacher or --gold-hint may help)", "yellow")
    if stop.signal is not None:
        _say(console, f"stopped by {stop.signal} after finishing the rows in flight; "
                      "rerun the same command to resume")
