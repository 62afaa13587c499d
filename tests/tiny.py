"""A tiny Qwen2 model and tokenizer, built in-process in seconds with no downloads.

The tokenizer is a byte-level BPE trained here on a little text, with Qwen's special tokens
(``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``; ``<tool_call>``/``</tool_call>`` as
added, non-special tokens, as in Qwen2.5) and the real Qwen2.5 chat template (a fixture
copied from the offline model's GGUF metadata). The model is a 2-layer Qwen2 with random
weights: it exercises every code path, it does not say anything sensible.
"""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
QWEN_TEMPLATE = (FIXTURES / "qwen2.5_chat_template.jinja").read_text(encoding="utf-8")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ADDED = ["<tool_call>", "</tool_call>"]

_CORPUS = [
    "如果一个正方形的面积是另一个正方形面积的4倍，那么它们的周长比是多少？",
    "今天比特币的价格是多少？北京明天天气怎么样？最新的手机型号是什么？",
    "设小正方形的边长为a，大正方形的边长为b。周长比是2:1。根据搜索结果，价格约为……",
    "这个问题需要最新的实时数据，我需要搜索。为什么天空是蓝色的？因为瑞利散射。",
    '{"name": "search", "arguments": {"query": "比特币价格 今日"}}',
    "<thinking>\n思考过程\n</thinking>\n\n答案",
    "The quick brown fox jumps over the lazy dog. Search results: [1] title — snippet (source, 2025-01-01)",
    "0123456789 + - * / = ( ) [ ] { } : ; , . ! ? \" ' \n\t",
    # The decision lines, so their deciding tokens are whole characters as in Qwen's vocabulary
    # (the agent's decision shift reads the token back as text).
    "<thinking>\n这个问题靠推理和已有知识就能回答，不需要搜索。\n这个问题要用到会变化的最新信息，需要搜索。\n"
    "这个问题问的是一个我没有把握的事实，需要搜索核实。",
]


def build_tokenizer(vocab_size: int = 1200):
    """A byte-level BPE tokenizer wrapped as a transformers tokenizer with Qwen's chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from thinksearch.format import SYSTEM_PROMPT

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((_CORPUS + [SYSTEM_PROMPT]) * 3, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=QWEN_TEMPLATE,
        model_max_length=4096,
    )
    wrapped.add_tokens(ADDED)  # like Qwen2.5: single tokens, but not "special" (kept by decode)
    return wrapped


def build_model(tokenizer, hidden_size: int = 32, layers: int = 2, seed: int = 0):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_tiny(path: Path) -> Path:
    """Write a tiny model directory loadable by ``AutoModelForCausalLM.from_pretrained``."""
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
