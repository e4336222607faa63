"""``tailor generate``: text-to-image with any attached methods; writes PNGs, a grid and a sidecar JSON.

Nothing here names a method. The flags are generated: the sampling settings from
:class:`~tailor.core.generation.GenerateConfig`; one repeatable flag per method declaration
(:class:`~tailor.core.surface.GenerateInput` in each ``MethodSpec``: ``--lora``, ``--control``, ``--ip-adapter``,
...), the shared reference flags they name (``--face``, ``--ip-image``, ``--id-images``), switches such as
``--control-map``, and the folders of prompt tags (``--lora-dir`` for ``<lora:name:w>``, ``--embedding-dir``);
``--apply`` takes any trained artifact.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tailor.errors import ConfigError, InputError

if TYPE_CHECKING:
    from tailor.core.generation import GenerateConfig

#: generation.json's format
GENERATION_VERSION = 2


def option_prompt(flags, values: dict) -> str | None:
    """The value of a declared input option that doubles as the prompt (``--plan TEXT``), if one is given."""
    from tailor.compose import input_options

    given = [values.get(_dest(f)) for f, o in input_options(flags).items() if o.prompt and values.get(_dest(f))]
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


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _fixed_options() -> list[click.Option]:
    return [
        click.Option(["--prompt", "-p", "prompt"], multiple=True, default=(), help="Prompt (repeatable)."),
        click.Option(["--prompts", "prompts"], type=click.Path(), default=None, help="File with one prompt per line."),
        click.Option(["--base"], default="world", help="Base model: world, tiny, a diffusers folder or a checkpoint."),
        click.Option(["--base-config"], default=None, help="Config folder for a single-file base."),
        click.Option(
            ["--apply"],
            multiple=True,
            default=(),
            metavar="PATH[=REF...][:weight[:start:end]]",
            help="Any trained artifact (a training --out folder or a file in it); =REF gives the references its "
            "method reads (repeatable).",
        ),
        click.Option(
            ["--story"],
            type=click.Path(),
            default=None,
            metavar="PROMPTS_FILE",
            help="Make a story: one frame per line of the file, each frame conditioned on the frames before it by "
            "an attached method that reads previous frames (--storygen); frame 1 is plain text-to-image.",
        ),
        click.Option(["--out"], type=click.Path(), default="outputs/generate", help="Output folder."),
        click.Option(
            ["--save-attention"],
            multiple=True,
            default=(),
            metavar="WORD[,WORD...]",
            help="Also write NNN_attn_WORD.png per image: where the prompt's WORD attends (cross-attention maps "
            "averaged over layers and steps, over the image).",
        ),
        click.Option(
            ["--allow-large"],
            is_flag=True,
            default=False,
            help="Allow a size above the limit (16x the base's default pixels, or what free memory holds): memory and "
            "time grow with the pixel count.",
        ),
    ]


def _setting_options() -> list[click.Option]:
    """One option per :class:`GenerateConfig` field (a one-letter field gets a short flag: ``-n``)."""
    from tailor.cli.options import config_options
    from tailor.core.generation import GenerateConfig

    opts = []
    for opt, f in zip(config_options(GenerateConfig), dataclasses.fields(GenerateConfig)):
        if len(f.name) == 1:
            opt = click.Option([f"-{f.name}", f.name], type=opt.type, default=None, help=opt.help)
        cli_default = f.metadata.get("cli_default")
        if cli_default is not None:
            opt.help = f"{f.metadata['help']}  [default: {cli_default}]"
        opts.append(opt)
    return opts


def _method_options(flags) -> list[click.Option]:
    """The declared flags, their shared reference flags and options, switches and prompt-tag folders."""
    from tailor.compose import input_options, shared_inputs

    opts = [
        click.Option(
            [f.name, f.dest], multiple=True, default=(), metavar=f.decl.metavar, help=f.decl.help, callback=_in_order
        )
        for f in flags.values()
    ]
    for f in flags.values():
        opts += _declared_options(f)
    for flag, inp in shared_inputs(flags).items():
        opts.append(click.Option([flag, _dest(flag)], multiple=True, default=(), help=inp.help))
    for flag, opt in input_options(flags).items():
        default = () if opt.multiple else None
        opts.append(click.Option([flag, _dest(flag)], multiple=opt.multiple, default=default, metavar=opt.metavar,
                                 help=opt.help))  # fmt: skip
    ready = {f.decl.input.ready_flag: f.decl.input for f in flags.values() if f.decl.input and f.decl.input.ready_flag}
    opts += [click.Option([flag, _dest(flag)], is_flag=True, default=False, help=i.help) for flag, i in ready.items()]
    for f in flags.values():
        if f.decl.dir_flag:
            what = f"<{f.decl.tag}:name:weight> prompt tags" if f.decl.tag else "prompt words equal to a file name"
            opts.append(
                click.Option(
                    [f.decl.dir_flag, _dest(f.decl.dir_flag)],
                    type=click.Path(),
                    default=None,
                    help=f"Folder of {f.what} files for {what}.",
                )
            )
    return opts


def _declared_options(flag) -> list[click.Option]:
    """``<flag>-<field>`` for each config field the flag's method declares (``GenerateInput.options``)."""
    from tailor.cli.options import config_options
    from tailor.core.method import get_spec

    if not flag.decl.options:
        return []
    config = get_spec(flag.methods[0]).config
    by_name = {o.name: o for o in config_options(config)}
    out = []
    for name in flag.decl.options:
        opt = by_name[name]
        decl = [flag.decl.option_flag(name), _dest(flag.decl.option_flag(name))]
        out.append(click.Option(decl, type=opt.type, multiple=opt.multiple, default=None,
                                help=f"{flag.name}: {opt.help}"))  # fmt: skip
    return out


def _in_order(ctx: click.Context, param: click.Parameter, value):
    """Record the method flags in command-line order (click processes given options in the order they appear), so
    methods attach in the order the user wrote them."""
    if value:
        ctx.meta.setdefault("tailor.flag_order", []).append(param.name)
    return value


def _check_unique(params: list[click.Option]) -> None:
    seen: dict[str, str] = {}
    for p in params:
        for o in p.opts:
            if o in seen:
                raise RuntimeError(f"two generate options declare {o}; rename one method's GenerateInput flag.")
            seen[o] = p.name


def make_generate_command() -> click.Command:
    """``tailor generate``, built from :class:`GenerateConfig` and the registry's declarations."""
    from tailor.compose import generate_flags

    flags = generate_flags()
    params = _fixed_options() + _setting_options() + _method_options(flags)
    _check_unique(params)

    def callback(**values):
        order = click.get_current_context().meta.get("tailor.flag_order", [])
        run(flags, values, order)

    return click.Command(
        "generate",
        callback=callback,
        params=params,
        help="Generate images: PNGs, grid.png and generation.json (prompts, seeds, settings) in --out.",
        short_help="Generate images with any attached methods.",
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def generate(**values) -> None:
    """``tailor generate`` from Python, with the flags' names as keywords (``lora=["a.safetensors:0.8"]``,
    ``n=1``, ``control_map=True``); method flags attach in keyword order."""
    from tailor.compose import generate_flags

    cmd = make_generate_command()
    unknown = sorted(set(values) - {p.name for p in cmd.params})
    if unknown:
        raise ConfigError(f"tailor generate has no option {unknown[0]!r}; see `tailor generate --help`.")
    merged = {p.name: (() if p.multiple else p.default) for p in cmd.params}
    for k, v in values.items():
        param = next(p for p in cmd.params if p.name == k)
        merged[k] = tuple(v if isinstance(v, list | tuple) else [v]) if param.multiple and v is not None else v
    run(generate_flags(), merged, [k for k in values])


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
    shared = {flag: list(values.get(_dest(flag)) or ()) for flag in shared_inputs(flags)}
    options = {flag: values.get(_dest(flag)) for flag in input_options(flags) if values.get(_dest(flag))}
    used = set()
    rank = {dest: i for i, dest in enumerate(order or [])}
    for f in sorted(flags.values(), key=lambda f: rank.get(f.dest, len(rank))):
        given_values = list(values.get(f.dest) or ())
        if not given_values:
            stray = [n for n in f.decl.options if values.get(_dest(f.decl.option_flag(n))) not in (None, ())]
            if stray:
                raise ConfigError(f"{f.decl.option_flag(stray[0])} is given without {f.name}; add {f.name} IMG.")
            continue
        inp = f.decl.input
        ready = bool(values.get(_dest(inp.ready_flag))) if inp and inp.ready_flag else False
        config_options = {n: values.get(_dest(f.decl.option_flag(n))) for n in f.decl.options}
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
    tag_dirs = {f.decl.tag: values.get(_dest(f.decl.dir_flag)) for f in flags.values() if f.decl.tag}
    texts = apply_prompt_tags(pipe, texts, tag_dirs)
    name_dirs = {f.name: values.get(_dest(f.decl.dir_flag)) for f in flags.values() if f.decl.by_name}
    apply_name_matches(pipe, texts, name_dirs)
    return texts


def run(flags, values: dict, order: list[str] | None = None) -> None:
    import tailor
    from tailor.core.bounds import check_generation_size
    from tailor.core.outputs import guarded_out

    story = values.get("story")
    texts = read_story(values, story) if story else read_prompts(values.get("prompt"), values.get("prompts"),
                                                                 option_prompt(flags, values))  # fmt: skip
    config = settings_from(values)
    if story and values.get("n") is None:
        config = config.replace(n=1)
    if story and config.n != 1:
        raise ConfigError(f"--story makes one image per frame; drop -n {config.n} (or run the story once per seed).")
    if (story or values.get("save_attention")) and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--story and --save-attention run in one process; run tailor generate without accelerate.")
    # before the model loads: a file or a user's folder as --out is refused at once, a second writer too
    with guarded_out(values["out"], "tailor generate") as out:
        comps = tailor.load_components(values["base"], config=values.get("base_config"))
        pipe = tailor.Pipeline(comps)
        size = (config.width or comps.default_size, config.height or comps.default_size)
        check_generation_size(*size, comps, allow_large=bool(values.get("allow_large")))
        texts = attach_all(pipe, flags, values, texts, size, order)
        store, tokens = watch_attention(comps, texts, values.get("save_attention") or ())
        if story:
            result = generate_story(pipe, texts, config)
            write_outputs(out, result, config, len(texts), cols=len(texts))
        elif store is None:
            from tailor.cli.generate_batches import generate_prompts

            generate_prompts(pipe, texts, config, out, write_outputs)
        else:
            result = pipe.generate(texts, config, progress=True)
            write_outputs(out, result, config, len(texts))
        if store is not None:
            store.detach()
            write_attention(out, result, store, tokens)


def read_story(values: dict, story) -> list[str]:
    """The frame prompts of ``--story FILE`` (at least two lines; not together with --prompt / --prompts)."""
    if values.get("prompt") or values.get("prompts"):
        raise ConfigError("--story reads the frame prompts from its file; drop --prompt / --prompts.")
    prompts = read_prompts([], story)
    if len(prompts) < 2:
        raise InputError(f"story file {story} holds one prompt; a story needs at least two lines, one prompt per "
                         f"frame.")  # fmt: skip
    return prompts


def generate_story(pipe, prompts: list[str], config):
    """Frame k conditions on frames 0..k-1 through every attachment that reads previous frames (a method with
    ``story_frames = True`` takes them as its ``frames`` / ``frame_prompts`` inputs); frame 1 has none."""
    import dataclasses as dc

    import numpy as np

    readers = [a for a in pipe.attachments if getattr(a.method, "story_frames", False)]
    if not readers:
        raise ConfigError("--story needs a method that reads the previous frames; attach one with --storygen PATH.")
    images, arrays, seeds = [], [], []
    result = None
    for k, prompt in enumerate(prompts):
        for a in readers:
            a.inputs["frames"] = list(images)
            a.inputs["frame_prompts"] = list(prompts[:k])
        result = pipe.generate([prompt], config, progress=True)
        images += result.images
        arrays.append(result.array)
        seeds += result.seeds
    for a in readers:
        a.inputs.pop("frames", None)
        a.inputs.pop("frame_prompts", None)
    return dc.replace(result, images=images, array=np.concatenate(arrays), seeds=seeds, prompts=list(prompts),
                      settings={**result.settings, "story": True})  # fmt: skip


def watch_attention(comps, prompts: list[str], values) -> tuple:
    """``--save-attention WORD[,WORD...]``: an attention store on the UNet and each (prompt, word)'s token positions,
    checked before anything is generated; (None, {}) when no word is asked for."""
    from tailor.core.attention_store import AttentionStore, word_tokens

    words = [w.strip() for v in values for w in str(v).split(",") if w.strip()]
    if not words:
        return None, {}
    tokens = {(p, w): word_tokens(comps.tokenizer, p, w) for p in dict.fromkeys(prompts) for w in words}
    return AttentionStore().attach(comps.unet), tokens


def write_attention(out: Path, result, store, tokens: dict) -> None:
    """``NNN_attn_WORD.png`` beside each image: the word's heatmap blended over the image."""
    import re

    from PIL import Image

    from tailor.core.attention_store import colorize
    from tailor.core.io import atomic_path

    n, (h, w) = len(result.images), result.array.shape[1:3]
    for (prompt, word), idx in tokens.items():
        maps = store.heatmaps([idx], (h, w), images=n)[:, 0]
        for i, p in enumerate(result.prompts):
            if p != prompt:
                continue
            name = f"{i:03d}_attn_{re.sub(r'[^A-Za-z0-9_-]+', '_', word)}.png"
            with atomic_path(out / name) as tmp:
                Image.fromarray(colorize(maps[i].numpy(), result.array[i])).save(tmp, format="PNG")
    click.echo(f"wrote attention maps of {', '.join(dict.fromkeys(w for _, w in tokens))} beside the images")


def write_outputs(
    out: Path, result, config, n_prompts: int, cols: int | None = None, files_written: bool = False
) -> None:
    """The PNGs (unless ``files_written``), ``grid.png`` and ``generation.json`` of one generation into ``out``."""
    from tailor.core.images import make_grid
    from tailor.core.io import atomic_path, write_json

    records = []
    for i, (img, p, s) in enumerate(zip(result.images, result.prompts, result.seeds)):
        name = f"{i:03d}.png"
        if not files_written:
            with atomic_path(out / name) as tmp:
                img.save(tmp, format="PNG")
        records.append({"file": name, "prompt": p, "seed": s})
    with atomic_path(out / "grid.png") as tmp:
        make_grid(result.images, cols=cols or (config.n if n_prompts > 1 else None)).save(tmp, format="PNG")
    record = {"version": GENERATION_VERSION, "images": records, "settings": result.settings}
    write_json(out / "generation.json", record)
    click.echo(f"wrote {len(records)} images, grid.png and generation.json to {out}")
