"""The options of ``tailor generate``: fixed ones, one per :class:`~tailor.core.generation.GenerateConfig` field,
and those the methods declare (their flags, shared reference flags, input options, switches, prompt-tag folders)."""

from __future__ import annotations

import dataclasses

import click


def dest(flag: str) -> str:
    """The keyword a flag's value is passed under (``--lora-dir`` -> ``lora_dir``)."""
    return flag.lstrip("-").replace("-", "_")


def fixed_options() -> list[click.Option]:
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


def setting_options() -> list[click.Option]:
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


def method_options(flags) -> list[click.Option]:
    """The declared flags, their shared reference flags and options, switches and prompt-tag folders."""
    from tailor.compose import input_options, shared_inputs

    opts = [
        click.Option(
            [f.name, f.dest], multiple=True, default=(), metavar=f.decl.metavar, help=f.decl.help, callback=in_order
        )
        for f in flags.values()
    ]
    for f in flags.values():
        opts += declared_options(f)
    for flag, inp in shared_inputs(flags).items():
        opts.append(click.Option([flag, dest(flag)], multiple=True, default=(), help=inp.help))
    for flag, opt in input_options(flags).items():
        default = () if opt.multiple else None
        opts.append(click.Option([flag, dest(flag)], multiple=opt.multiple, default=default, metavar=opt.metavar,
                                 help=opt.help))  # fmt: skip
    ready = {f.decl.input.ready_flag: f.decl.input for f in flags.values() if f.decl.input and f.decl.input.ready_flag}
    opts += [click.Option([flag, dest(flag)], is_flag=True, default=False, help=i.help) for flag, i in ready.items()]
    for f in flags.values():
        if f.decl.dir_flag:
            what = f"<{f.decl.tag}:name:weight> prompt tags" if f.decl.tag else "prompt words equal to a file name"
            opts.append(
                click.Option(
                    [f.decl.dir_flag, dest(f.decl.dir_flag)],
                    type=click.Path(),
                    default=None,
                    help=f"Folder of {f.what} files for {what}.",
                )
            )
    return opts


def declared_options(flag) -> list[click.Option]:
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
        decl = [flag.decl.option_flag(name), dest(flag.decl.option_flag(name))]
        out.append(click.Option(decl, type=opt.type, multiple=opt.multiple, default=None,
                                help=f"{flag.name}: {opt.help}"))  # fmt: skip
    return out


def in_order(ctx: click.Context, param: click.Parameter, value):
    """Record the method flags in command-line order (click processes given options in the order they appear), so
    methods attach in the order the user wrote them."""
    if value:
        ctx.meta.setdefault("tailor.flag_order", []).append(param.name)
    return value


def check_unique(params: list[click.Option]) -> None:
    seen: dict[str, str] = {}
    for p in params:
        for o in p.opts:
            if o in seen:
                raise RuntimeError(f"two generate options declare {o}; rename one method's GenerateInput flag.")
            seen[o] = p.name


def generate_options(flags) -> list[click.Option]:
    """Every option of ``tailor generate`` in help order (fixed, settings, methods'), each flag declared once."""
    params = fixed_options() + setting_options() + method_options(flags)
    check_unique(params)
    return params
