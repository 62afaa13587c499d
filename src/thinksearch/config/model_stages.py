"""The configs of the stages that train and use the model: train, the agent (ask, chat,
serve), the server, eval, and the whole run.

Fields carry a docstring (shown by ``--help``); ``__post_init__`` checks values and names the
flag of a bad one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from thinksearch.config.data_stages import SearchConfig, SynthConfig
from thinksearch.config.flags import check_choice, check_positive, invalid
from thinksearch.errors import ConfigError
from thinksearch.refs import has_adapter, parse_model_specs


def check_shift(cfg: object) -> None:
    """A decision shift is a log-odds offset: |shift| <= 10 already decides every question one way."""
    shift = getattr(cfg, "decision_shift")
    if shift is not None and not (isinstance(shift, (int, float)) and math.isfinite(shift) and abs(shift) <= 10):
        raise invalid("decision_shift", f"must be a number from -10 to 10 (0: no shift), got {shift!r}")


# ---- train ---------------------------------------------------------------------------


@dataclasses.dataclass
class TrainConfig:
    """LoRA fine-tuning of the student on synthesized rows (`thinksearch train`)."""

    model: str = "qwen2.5-coder-0.5b-instruct"
    """Base model: offline alias, local model directory, .gguf file or hub id."""
    data: list[str] = dataclasses.field(default_factory=lambda: ["synthetic_data.jsonl"])
    """Training rows: JSONL files written by synth, or JSON arrays in the reference layout ([{"messages", "type"}])."""
    output_dir: str = "qwen_lora_model"
    """Run directory: adapter, tokenizer, train_config.yaml, metrics.json, loss.png, checkpoints/."""
    lora_r: int = 16
    """LoRA rank (reference recipe: 16)."""
    lora_alpha: int = 32
    """LoRA scaling numerator; the update is scaled by lora_alpha / lora_r (reference recipe: 32)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input (reference recipe: 0.05)."""
    target_modules: list[str] = dataclasses.field(default_factory=lambda: ["all-linear"])
    """Modules that get LoRA: all-linear (every linear projection except the LM head) or names such as q_proj v_proj."""
    trainable_tokens: list[str] = dataclasses.field(default_factory=lambda: ["<tool_call>", "</tool_call>"])
    """Special tokens whose input and output embedding rows are trained too (PEFT trainable tokens): LoRA on the linear layers cannot teach a base model to emit a token its LM head never learned. Tokens the tokenizer lacks are skipped; [] turns this off."""
    trainable_tokens_lr_scale: float = 10.0
    """Learning rate of the trainable token rows, as a multiple of learning_rate: a row starts far from where it must go, and at 1x barely moves in a short run (README, Notes and limits)."""
    batch_size: int = 2
    """Rows per device per forward pass (reference recipe: 2)."""
    grad_accum: int = 8
    """Forward passes per optimizer step; effective batch = batch_size x grad_accum x devices (reference recipe: 8)."""
    learning_rate: float = 2e-4
    """Peak learning rate of AdamW (reference recipe: 2e-4)."""
    epochs: float = 3.0
    """Passes over the training rows (ignored when max_steps is set)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (null: run `epochs` epochs)."""
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """How the learning rate decays after warmup."""
    warmup_ratio: float = 0.03
    """Fraction of the optimizer steps spent warming the learning rate up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm."""
    decision_weight: float = 1.0
    """Loss weight of the tokens that carry the search decision: the opening of each thinking trace (decision_tokens tokens) and the token(s) right after </thinking>, where the turn goes on with <tool_call> or with the answer. The loss stays a weighted mean, so learning_rate keeps its meaning; 1.0 trains every token alike. The held-out eval loss stays the plain mean (comparable across weights)."""
    decision_tokens: int = 8
    """How many tokens of each thinking trace's opening, after the <thinking> tag, get decision_weight (0: only the token after </thinking>)."""
    max_length: int = 2048
    """Longest row in tokens; longer rows are skipped and counted (never cut), so raise it if many are skipped."""
    eval_fraction: float = 0.05
    """Share of rows held out for the eval loss (at least one row once there are 10 or more; 0: no holdout)."""
    eval_steps: int | None = None
    """Evaluate every this many optimizer steps (null: at each checkpoint and at the end)."""
    seed: int = 42
    """Seed of the holdout split, the shuffling, LoRA init and dropout."""
    logging_steps: int = 1
    """Log the loss every this many optimizer steps (the loss curve's resolution)."""
    save_steps: int = 50
    """Save a resumable checkpoint every this many optimizer steps."""
    save_total_limit: int = 2
    """Checkpoints kept on disk (older ones are deleted)."""
    keep_checkpoints: bool = False
    """Keep checkpoints/ after a run finishes (by default they are removed once the adapter is saved)."""
    group_by_length: bool = False
    """Batch rows of similar length together, so dynamic padding wastes little. Off by default: search rows are longer than thinking rows, so grouped optimizer steps hold one kind each and the search decision ends where the seed's last steps leave it (fresh-data questions searched 143 vs 106 of 147 for two seeds; random batches: 129, 123 and 124 for three, README Results). On, the quickstart trained at 104 tok/s against 81 (15.2 against 18.7 min, 2 cores)."""
    packing: bool = False
    """Pack several rows into each sequence of max_length tokens (best-fit, rows never split; implies padding_free)."""
    padding_free: bool = False
    """Concatenate each batch into one sequence with position ids instead of padding it."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: much less memory (activations of one layer at a time) for more time."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Compute precision: auto = bf16 on a GPU or CPU that has it (AVX512-BF16/AMX), fp16 on older GPUs, else fp32."""
    skip_bad_rows: bool = False
    """Skip rows that don't follow the format (counted and listed in metrics.json) instead of stopping at the first."""
    calibrate_per_kind: int = 60
    """thinksearch run's calibrate stage, after training on rows with decision lines (synth.decision_line): the adapter's decision shift is chosen on this many fresh-data and as many reasoning pool questions that are not among the training rows, and written to ADAPTER/decision.json, which eval, ask, chat and serve apply (thinksearch calibrate; README, The search decision); 0: no shift."""

    def __post_init__(self) -> None:
        check_positive(self, "lora_r", "lora_alpha", "batch_size", "grad_accum", "learning_rate", "epochs",
                       "max_steps", "max_length", "eval_steps", "logging_steps", "save_steps", "save_total_limit",
                       "max_grad_norm", "trainable_tokens_lr_scale")
        check_positive(self, "weight_decay", "decision_tokens", "calibrate_per_kind", allow_zero=True)
        check_positive(self, "decision_weight")
        if not math.isfinite(self.decision_weight):
            raise invalid("decision_weight", f"must be a finite number, got {self.decision_weight!r}")
        if self.decision_weight != 1.0 and self.packing:
            # Packing keeps only the token ids and labels of each row (TRL), so the weights would be lost.
            raise invalid("decision_weight", "cannot be used with --packing (the packed rows lose their weights); "
                          "use --padding-free, or leave decision_weight at 1.0")
        if not 0 <= self.lora_dropout < 1:
            raise invalid("lora_dropout", f"must be in [0, 1), got {self.lora_dropout!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise invalid("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio!r}")
        if not 0 <= self.eval_fraction < 0.5:
            raise invalid("eval_fraction", f"must be in [0, 0.5), got {self.eval_fraction!r}")
        if not self.data:
            raise invalid("data", "give at least one data file")
        if not self.target_modules or any(not m.strip() for m in self.target_modules):
            raise invalid("target_modules", "give all-linear or module names such as q_proj v_proj")
        if "all-linear" in self.target_modules and len(self.target_modules) > 1:
            raise invalid("target_modules", "all-linear already covers every linear projection; give it alone")
        if not self.model.strip():
            raise invalid("model", "empty model reference")
        if not self.output_dir.strip():
            raise invalid("output_dir", "empty output directory")


# ---- agent: ask / chat / serve -------------------------------------------------------


@dataclasses.dataclass
class AgentConfig:
    """How ``ask``, ``chat`` and ``serve`` generate: model, engine, sampling, tool loop."""

    model: str = "qwen2.5-coder-0.5b-instruct"
    """Model reference: offline alias, local directory (merged model or adapter), .gguf file or hub id; `+ADAPTER` adds a LoRA adapter. The openai engine renders prompts with this model's chat template."""
    adapter: str | None = None
    """LoRA adapter directory put on --model (transformers engine only)."""
    engine: Literal["auto", "transformers", "openai", "llamacpp"] = "auto"
    """auto: llamacpp for a GGUF without adapter, or a current --gguf, when xllamacpp is installed (fastest on CPU), else transformers; openai: any OpenAI-compatible endpoint (vLLM, llama.cpp server, SGLang)."""
    gguf: str | None = None
    """The tuned model as a GGUF (thinksearch run writes RUN_DIR/model.gguf) that llama.cpp runs in place of --model + adapter while its fingerprint file matches the adapter; missing or stale: transformers on model + adapter, with a note."""
    base_url: str | None = None
    """openai engine: the endpoint, e.g. http://127.0.0.1:8000/v1."""
    served_model: str | None = None
    """openai engine: the model name at the endpoint (default: the first one it lists)."""
    endpoint_api: Literal["completions", "chat"] = "completions"
    """openai engine: completions sends the prompt rendered here with --model's chat template (exactly as in training); chat lets the endpoint apply its own template."""
    api_key_env: str = "THINKSEARCH_ENDPOINT_KEY"
    """openai engine: environment variable holding the endpoint's API key (unset: no key sent)."""
    dtype: str = "auto"
    """transformers engine: auto (bf16 where the hardware has it, else fp32), float32, bfloat16, float16."""
    device: str = "auto"
    """transformers engine: auto, cpu, cuda, cuda:1 ..."""
    threads: int | None = None
    """llamacpp engine: CPU threads (default: all cores)."""
    context_tokens: int = 4096
    """Longest prompt + completion the agent lets a conversation reach (tokens)."""
    max_rounds: int = 3
    """Model turns per question at most; each turn may call the search tool once the previous results are in."""
    max_new_tokens: int = 512
    """Tokens generated per model turn at most."""
    temperature: float = 0.0
    """0 = greedy (reproducible); > 0 samples."""
    top_p: float = 1.0
    """Nucleus sampling threshold (with temperature > 0)."""
    repetition_penalty: float = 1.0
    """> 1 discourages repeating tokens (transformers engine)."""
    close_thinking: int = 0
    """When a turn reaches max_new_tokens inside <thinking>, close the thinking and let the model write up to this many more tokens in the same turn (0: off). Use it with a model trained on decision lines (synth.decision_line): its trace states the decision first, and the closed turn follows it."""
    decision_shift: float | None = None
    """Added to the log-odds of searching (both search lines' probabilities summed) at the decision line of a model trained with synth.decision_line; see thinksearch calibrate. Unset: the shift calibrated for the adapter (ADAPTER/decision.json) if it has one, 0 included; 0: none (the model's own first token)."""
    seed: int | None = None
    """Sampling seed (with temperature > 0)."""
    system_prompt: str | None = None
    """System prompt; default: the reference prompt the model was trained with (format.SYSTEM_PROMPT)."""
    history_tokens: int = 3072
    """chat: the oldest exchanges are dropped once the conversation passes this many tokens."""
    timeout_s: float = 600.0
    """openai engine: seconds before a request to the endpoint is abandoned."""
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    """The search backend that answers the model's tool calls."""

    def __post_init__(self) -> None:
        check_positive(self, "max_rounds", "max_new_tokens", "context_tokens", "history_tokens", "timeout_s", "top_p", "threads")
        check_positive(self, "temperature", allow_zero=True)
        check_positive(self, "repetition_penalty")
        check_positive(self, "close_thinking", allow_zero=True)
        check_shift(self)
        if self.top_p > 1:
            raise invalid("top_p", f"must be <= 1, got {self.top_p!r}")
        if self.max_new_tokens >= self.context_tokens:
            raise invalid("max_new_tokens", f"must be below --context-tokens ({self.context_tokens}), got {self.max_new_tokens}")
        if self.engine == "openai" and not self.base_url:
            raise invalid("base_url", "the openai engine needs the endpoint's URL, e.g. http://127.0.0.1:8000/v1")
        # With a GGUF of the tuned model, the adapter only says which one it must be (its fingerprint).
        if (self.engine == "openai" or (self.engine == "llamacpp" and not self.gguf)) and (self.adapter or has_adapter(self.model)):
            raise invalid("adapter", f"the {self.engine} engine cannot put a LoRA adapter on the model; "
                          "serve the adapter at the endpoint (vLLM --lora-modules) or use a merged model")
        if self.system_prompt is not None and not self.system_prompt.strip():
            raise invalid("system_prompt", "must not be empty (leave it out for the reference prompt)")


@dataclasses.dataclass
class ServeConfig:
    """The OpenAI-compatible HTTP server (``thinksearch serve``); the model comes from AgentConfig."""

    host: str = "127.0.0.1"
    """Address to bind; only this machine can connect unless you choose another (then set a key)."""
    port: int = 8000
    """TCP port (0 picks a free one)."""
    served_name: str = "thinksearch"
    """The model id clients pass as `model` and /v1/models lists."""
    key_env: str | None = None
    """Environment variable holding the bearer key clients must send; null serves without a key."""
    run_tools: bool = False
    """Run the search tool in the server (agent loop) and answer with the final text, instead of returning tool_calls."""
    max_body_bytes: int = 1_000_000
    """Request bodies larger than this are refused with 413."""
    max_tokens_limit: int = 2048
    """Largest max_tokens a request may ask for (400 above)."""
    max_batch: int = 8
    """Non-streaming requests waiting together are generated as one batch of up to this many."""
    batch_wait_ms: float = 5.0
    """How long the batcher waits for more requests to join a batch that is not full."""
    max_queue: int = 256
    """Requests waiting beyond this get 503 (server busy) instead of queueing forever."""

    def __post_init__(self) -> None:
        check_positive(self, "max_body_bytes", "max_tokens_limit", "max_batch", "max_queue")
        check_positive(self, "port", "batch_wait_ms", allow_zero=True)
        if self.port > 65535:
            raise invalid("port", f"must be <= 65535, got {self.port}")
        if not self.served_name.strip():
            raise invalid("served_name", "must not be empty")


# ---- eval ----------------------------------------------------------------------------


@dataclasses.dataclass
class EvalConfig:
    """`thinksearch eval`: which questions, which models, how to decode, where the reports go."""

    data: str = "data/eval/test.jsonl"
    """Eval file: JSONL rows {"type": "thinking"|"search", "question": ...}, or reference-layout rows {"messages": [system, user, ...], "type"} (JSONL or one JSON array)."""
    models: list[str] = dataclasses.field(default_factory=lambda: ["base=qwen2.5-coder-0.5b-instruct"])
    """Models to compare, each NAME=REF (REF: alias, model directory, .gguf, hub id; REF+ADAPTER_DIR adds a LoRA adapter). On the command line also --model NAME=REF, repeatable."""
    output_dir: str = "runs/eval"
    """Where report.json, report.md, report.png and the per-model outputs (for resuming) go."""
    limit_per_type: int | None = None
    """Evaluate at most this many questions of each type, a seeded sample without replacement (the reference used 30 + 30); null: all."""
    seed: int = 0
    """Seed of the subsample, and of sampling when temperature > 0."""
    max_new_tokens: int = 512
    """Most tokens generated per question; an output cut there counts as truncated."""
    temperature: float = 0.0
    """0 decodes greedily (the default, reproducible); > 0 samples, seeded by --seed."""
    top_p: float = 1.0
    """Nucleus sampling mass when temperature > 0."""
    repetition_penalty: float = 1.0
    """Above 1, lowers the score of tokens the output already holds, greedy decoding included:
    it breaks the loops a small tuned model falls into ("男演员、女演员、男演员……" until the token
    limit), which count as undecided. 1: none, the reference's plain greedy decoding. Qwen2.5's
    own generation config uses 1.05-1.1 (README, The search decision, measures it here)."""
    close_thinking: int = 0
    """With --agent: when a turn reaches max_new_tokens inside <thinking>, close the thinking
    and let the model write up to this many more tokens in the same turn (0: off, and a cut
    thinking counts as undecided). Meant for a model trained on decision lines
    (synth.decision_line), whose trace states the decision before it can loop; without them a
    closed thinking is mostly followed by a search, whatever the question (README, Results)."""
    decision_shift: float | None = None
    """With --agent: added to the log-odds of searching (both search lines' probabilities summed) at the decision line of a model trained with synth.decision_line (thinksearch calibrate). Unset: each model's calibrated shift (its adapter's decision.json) if it has one, 0 included; 0: none (the model's own first token)."""
    batch_size: int = 8
    """Questions generated together; 1 generates one at a time."""
    continuous_batching: bool = True
    """Greedy decoding: refill the batch as soon as a question finishes (transformers' continuous batching) instead of fixed batches that wait for their longest answer."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype. float32 (default): an output does not depend on which questions share its batch; bfloat16 / auto are faster on CPUs with AMX or on GPUs, but a near-tie can then flip a greedy pick (bench/results/eval.json)."""
    device: str = "auto"
    """cpu, cuda, cuda:1 ...; auto picks a GPU when there is one."""
    restart: bool = False
    """Discard outputs saved in output_dir and generate again (default: resume; refuses if the settings changed)."""
    agent: bool | None = None
    """Answer each question through the agent loop (searches run, results go back, the model answers) and score its final answer; off: score the first turn only. null: on in `thinksearch run`, off in `thinksearch eval`."""
    max_rounds: int = 3
    """With --agent: model turns per question at most (as in ask/chat)."""
    engine: Literal["auto", "llamacpp", "transformers"] = "auto"
    """With --agent: what generates. llamacpp: llama.cpp in-process (xllamacpp) with batch_size parallel slots on a GGUF (an alias's own file; a tuned alias+adapter is exported once to f16 and cached); auto: llamacpp where xllamacpp is installed and a GGUF can be had, else transformers (with a note why). Without --agent evaluation always runs through transformers."""
    gguf_cache: str | None = None
    """Folder of the exported GGUFs of tuned models, keyed by the adapter's fingerprint (null: $THINKSEARCH_HOME/gguf-cache; in a run: RUN_DIR/gguf-cache)."""
    gold_only: bool = False
    """Subsample only from questions that carry gold answers (or are marked unanswerable), so every sampled answer is scored."""
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    """With --agent: the search backend that answers the models' tool calls (in a run: the run's index)."""
    corpus: list[str] = dataclasses.field(default_factory=lambda: ["data/corpus/snapshot.jsonl"])
    """Corpus files whose passage ids gold rows may name: checked when the eval file loads (files that do not exist are skipped)."""

    def __post_init__(self) -> None:
        check_positive(self, "limit_per_type", "max_new_tokens", "batch_size", "max_rounds", "repetition_penalty")
        check_positive(self, "temperature", "close_thinking", allow_zero=True)
        check_shift(self)
        if not 0 < self.top_p <= 1:
            raise invalid("top_p", f"must be in (0, 1], got {self.top_p!r}")
        if not self.data.strip():
            raise invalid("data", "empty path")
        if not self.output_dir.strip():
            raise invalid("output_dir", "empty path")
        try:
            parse_model_specs(self.models)
        except ConfigError as e:
            raise invalid("models", str(e)) from None
        check_choice("engine", self.engine, ("auto", "llamacpp", "transformers"))
        if self.engine == "llamacpp" and self.agent is False:
            raise invalid("engine", "llamacpp evaluates through the agent loop only; add --agent, or use --engine transformers")


# ---- run: the whole pipeline ---------------------------------------------------------


@dataclasses.dataclass
class RunConfig:
    """`thinksearch run CONFIG`: index → synth → train → calibrate → export → eval in one run directory.

    The YAML file is this dataclass: top-level run fields plus one section per stage. Inside a
    run the stages hand files to each other, so their paths are the run directory's (data.jsonl,
    adapter/, eval/, index.sqlite), whatever the sections say.
    """

    run_dir: str = "runs/quickstart"
    """Every artifact of the run goes here; rerunning the same command resumes where it stopped."""
    stages: list[Literal["index", "synth", "train", "calibrate", "export", "eval"]] = dataclasses.field(
        default_factory=lambda: ["index", "synth", "train", "calibrate", "export", "eval"])
    """Stages to run (in pipeline order whatever the order given); complete stages are skipped anyway."""
    compare_base: bool = True
    """Evaluate the base model beside the tuned one; off: the tuned model only (seeds of one recipe share one base evaluation: scripts/seeds.py)."""
    corpus: list[str] = dataclasses.field(default_factory=lambda: ["data/corpus/snapshot.jsonl"])
    """Files or folders the local search index is built from (search backend 'local'; empty: use synth.search.index as it is)."""
    synth: SynthConfig = dataclasses.field(default_factory=SynthConfig)
    """Stage 1: synthesis (teacher, question pools, search backend)."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    """Stage 2: LoRA training; train.model is also the base model eval compares against."""
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    """Stage 3: evaluation of the base and the tuned model."""
    agent: AgentConfig = dataclasses.field(default_factory=AgentConfig)
    """Not used by the run: what `thinksearch ask/chat/serve --config` read from the same file."""
    serve: ServeConfig = dataclasses.field(default_factory=ServeConfig)
    """Not used by the run: `thinksearch serve --config` settings."""

    def __post_init__(self) -> None:
        if not self.run_dir.strip():
            raise invalid("run_dir", "must be a directory path")
        if not self.stages:
            raise invalid("stages", "give at least one of index, synth, train, calibrate, export, eval")
