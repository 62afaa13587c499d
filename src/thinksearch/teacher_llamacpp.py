"""The ``llamacpp`` teacher: a GGUF teacher decoded by llama.cpp in this process.

llama.cpp (the prebuilt ``xllamacpp`` wheel, extra ``llamacpp``) runs its OpenAI-compatible
server on 127.0.0.1 with ``parallel`` slots that decode concurrent requests together; on a
CPU that is several times faster than transformers on the same GGUF. Prompts are rendered
here through the teacher's own chat template (as the ``local`` teacher does) and sent with
the completions API, so the server never templates them a second time; the requests, their
concurrency (one per slot) and the retries are :class:`~thinksearch.teacher.OpenAITeacher`'s.

Run as: ``thinksearch synth --teacher-backend llamacpp --teacher-model qwen2.5-coder-0.5b-instruct --teacher-parallel 8``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thinksearch import format as fmt
from thinksearch.errors import ThinksearchError
from thinksearch.teacher import EndpointDown, OpenAITeacher, TeacherRequest, _Malformed

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

    from thinksearch.config import TeacherConfig

MISSING = "the llamacpp teacher needs xllamacpp: pip install 'thinksearch[llamacpp]' (or use --teacher-backend local)"

# The server is in this process and only ever busy decoding, so a slow reply is not a lost
# one: abandoning it after the openai backend's timeout would only restart the same work.
NO_TIMEOUT_S = 24 * 3600.0


def available() -> bool:
    """Whether xllamacpp is installed (the engines' one check)."""
    from thinksearch.engines.llamacpp import installed

    return installed()


def teacher_gguf(ref: str) -> Path | None:
    """The GGUF file a teacher reference names: a .gguf path, or an offline alias (prepared on demand)."""
    from thinksearch.refs import OFFLINE_MODELS, gguf_of

    if ref in OFFLINE_MODELS and gguf_of(ref) is None:
        from thinksearch import models

        models.resolve(ref)  # assembles the alias's files, its GGUF included
    return gguf_of(ref)


def _tokenizer(ref: str, gguf: Path) -> "PreTrainedTokenizerBase":
    from thinksearch import models

    try:
        return models.load_tokenizer(models.resolve(ref))
    except ThinksearchError as e:
        raise ThinksearchError(f"the llamacpp teacher cannot read the chat template of {gguf} ({e}); "
                               "give --teacher-model the GGUF of a chat (instruct) model") from None


class LlamaCppTeacher(OpenAITeacher):
    """A GGUF teacher on llama.cpp's in-process server, ``cfg.parallel`` requests at a time."""

    def __init__(self, cfg: "TeacherConfig", tokenizer: "PreTrainedTokenizerBase | None" = None,
                 cache_prompt: bool = True):
        from thinksearch.engines.llamacpp import start_server

        # Cheap checks first, so a bad setup fails before a model is loaded.
        if not available():
            raise ThinksearchError(MISSING)
        gguf = teacher_gguf(cfg.model)
        if gguf is None:
            raise ThinksearchError(f"the llamacpp teacher needs a GGUF model; {cfg.model!r} is not a .gguf file or an "
                                   "offline alias (use --teacher-backend local, or convert the model to GGUF)")
        tokenizer = tokenizer if tokenizer is not None else _tokenizer(cfg.model, gguf)
        if not getattr(tokenizer, "chat_template", None):
            raise ThinksearchError(f"the llamacpp teacher {gguf} has no chat template; "
                                   "give --teacher-model the GGUF of a chat (instruct) model")
        self.tokenizer = tokenizer
        self.gguf = gguf
        # cache_prompt reuses a slot's KV cache for a shared prompt prefix (the stages' fixed
        # instructions); benchmarks turn it off, or a repeated request would skip its prefill.
        self._server: Any = start_server(gguf, cfg.threads, cfg.max_model_len or 4096, cfg.parallel,
                                         cache_prompt=cache_prompt, who="the llamacpp teacher")
        super().__init__(dataclasses.replace(cfg, base_url=self._server.listening_address + "/v1", api_key_env=None))
        self.name = f"llamacpp:{cfg.model}"
        self.concurrency = cfg.parallel  # one request per slot: more would only queue inside the server
        self.timeout_s = NO_TIMEOUT_S

    def render(self, req: TeacherRequest) -> str:
        return fmt.render(self.tokenizer, req.messages, add_generation_prompt=True)

    async def _create(self, client: Any, req: TeacherRequest) -> Any:
        return await client.completions.create(prompt=self.render(req), **self._sampling(req))

    def _content(self, choice: Any) -> tuple[str | None, str | None]:
        text = getattr(choice, "text", None)
        if text is not None and not isinstance(text, str):
            raise _Malformed("text is not text")
        return text, None

    def _down(self, why: str) -> EndpointDown:
        return EndpointDown(f"the llama.cpp server of the teacher {self.gguf} stopped answering ({why})")

    def close(self) -> None:
        super().close()
        self._server = None  # dropping the last reference stops the server and frees the model
