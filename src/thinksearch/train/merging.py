"""Merge: fold a trained LoRA adapter into its base model and write a plain transformers model directory.

Run as: ``thinksearch merge RUN_DIR --out merged_model``
"""

from __future__ import annotations

from pathlib import Path

from thinksearch import models
from thinksearch.errors import ThinksearchError
from thinksearch.files import replacing_dir, write_json_atomic

MERGED_META = "thinksearch_merged.json"


def merge(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None, dtype: str = "auto",
          overwrite: bool = False) -> Path:
    """Fold a LoRA adapter into its base; write a model directory plain transformers loads.

    The base is the one recorded in the adapter (``thinksearch_adapter.json``) unless ``base``
    is given. The merge is computed in fp32 and saved in ``dtype`` (``auto``: the base's own).
    The directory appears only once complete.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer

    adir = Path(adapter_dir).expanduser()
    if not (adir / "adapter_config.json").is_file():
        raise ThinksearchError(f"'{adapter_dir}' is not a LoRA adapter directory (no adapter_config.json)")
    out = Path(out_dir).expanduser()
    if out.resolve() == adir.resolve():
        raise ThinksearchError("--out must differ from the adapter directory")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ThinksearchError(f"{out} already exists and is not empty; pass --overwrite to replace it")
        if out.is_dir() and not (out / MERGED_META).is_file():
            raise ThinksearchError(f"{out} holds files that are not a merged thinksearch model; choose another --out")
    base_ref = base or models.adapter_base(adir)
    resolved = models.resolve(base_ref)
    if resolved.adapter:
        raise ThinksearchError(f"--base '{base_ref}' carries an adapter; give the plain base model")
    stored = getattr(AutoConfig.from_pretrained(resolved.path, gguf_file=resolved.gguf_file), "dtype", None)
    if dtype == "auto":
        target = stored if isinstance(stored, torch.dtype) else models.pick_dtype(str(stored or "float32"), "cpu")
    else:
        target = models.pick_dtype(dtype, "cpu")

    model, tokenizer = models.load(resolved, dtype="float32", device="cpu")
    model = models.apply_adapter(model, str(adir))
    merged = model.merge_and_unload()
    merged.to(target)
    merged.hf_quantizer = None  # a GGUF-loaded base refuses to save otherwise; its weights are plain floats now
    if hasattr(merged.config, "quantization_config"):
        del merged.config.quantization_config
    if (adir / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(adir))

    with replacing_dir(out) as tmp:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_json_atomic(tmp / MERGED_META, {"base_model": base_ref, "adapter": str(adir), "dtype": str(target)})
    return out
