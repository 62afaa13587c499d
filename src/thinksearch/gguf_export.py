"""Write a tuned model (base + adapter, or a merged directory) as a GGUF file llama.cpp runs.

llama.cpp decodes this model over twice as fast as transformers on a CPU
(bench/results/infer.json), but it reads only GGUF. A LoRA fine-tune changes neither the
architecture nor the tokenizer, so the GGUF of the base model already holds everything
except the new weights: its metadata (architecture, tokenizer, chat template) is copied
as is, and the weights come from the tuned model, merged, mapped to GGUF tensor names with
the ``gguf`` package's own name tables and stored as Q8_0 (or f16 / f32). Every tensor of
the base GGUF must find a tuned tensor of the same shape, so a model of another
architecture is refused instead of written wrong.

Beside the GGUF goes an Ollama ``Modelfile``: its template renders tools, calls and tool results
in the Qwen Hermes format exactly as Qwen2.5's Jinja template does (the text before a call is kept,
where Ollama's stock Qwen template drops it), with the system prompt and the agent's sampling settings.

Run as: ``thinksearch export-gguf qwen2.5-coder-0.5b-instruct+out/adapter --out tuned.gguf``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from thinksearch.errors import ThinksearchError
from thinksearch.files import write_text_atomic

QType = Literal["q8_0", "f16", "f32"]


def base_gguf(ref: str, adapter: str | None = None) -> Path | None:
    """The GGUF of the base model behind a reference (an offline alias's assembled file, or a .gguf path)."""
    from thinksearch import models
    from thinksearch.refs import gguf_of

    r = models.resolve(ref, adapter, prepare_alias=False)
    return gguf_of(r.ref) if r.kind in ("alias", "gguf") else None


def _state_dict(ref: str, adapter: str | None) -> dict[str, Any]:
    """The tuned weights, LoRA merged in, as float32 numpy arrays keyed by transformers names."""
    from thinksearch import models

    model, _ = models.load(ref, adapter, dtype="float32", device="cpu")  # load() merges an adapter in
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def export_gguf(ref: str, out: str | Path, like: str | Path | None = None, adapter: str | None = None,
                qtype: QType = "q8_0", progress: bool = True, system: str | None = None) -> Path:
    """Write ``ref`` (+ ``adapter``) as a GGUF at ``out`` with the metadata of ``like`` (the base's GGUF),
    and an Ollama ``Modelfile`` beside it (``system``: its system prompt, default the reference one).

    The file appears only when complete (written beside ``out``, then renamed).
    """
    import gguf
    import numpy as np

    like_path = Path(like).expanduser() if like else base_gguf(ref, adapter)
    if like_path is None or not like_path.is_file():
        from thinksearch import models

        hint = models.gguf_path(models.DEFAULT_ALIAS)
        raise ThinksearchError(f"no GGUF of the base model found for {ref!r}; pass --like BASE.gguf "
                               "(the GGUF of the model it was tuned from" + (f", e.g. {hint})" if hint else ")"))
    out = Path(out).expanduser()
    if out.suffix != ".gguf":
        raise ThinksearchError(f"--out must end in .gguf, got {str(out)!r}")
    try:
        reader = gguf.GGUFReader(like_path)
    except (ValueError, OSError) as e:
        raise ThinksearchError(f"cannot read {like_path} as GGUF: {e}") from None
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    arch_id = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), None)
    if arch_id is None:
        raise ThinksearchError(f"{like_path}: unknown GGUF architecture {arch!r}")
    n_blocks = int(reader.fields[f"{arch}.block_count"].contents())
    names = gguf.get_tensor_name_map(arch_id, n_blocks)
    want = {t.name: tuple(int(x) for x in reversed(t.shape.tolist())) for t in reader.tensors}

    state = _state_dict(ref, adapter)
    tensors: dict[str, Any] = {}
    for name, arr in state.items():
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None or new not in want:
            raise ThinksearchError(f"{ref!r} does not match the base GGUF {like_path.name}: it has {name!r}, "
                                   f"which has no place in a {arch} GGUF of {n_blocks} blocks")
        tensors[new] = arr
    if "output.weight" in want and "output.weight" not in tensors and "token_embd.weight" in tensors:
        tensors["output.weight"] = tensors["token_embd.weight"]  # tied embeddings
    missing = sorted(set(want) - set(tensors))
    wrong = [f"{k} {tuple(v.shape)} vs {want[k]}" for k, v in tensors.items() if tuple(v.shape) != want[k]]
    if missing or wrong:
        raise ThinksearchError(f"{ref!r} does not match the base GGUF {like_path.name}: "
                               + (f"missing {', '.join(missing[:3])}" if missing else f"shapes differ: {'; '.join(wrong[:3])}"))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        for field in reader.fields.values():
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF.") \
                    or field.name == gguf.Keys.General.FILE_TYPE:
                continue  # written by GGUFWriter itself, or describing the old weights
            kind = field.types[0]
            writer.add_key_value(field.name, field.contents(), kind,
                                 sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
        writer.add_file_type({"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f16": gguf.LlamaFileType.MOSTLY_F16,
                              "f32": gguf.LlamaFileType.ALL_F32}[qtype])
        items = [(t.name, tensors[t.name]) for t in reader.tensors]  # the base's tensor order
        for name, arr in _progress(items, progress):
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            if arr.ndim == 1 or qtype == "f32":  # norms and biases stay f32, as llama.cpp's converter keeps them
                writer.add_tensor(name, arr)
            elif qtype == "q8_0" and arr.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
                q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
                writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                writer.add_tensor(name, arr.astype(np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    write_text_atomic(out.parent / "Modelfile", modelfile(out.name, system))
    return out


# Ollama's Go template for Qwen2.5 with tools. Ollama hands it .System (the system messages),
# .Tools and .Messages; each branch mirrors a branch of Qwen2.5's Jinja template, byte for byte:
# the tools block appended to the system prompt, an assistant turn's text *and* its calls,
# consecutive tool results in one user turn of <tool_response> blocks, and the generation prompt.
# A final assistant message is left open (Ollama continues it). One difference Go templates cannot
# avoid: Ollama writes a call's arguments and a tool's schema with Go's compact JSON
# ({"query":"…"}), where Jinja's tojson puts a space after ':' and ','.
OLLAMA_TEMPLATE = """\
<|im_start|>system
{{ if .System }}{{ .System }}{{ else }}You are Qwen, created by Alibaba Cloud. You are a helpful assistant.{{ end }}
{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ $prev := "" }}
{{- range $i, $m := .Messages }}
{{- $rest := slice $.Messages $i }}
{{- $last := eq (len $rest) 1 }}
{{- $next := "" }}{{ if not $last }}{{ $next = (index $rest 1).Role }}{{ end }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{- if .ToolCalls }}{{ if .Content }}
{{ .Content }}{{ end }}
{{- range .ToolCalls }}
<tool_call>
{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
</tool_call>
{{- end }}
{{- else }}
{{ .Content }}{{ end }}
{{- if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}
{{- if ne $prev "tool" }}<|im_start|>user{{ end }}
<tool_response>
{{ .Content }}
</tool_response>
{{- if ne $next "tool" }}<|im_end|>
{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant
{{ end }}
{{- $prev = .Role }}
{{- end }}"""


def modelfile(gguf_name: str, system: str | None = None, cfg: Any = None) -> str:
    """An Ollama Modelfile for ``gguf_name`` (a file in the same directory).

    ``cfg`` (an AgentConfig; default its defaults) gives the sampling parameters, so
    ``ollama run`` decodes as ``thinksearch ask`` does.
    """
    from thinksearch import format as fmt
    from thinksearch.config import AgentConfig

    cfg = cfg or AgentConfig()
    system = system if system is not None else (cfg.system_prompt or fmt.SYSTEM_PROMPT)
    if '"""' in system:
        raise ThinksearchError('the system prompt cannot contain """ (the Modelfile quotes it with them)')
    params = [("stop", json.dumps(t)) for t in fmt.END_OF_TURN] + [
        ("temperature", cfg.temperature), ("top_p", cfg.top_p), ("repeat_penalty", cfg.repetition_penalty),
        ("num_ctx", cfg.context_tokens), ("num_predict", cfg.max_new_tokens)]
    return "\n".join([
        "# Ollama: ollama create thinksearch -f Modelfile && ollama run thinksearch",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{OLLAMA_TEMPLATE}"""',
        f'SYSTEM """{system}"""',
        *(f"PARAMETER {k} {v}" for k, v in params),
    ]) + "\n"


def _progress(items: list, show: bool) -> Any:
    if not show:
        return items
    from rich.progress import track

    return track(items, description="quantizing", transient=True)
