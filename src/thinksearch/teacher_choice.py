"""Which teacher backend a config gets, and building it.

Apart from :mod:`thinksearch.teacher` because the llamacpp teacher
(:mod:`thinksearch.teacher_llamacpp`) builds on the OpenAI teacher defined there: the choice
needs both modules, and neither may import the other back.

Run as: ``python -c "from thinksearch.config import TeacherConfig; from thinksearch.teacher_choice import pick_backend; print(pick_backend(TeacherConfig(backend='auto')))"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thinksearch import teacher_llamacpp
from thinksearch.teacher import LocalTeacher, OpenAITeacher, Teacher, VLLMTeacher

if TYPE_CHECKING:  # pragma: no cover
    from thinksearch.config import TeacherConfig

BACKENDS: dict[str, type] = {"openai": OpenAITeacher, "local": LocalTeacher, "vllm": VLLMTeacher,
                             "llamacpp": teacher_llamacpp.LlamaCppTeacher}


def pick_backend(cfg: "TeacherConfig") -> str:
    """The backend that ``cfg`` gets: ``auto`` is llamacpp for a GGUF teacher when xllamacpp is
    installed and transformers would compute in fp32 on a CPU, else local (which loads any model
    transformers can)."""
    if cfg.backend != "auto":
        return cfg.backend
    if not (teacher_llamacpp.available() and teacher_llamacpp.teacher_gguf(cfg.model)):
        return "local"
    return "local" if local_is_fast(cfg) else "llamacpp"


def local_is_fast(cfg: "TeacherConfig") -> bool:
    """Whether the local teacher runs on a GPU or in bf16 on a CPU that computes it natively.

    At the quickstart's settings (bench_synth_teacher.py, 2 cores) llama.cpp wrote 0.72x the
    samples of batched transformers in bf16 (AVX512-BF16), but 1.46x those of transformers in
    fp32 (AVX2 only), the precision most laptop CPUs get.
    """
    import torch

    from thinksearch.models import pick_device, pick_dtype

    device = pick_device(cfg.device)
    return device != "cpu" or pick_dtype(cfg.dtype, device) is torch.bfloat16


def make_teacher(cfg: "TeacherConfig") -> Teacher:
    """Build the configured teacher (loading a model or checking a key as needed)."""
    return BACKENDS[pick_backend(cfg)](cfg)
