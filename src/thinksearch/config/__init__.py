"""Configuration: one dataclass per stage, the same fields in YAML, CLI flags on top.

Every stage's settings are a dataclass whose fields carry a docstring (the string literal
right after the field). A YAML file holds one section per stage (``synth:``, ``train:``,
``eval:`` ...) with the same field names; YAML anchors share a block (a search backend, say)
between sections. Flags override the YAML: field ``lora_r`` is ``--lora-r``, a nested field
``teacher.base_url`` is ``--teacher-base-url``. Unknown keys and bad values raise
:class:`ConfigError` with one line naming the flag, the YAML key and what is allowed.

- ``flags``: dataclass fields as flags, checked values, errors that name the flag;
- ``yamlio``: YAML files, ``--set`` overrides, one stage's config from YAML and flags;
- ``data_stages``: search, teacher, synth; ``model_stages``: train, agent, serve, eval, run.

Import from here (``from thinksearch.config import TrainConfig, build``); the modules are
the layout, not the interface.
"""

from thinksearch.config.data_stages import SearchConfig, SynthConfig, TeacherConfig
from thinksearch.config.flags import (FieldError, add_flags, check_choice, check_positive, field_docs, flag_name,
                                      from_dict, invalid, overrides_from_args, to_dict)
from thinksearch.config.model_stages import AgentConfig, EvalConfig, RunConfig, ServeConfig, TrainConfig
from thinksearch.config.yamlio import build, load_yaml, merge, parse_set
from thinksearch.errors import ConfigError

__all__ = [
    "AgentConfig", "ConfigError", "EvalConfig", "FieldError", "RunConfig", "SearchConfig", "ServeConfig",
    "SynthConfig", "TeacherConfig", "TrainConfig", "add_flags", "build", "check_choice", "check_positive",
    "field_docs", "flag_name", "from_dict", "invalid", "load_yaml", "merge", "overrides_from_args", "parse_set",
    "to_dict",
]
