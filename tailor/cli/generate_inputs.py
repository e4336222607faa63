"""What ``tailor generate`` reads from its flags: the prompts (``--prompt`` / ``--prompts`` / an input option /
``--story``), the settings, and the methods it attaches to the pipeline."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from tailor.cli.generate_options import dest
from tailor.errors import ConfigError, InputError

if TYPE_CHECKING:
    from tailor.core.generation import GenerateConfig


def option_prompt(flags, values: dict) -> str | None:
    """The value of a declared input option that doubles as the prompt (``--plan TEXT``), if one is given."""
    from tailor.compose import input_options

    given = [values.get(dest(f)) for f, o in input_options(flags).items() if o.prompt and values.get(dest(f))]
    return str(given[0]) if given else None


def read_prompts(prompt: list[str], prompts_file: Path | None, fallback: str | None = None) -> list[str]:
    """--prompt values and --prompts lines; ``fallback`` (an input option such as --plan) when neither is given."""
    if not prompt and prompts_file is None and fallback:
        return [fallback]
    prompts = list(prompt or [])
    if prompts_file is not None:
        prompts_file = Path(prompts_file)
        if not prompts_file.is_file():
            raise InputError(f"prompts file {prompts_file} does not exist; check the path.")
        try:
            lines = prompts_file.read_text().splitlines()
        except UnicodeDecodeError as e:
            raise InputError(f"prompts file {prompts_file} is not UTF-8 text; save it as UTF-8.") from e
        from_file = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not from_file:
            raise InputError(f"prompts file {prompts_file} holds no prompt (only blank or # lines); add one per line.")
        prompts += from_file
    if not prompts:
        raise ConfigError("no prompt given; pass --prompt TEXT (repeatable) or --prompts FILE.")
    return prompts


def read_story(values: dict, story) -> list[str]:
    """The frame prompts of ``--story FILE`` (at least two lines; not together with --prompt / --prompts)."""
    if values.get("prompt") or values.get("prompts"):
        raise ConfigError("--story reads the frame prompts from its file; drop --prompt / --prompts.")
    prompts = read_prompts([], story)
    if len(prompts) < 2:
        raise InputError(f"story file {story} holds one prompt; a story needs at least two lines, one prompt per "
                         f"frame.")  # fmt: skip
    return prompts


def settings_from(values: dict) -> GenerateConfig:
    """The :class:`GenerateConfig` the parsed flags give (the command line's defaults where none is given)."""
    from tailor.cli.options import given
    from tailor.core.generation import GenerateConfig

    fields = dataclasses.fields(GenerateConfig)
    chosen = {f.name: f.metadata["cli_default"] for f in fields if "cli_default" in f.metadata}
    return GenerateConfig.from_dict(chosen | given(values, GenerateConfig), source="generate options")


def attach_all(
    pipe, flags, values: dict, texts: list[str], size: tuple[int, int], order: list[str] | None = None
) -> list[str]:
    """Attach ``--apply``, every declared flag's values (in ``order``: flag dests as written on the command line)
    and the prompt tags; returns the prompts without tags."""
    from tailor.compose import (
        apply_name_matches,
        apply_prompt_tags,
        apply_values,
        attach_flag_values,
        input_options,
        shared_inputs,
    )

    apply_values(pipe, list(values.get("apply") or ()), size)
    shared = {flag: list(values.get(dest(flag)) or ()) for flag in shared_inputs(flags)}
    options = {flag: values.get(dest(flag)) for flag in input_options(flags) if values.get(dest(flag))}
    used = set()
    rank = {dest: i for i, dest in enumerate(order or [])}
    for f in sorted(flags.values(), key=lambda f: rank.get(f.dest, len(rank))):
        given_values = list(values.get(f.dest) or ())
        if not given_values:
            stray = [n for n in f.decl.options if values.get(dest(f.decl.option_flag(n))) not in (None, ())]
            if stray:
                raise ConfigError(f"{f.decl.option_flag(stray[0])} is given without {f.name}; add {f.name} IMG.")
            continue
        inp = f.decl.input
        ready = bool(values.get(dest(inp.ready_flag))) if inp and inp.ready_flag else False
        config_options = {n: values.get(dest(f.decl.option_flag(n))) for n in f.decl.options}
        config_options = {
            k: list(v) if isinstance(v, tuple) else v for k, v in config_options.items() if v not in (None, ())
        }
        attach_flag_values(
            pipe, f, given_values, shared, ready=ready, size=size, options=options, config_options=config_options
        )
        used.add(inp.flag if inp else None)
        used.update(o.flag for o in (inp.options if inp else ()))
    unused = [flag for flag, v in shared.items() if v and flag not in used]
    if unused:
        takers = [f.name for f in flags.values() if f.decl.input and f.decl.input.flag == unused[0]]
        raise ConfigError(f"{unused[0]} is given but nothing reads it; pass it with {' or '.join(takers)}.")
    unused = [flag for flag in options if flag not in used]
    if unused:
        readers = [(f.name, f.decl.input.options) for f in flags.values() if f.decl.input]
        takers = [name for name, opts in readers if unused[0] in [o.flag for o in opts]]
        raise ConfigError(f"{unused[0]} is given but nothing reads it; pass it with {' or '.join(takers)}.")
    tag_dirs = {f.decl.tag: values.get(dest(f.decl.dir_flag)) for f in flags.values() if f.decl.tag}
    texts = apply_prompt_tags(pipe, texts, tag_dirs)
    name_dirs = {f.name: values.get(dest(f.decl.dir_flag)) for f in flags.values() if f.decl.by_name}
    apply_name_matches(pipe, texts, name_dirs)
    return texts
