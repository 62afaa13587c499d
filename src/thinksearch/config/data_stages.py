"""The configs of the stages that make training data: search, the teacher and synthesis.

Fields carry a docstring (shown by ``--help``); ``__post_init__`` checks values and names the
flag of a bad one. SearchConfig is shared: synthesis, the agent and eval all search.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from thinksearch.config.flags import check_positive, invalid


# ---- search (shared by synth and the agent) ------------------------------------------


@dataclasses.dataclass
class SearchConfig:
    """Which search backend answers tool calls, during synthesis and at inference."""

    backend: Literal["local", "searxng", "wikipedia", "simulated"] = "local"
    """local: SQLite FTS5 index; searxng / wikipedia: HTTP APIs; simulated: a model writes results (labelled)."""
    k: int = 5
    """Results per query."""
    index: str = "index.sqlite"
    """local: path of the index built by `thinksearch index build`."""
    tokenizer: Literal["auto", "jieba", "bigram"] = "auto"
    """local, index build: how text is split into words: jieba (needs thinksearch[jieba]), character bigrams, or auto (jieba if installed; an existing index keeps its own)."""
    passage_chars: int | None = None
    """local, index build: cut longer documents into passages of at most this many characters (null: 800, or what an existing index uses)."""
    url: str | None = None
    """searxng: base URL (default $THINKSEARCH_SEARXNG_URL); wikipedia: api.php URL or site root (default the language's wikipedia.org)."""
    language: str = "zh"
    """searxng / wikipedia: result language (wikipedia: which language edition, e.g. zh, en)."""
    timeout_s: float = 10.0
    """HTTP backends: seconds one search may take, retries included."""
    retries: int = 2
    """HTTP backends: extra tries after a connection error, timeout, HTTP 429 or 5xx (with backoff)."""
    cache: str | None = None
    """SQLite cache of results keyed by (backend, what decides its results, query, k); null disables it."""
    max_result_chars: int = 300
    """Each result is cut to this many characters before a model sees it."""
    max_total_chars: int = 1500
    """The whole tool turn is cut to this many characters."""

    def __post_init__(self) -> None:
        check_positive(self, "k", "timeout_s", "max_result_chars", "max_total_chars", "passage_chars")
        check_positive(self, "retries", allow_zero=True)
        if self.passage_chars is not None and self.passage_chars < 50:
            raise invalid("passage_chars", f"must be at least 50, got {self.passage_chars}")
        if not self.language.strip():
            raise invalid("language", "must not be empty (e.g. zh, en)")


# ---- teacher + synth -----------------------------------------------------------------


@dataclasses.dataclass
class TeacherConfig:
    """The model that writes synthesis data, and how to reach it."""

    backend: Literal["local", "openai", "vllm", "llamacpp", "auto"] = "local"
    """local: transformers in this process (CPU or GPU); openai: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama, hosted APIs); vllm: vLLM's offline engine (GPU, extra 'vllm'); llamacpp: a GGUF teacher on llama.cpp in this process (extra 'llamacpp'); auto: llamacpp when xllamacpp is installed, the model is a GGUF (.gguf file or offline alias) and local would run in fp32 on a CPU (no GPU, no native bf16), else local."""
    model: str = "qwen2.5-coder-0.5b-instruct"
    """local / vllm / llamacpp: a model reference (offline alias, HF directory, .gguf, hub id; llamacpp: a .gguf or an offline alias); openai: the model name the server serves."""
    base_url: str = "http://127.0.0.1:8000/v1"
    """openai: the server's OpenAI-compatible base URL (ends in /v1)."""
    api_key_env: str | None = None
    """openai: name of the environment variable holding the API key (e.g. OPENAI_API_KEY); null for local servers that need none. The key itself is never written anywhere."""
    concurrency: int = 8
    """openai: requests in flight at once (a batching server answers them together)."""
    timeout_s: float = 120.0
    """openai: seconds before one request is abandoned (and retried); llamacpp waits as long as decoding takes (its server is in this process)."""
    max_retries: int = 4
    """openai: retries of a request after a 429, 5xx, timeout, connection error or malformed reply."""
    backoff_s: float = 1.0
    """openai: first retry waits up to this many seconds (full jitter), doubling each retry."""
    backoff_max_s: float = 30.0
    """openai: upper bound of one wait between retries."""
    batch_size: int = 8
    """local: prompts generated together (left-padded); the main speed lever on CPU."""
    dtype: str = "auto"
    """local / vllm: auto (bf16 where the hardware has it, else fp32), float32, bfloat16, float16."""
    device: str = "auto"
    """local: auto (cuda if available, else cpu), cpu, cuda, cuda:1 ..."""
    gpu_memory_utilization: float = 0.85
    """vllm: share of GPU memory the engine may take."""
    max_model_len: int | None = None
    """vllm: context length to reserve (null: the model's own); llamacpp: context tokens of each slot, prompt + reply (null: 4096)."""
    parallel: int = 8
    """llamacpp: slots, i.e. requests decoded together (each slot holds its own context of max_model_len tokens); more slots, more throughput, until the CPU is saturated."""
    threads: int | None = None
    """llamacpp: CPU threads (null: all cores)."""

    def __post_init__(self) -> None:
        check_positive(self, "concurrency", "timeout_s", "batch_size", "backoff_max_s", "gpu_memory_utilization")
        check_positive(self, "max_retries", "backoff_s", allow_zero=True)
        check_positive(self, "max_model_len", "parallel", "threads")
        if not self.model.strip():
            raise invalid("model", "must not be empty")
        if self.backend == "openai" and not self.base_url.startswith(("http://", "https://")):
            raise invalid("base_url", f"must start with http:// or https://, got {self.base_url!r}")
        if self.api_key_env is not None and not self.api_key_env.strip():
            raise invalid("api_key_env", "must name an environment variable (or be null)")
        if self.gpu_memory_utilization > 1:
            raise invalid("gpu_memory_utilization", f"must be at most 1, got {self.gpu_memory_utilization!r}")


@dataclasses.dataclass
class SynthConfig:
    """Stage 1: question pools → teacher → gated SFT rows (DESIGN.md sections 2, 3)."""

    thinking_questions: str = "data/questions/thinking.jsonl"
    """Pool of questions that need reasoning, not fresh facts (.txt one per line, or .jsonl with a 'question' field)."""
    search_questions: str = "data/questions/search.jsonl"
    """Pool of questions that need fresh or changing information (.txt or .jsonl)."""
    eval_questions: str | None = "data/eval/test.jsonl"
    """Held-out eval questions: any pool question that is a near duplicate of one is dropped (null: no decontamination)."""
    output: str = "synthetic_data.jsonl"
    """Rows are appended here, one JSON object per line; rerunning the same command resumes."""
    failures: str | None = None
    """Where rejected and failed questions are logged with the reason (null: OUTPUT's name with .failures.jsonl)."""
    export_reference: str | None = None
    """Also write all rows in the reference layout: one JSON array of {messages, type} (null: don't)."""
    num_thinking: int = 200
    """Thinking rows to end up with (rejected questions are replaced by the next ones from the pool)."""
    num_search: int = 200
    """Search rows to end up with."""
    seed: int = 0
    """Seeds the pool order (sampling without replacement) and the teacher's sampling."""
    near_duplicate_threshold: float = 0.7
    """Character-bigram Jaccard similarity at or above which two questions count as near duplicates."""
    retry_rejected: bool = False
    """On a rerun, ask again the questions a quality gate rejected (transient failures are always eligible again)."""
    batch_size: int = 8
    """Questions per step: stage 1 for all of them, then their searches, then stage 2."""
    temperature: float = 0.7
    """Teacher sampling temperature (0: greedy)."""
    top_p: float = 0.95
    """Teacher nucleus sampling."""
    max_tokens_analysis: int = 512
    """Thinking stage 1: the reasoning trace."""
    max_tokens_answer: int = 256
    """Thinking stage 2: the final answer given the trace."""
    max_tokens_query: int = 160
    """Search stage 1: why fresh data is needed + the query, as JSON."""
    max_tokens_grounded: int = 320
    """Search stage 2: the answer grounded in the results."""
    trim_analysis: bool = False
    """A thinking trace the teacher did not finish within max_tokens_analysis is cut after its
    last complete sentence and kept (repair "analysis: trimmed"; rejected as truncated when that
    leaves less than half of it) instead of rejected. With a small max_tokens_analysis this
    trains traces short enough to close </thinking> within the eval's token limit (README,
    The search decision); off: every truncated trace is rejected."""
    brief_traces: bool = False
    """Ask the teacher for a thinking trace of two or three sentences of prose that ends in its
    conclusion (no lists, no headings; the gold hint too) instead of sections that restate the
    question, list steps and check them. A trace that repeats the prompt's wording is rejected
    (analysis/echoes_prompt). With max_tokens_analysis at about 128 and trim_analysis off, every
    kept trace is one the teacher finished in that budget. Measured: undecided answers fell, and
    so did fresh-data recall unless decision_line is on too (README, Results: Brief thinking
    traces). On in configs/quickstart.yaml, with decision_line."""
    min_trace_chars: int = 10
    """Gate: shorter reasoning traces (thinking and search) are rejected as too short."""
    min_answer_chars: int = 2
    """Gate: shorter answers are rejected as too short."""
    max_repetition: float = 0.3
    """Gate: share of repeated 12-character spans above which a text counts as a repetition loop."""
    require_citation: bool = True
    """Gate: a search answer must cite at least one result as [n] (and no result that does not exist)."""
    search_reason_fallback: bool = False
    """When the teacher's reason to search fails its gate (no reason given, or not about the
    question), use a fixed sentence that opens with the teacher's query instead of rejecting the
    question, and record it in the row's repairs. For small teachers, which mostly answer the
    question instead of saying why to search, so that search rows cover every category (README,
    Configs)."""
    relevance_gate: bool = True
    """Gate: a search result counts only when it concerns the question (enough of the question's
    key terms in its title or text; README, Search rows). Only relevant results are shown for
    the grounded answer; when none is relevant, the row's answer is an abstention written by
    code that names what was searched and what is missing. false: every result counts."""
    relevance_threshold: float = 0.6
    """With relevance_gate: least share of the question's key terms a relevant result holds
    (measured in bench/bench_relevance.py)."""
    max_abstaining_share: float = 0.4
    """With relevance_gate: at most this share of the search rows written so far may abstain
    (no relevant result), at every point of the run; past it, such a question is logged as search/abstention_cap and another is taken.
    0.4: about the eval set's share of questions the corpus cannot answer (60 of 147); a real
    0.5B-teacher synth on the shipped corpus abstained on 15 of 24 without a cap. 1: no cap."""
    query_gate: bool = True
    """Gate: reject a search query with numbers the question does not have (an invented
    version, date or figure), as query/query_invented, or with none of the question's key terms
    (a made-up name), as query/query_off_topic, or that states a claim the question does not
    make (a clause ending in 。 or ！: the teacher's guess), as query/query_statement."""
    number_gate: bool = True
    """Gate: reject a grounded answer with numbers found neither in the question nor in the
    results (the eval's unsupported-number check), as grounded/unsupported_numbers."""
    slot_gate: bool = True
    """Gate: a grounded answer to a question asking for a clock time (几点) or a day (哪天) must
    give one. Rejected as grounded/misses_slot when the results give one; when they do not, the
    answer is code's abstention naming what is missing (meta.missing), not the teacher's reading
    of a passage that does not say it (a date for 几点, a year for 哪天)."""
    answer_opening: str = ""
    """Code opens every grounded search answer (the teacher's, after the gates) with this text,
    replacing an opening of the same kind the teacher wrote ("从搜索结果来看，"), so that the
    grounded answers and the code-written abstentions ("我搜索了……") differ at one token, where
    the grounded ones are the majority. With the teacher's own openings (""), each grounded
    opening is rare and the one abstention opening is the likeliest first token: a student
    trained on 39% abstaining rows abstained on 40 of 48 eval questions whose results held the
    answer. Measured (README Results, one run): with "根据搜索结果，" it abstained on 14 of 35
    such questions, but just as often where the results lacked the answer, and it invented
    answers "根据搜索结果" instead of abstaining there; off by default."""
    search_gold: bool = True
    """Check search rows against the pool's gold where it has some (``answerable``, ``answers``:
    data/questions/search.jsonl does). A question the corpus cannot answer, or whose key fact no
    result shows, gets code's abstention; otherwise the grounded answer must state the key fact
    (the eval's scorer), or the row is rejected as grounded/misses_gold. Rows checked are
    labelled meta.verified gold. Questions without gold keep the relevance gate alone. false:
    gold is not read for search rows."""
    decision_line: bool = False
    """Open every trace with a fixed sentence that states the decision: no search needed (thinking
    rows) or a search needed (search rows), so both row types train the same position on the
    same choice, right after the question. With step-list traces the decisions it trained were
    not stable; with brief_traces and the eval's close_thinking, three seeds searched 84-93% of
    fresh-data questions with no false search, and two seeds on a fresh quickstart's rows 97%
    (9/69 false searches) and 74% (none): the seed still moves the decision (README, Results).
    On in configs/quickstart.yaml; off here, where the teacher may write long traces."""
    samples_per_question: int = 1
    """Gold-checked sampling: candidates the teacher writes per thinking question that carries gold
    (all in the same batched calls, each with its own seed). A row is kept only when its final
    answer matches gold by the eval's scorer; the first matching candidate is used, and a question
    none matches yields no row (rejected as gold/mismatch). 1 with check_gold null: one candidate,
    no check, as before (README, Gold-checked sampling)."""
    sample_temperature: float = 0.9
    """Teacher temperature for the candidates when samples_per_question > 1 (k samples at a low
    temperature would mostly repeat one another)."""
    check_gold: bool | None = None
    """Check thinking rows against the pool's gold (answers / match): true, false, or null: on
    when samples_per_question > 1. When on, rows are labelled meta.verified gold / none."""
    max_unverified_share: float = 0.3
    """With gold checking on: at most this share of num_thinking may be rows of questions without
    gold (unverifiable, meta.verified none); 1 disables the cap. 0.3 is about the shipped thinking
    pool's share of open questions, so the cap bites only when verified rows are missing."""
    gold_hint: bool = False
    """Rationalisation, with gold checking on: when no candidate of a question matches gold, ask
    once more with the correct answer as a hint, and keep that trace only if it reaches gold by
    its own working (a computed result is gold, not asserted after another) and never mentions
    being given it (meta.verified hint). Off here, on in configs/quickstart.yaml:
    there its verified rows held gold (30 of 31 by the scorer), and with random batches a student
    trained on them still searched 133 of 147 fresh-data questions (README, Results)."""
    knowledge_probe: int = 0
    """Knowledge-boundary labels: before a row is written for a stable-knowledge question with
    gold (categories knowledge, science), the student answers it this many times at
    sample_temperature, scored against gold by the eval's scorer. Where it is right in fewer
    than knowledge_known_share of them, the question becomes a search row (the student does not
    know it, so it should search); otherwise it keeps its thinking row. 0: off, every such
    question is a thinking row (README, The search decision)."""
    knowledge_known_share: float = 1.0
    """With knowledge_probe: the least share of right answers for the student to count as
    knowing a question (1: right every time)."""
    probe_model: str | None = None
    """With knowledge_probe: the student, as a model for the teacher's backend (same settings as
    teacher otherwise); null: the teacher itself, which is right only when the teacher is the
    student, as in the quickstart."""
    max_consecutive_errors: int = 16
    """Stop the run (resumable) after this many teacher or search errors in a row: the backend is down."""
    teacher: TeacherConfig = dataclasses.field(default_factory=TeacherConfig)
    """The teacher model."""
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    """The search backend that answers the search samples' queries."""

    def __post_init__(self) -> None:
        check_positive(self, "num_thinking", "num_search", "temperature", allow_zero=True)
        check_positive(self, "batch_size", "max_tokens_analysis", "max_tokens_answer", "max_tokens_query",
                       "max_tokens_grounded", "min_answer_chars", "max_consecutive_errors")
        check_positive(self, "min_trace_chars", allow_zero=True)
        if not 0 < self.top_p <= 1:
            raise invalid("top_p", f"must be in (0, 1], got {self.top_p!r}")
        if not 0 < self.near_duplicate_threshold <= 1:
            raise invalid("near_duplicate_threshold", f"must be in (0, 1], got {self.near_duplicate_threshold!r}")
        if not 0 < self.max_repetition <= 1:
            raise invalid("max_repetition", f"must be in (0, 1], got {self.max_repetition!r}")
        if not 0 < self.relevance_threshold <= 1:
            raise invalid("relevance_threshold", f"must be in (0, 1], got {self.relevance_threshold!r}")
        if self.samples_per_question < 1:
            raise invalid("samples_per_question", f"must be an integer >= 1, got {self.samples_per_question!r}")
        check_positive(self, "sample_temperature", allow_zero=True)
        if not 0 <= self.max_abstaining_share <= 1:
            raise invalid("max_abstaining_share", f"must be in [0, 1], got {self.max_abstaining_share!r}")
        if self.knowledge_probe < 0:
            raise invalid("knowledge_probe", f"must be an integer >= 0 (0: off), got {self.knowledge_probe!r}")
        if not 0 < self.knowledge_known_share <= 1:
            raise invalid("knowledge_known_share", f"must be in (0, 1], got {self.knowledge_known_share!r}")
        if self.probe_model is not None and not self.probe_model.strip():
            raise invalid("probe_model", "must name the student model (or be null: the teacher)")
        if not 0 <= self.max_unverified_share <= 1:
            raise invalid("max_unverified_share", f"must be in [0, 1], got {self.max_unverified_share!r}")
        if self.gold_hint and not self.gold_checked:
            raise invalid("gold_hint", "needs gold checking: set --samples-per-question above 1 or --check-gold")
        if not self.output.strip():
            raise invalid("output", "must be a file path")
        if self.num_thinking == 0 and self.num_search == 0:
            raise invalid("num_thinking", "num_thinking and num_search are both 0: nothing to synthesize")

    @property
    def gold_checked(self) -> bool:
        """Are thinking rows checked against gold (check_gold, or by default k > 1)?"""
        return self.samples_per_question > 1 if self.check_gold is None else self.check_gold
