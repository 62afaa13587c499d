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
    installed, else local (which loads any model transformers can)."""
    if cfg.backend != "auto":
        return cfg.backend
    return "llamacpp" if teacher_llamacpp.available() and teacher_llamacpp.teacher_gguf(cfg.model) else "local"


def make_teacher(cfg: "TeacherConfig") -> Teacher:
    """Build the configured teacher (loading a model or checking a key as needed)."""
    return BACKENDS[pick_backend(cfg)](cfg)
