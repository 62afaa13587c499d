"""YAML config files, ``--set KEY=VALUE`` overrides, and the merge of both with flags.

A YAML file holds one section per stage (``synth:``, ``train:``, ``eval:`` ...) with the
dataclass's field names; YAML anchors share a block (a search backend, say) between sections.
:func:`build` gives one stage's config: its YAML section, then the flags on top.

A library module; ``thinksearch.config`` re-exports its public names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, TypeVar

from thinksearch.config.flags import from_dict
from thinksearch.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with one-line errors."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections, got {type(data).__name__}")
    return data


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``over`` wins; nested mappings merge."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def build(cls: type[T], config_path: str | Path | None, section: str, overrides: Mapping[str, Any]) -> T:
    """The config of one stage: YAML section (if a file is given), then flag overrides."""
    data: dict[str, Any] = {}
    if config_path is not None:
        whole = load_yaml(config_path)
        data = whole.get(section) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{config_path}: section '{section}' must be a mapping")
    return from_dict(cls, merge(data, overrides), section)


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["train.lora_r=8", "eval.models=[a,b]"]`` → nested dict; values parsed as YAML."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set: {key} conflicts with another --set")
        node[parts[-1]] = value
    return out
