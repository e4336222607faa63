"""Composition from what methods declare: user-facing values (``--lora PATH:0.8``, ``--face IMG``, ``<lora:name>``
prompt tags, ``--apply``) turned into pipeline attachments.

Every method's :class:`~tailor.core.surface.GenerateInput` (in its ``MethodSpec``) says which flag takes its files,
which reference inputs it reads and how; this package reads those declarations from the registry, so ``tailor
generate``, the benches, the Python API and the web UI share one path and a new method needs no edit here.

    from tailor.compose import attach_flag_values, generate_flags
    flags = generate_flags()                     # {"--lora": Flag(...), "--control": Flag(...), ...}
    attach_flag_values(pipe, flags["--ip-adapter"], ["world=ref.png:0.5"])
"""

from tailor.compose.flags import (
    Flag,
    apply_values,
    attach_flag_values,
    flag_of,
    generate_flags,
    input_options,
    load_for,
    load_kind,
    shared_inputs,
)
from tailor.compose.tags import apply_name_matches, apply_prompt_tags, parse_prompt_tags

__all__ = [
    "Flag",
    "apply_name_matches",
    "apply_prompt_tags",
    "apply_values",
    "attach_flag_values",
    "flag_of",
    "generate_flags",
    "input_options",
    "load_for",
    "load_kind",
    "parse_prompt_tags",
    "shared_inputs",
]
