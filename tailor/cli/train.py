"""``tailor train <method>``: one subcommand per registered method, flags generated from the configs.

Common flags come from :class:`~tailor.core.training.TrainConfig` (``--base``, ``--out``, ``--steps``,
``--batch-size``, ``--lr``, ``--seed``, ``--checkpoint-every``, ``--resume latest`` ...), method flags from the
method's config dataclass. ``--config FILE`` reads a flat YAML mapping of the same names; flags override it.

Every method also takes the subject flags ``--images DIR --token WORD --class NOUN`` (the same on all of them):
``--images`` is the training data; ``--token`` / ``--class`` set the method's own fields named in its
``MethodSpec.subject_fields`` (DreamBooth's identifier and class word, TI's token and init word) and make the
fallback caption ``a {token} {class}`` of images without a ``.txt`` caption (kohya-style captions win).
"""

from __future__ import annotations

import dataclasses

import click

from tailor.cli.options import config_options, given
from tailor.core.config import load_yaml
from tailor.core.method import MethodSpec, get_spec, method_names
from tailor.errors import ConfigError


def split_config(data: dict, train_cls, method_cls, source: str) -> tuple[dict, dict]:
    """Split a flat mapping into (train options, method options); unknown keys are an error naming ``source``."""
    train_names = {f.name for f in dataclasses.fields(train_cls)}
    method_names = {f.name for f in dataclasses.fields(method_cls)}
    t, m = {}, {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in train_names:
            t[name] = value
        elif name in method_names:
            m[name] = value
        else:
            valid = ", ".join(sorted(train_names | method_names))
            raise ConfigError(f"{source}: unknown option {key!r}; valid options are {valid}.")
    return t, m


def build_config(cls, from_file: dict, from_flags: dict, source: str | None, what: str):
    """``cls`` from file values overridden by flags; an error the file alone causes names the file."""
    try:
        return cls.from_dict({**from_file, **from_flags}, source=what)
    except ConfigError as e:
        if source and from_file:
            try:
                cls.from_dict(from_file, source=what)
            except ConfigError as alone:
                if str(alone) == str(e):
                    raise ConfigError(f"{source}: {e}") from None
        raise


SUBJECT_HELP = {
    "images": "folder of the subject's images (same as --data; .txt captions beside them are used when present)",
    "token": "the subject's identifier / placeholder word [V] (e.g. sks)",
    "class": "the subject's class noun (e.g. star, dog); TI's init word defaults to it",
}


def subject_options(spec: MethodSpec) -> list[click.Option]:
    """``--images``, ``--token``, ``--class`` unless the method's config already has a flag of that name."""
    own = {f.name for f in dataclasses.fields(spec.config)}
    return [
        click.Option([f"--{name}", f"subject_{name}"], default=None, help=help_text)
        for name, help_text in SUBJECT_HELP.items()
        if name not in own
    ]


def subject_values(spec: MethodSpec, values: dict) -> None:
    """Fold the subject flags into the training / method values (in place); explicit own flags win."""
    images = values.pop("subject_images", None)
    if images is not None:
        if values.get("data") is not None:
            raise ConfigError("give the training images once: --images or --data, not both.")
        values["data"] = images
    words = {"token": values.pop("subject_token", None), "class": values.pop("subject_class", None)}
    if "token" in values and words["token"] is None:  # the method's own --token flag (TI)
        words["token"] = values["token"]
    for name, word in words.items():
        field_name = spec.subject_fields.get(name)
        if word is not None and field_name and values.get(field_name) is None:
            values[field_name] = word
    given_words = [w for w in (words["token"], words["class"]) if w]
    if given_words and values.get("default_caption") is None:
        values["default_caption"] = " ".join(["a", *given_words])


def train_base_folder(base: str):
    """The folder ``base`` is read from (None: no folder, so no base defaults)."""
    from tailor.core.training.defaults import base_folder

    folder = base_folder(base)
    if folder is None and str(base) == "world":  # without the core resolver: the world zoo's base folder
        from tailor.errors import TailorError

        try:
            from tailor.world.zoo import base_path

            folder = base_path()
        except TailorError:  # weights missing: training names the problem
            return None
    return folder


def options_line(name: str, base: str, train_cfg, method, sources: dict[str, str], defaults, also=()) -> str:
    """One or two lines: the chosen lr / steps / batch size (and the options named in ``also``: those the base's
    defaults set), each with where it came from (flag, --config, base defaults, default)."""
    from tailor.core.training.defaults import describe

    shown = ("lr", "steps", "batch_size")
    values = {k: getattr(train_cfg, k, getattr(method.config, k, None)) for k in (*shown, *also)}
    if train_cfg.lr is None:
        values["lr"], sources = float(getattr(method, "default_lr", 1e-4)), {**sources, "lr": "method default"}
    line = f"training {name} on {base}: {describe(values, sources, shown, also)}"
    if defaults is not None:
        line += f"\n  (base defaults from {defaults}; a flag or --config value overrides each)"
    return line


def make_train_command(spec: MethodSpec, name: str | None = None, hidden: bool = False) -> click.Command:
    from tailor.core.training import TrainConfig

    def callback(**values):
        from tailor.core.training import train
        from tailor.core.training.defaults import base_defaults, defaults_file, resolve_train_options

        subject_values(spec, values)
        source = values.pop("config", None)
        file_values = load_yaml(source) if source else {}
        ft, fm = split_config(file_values, TrainConfig, spec.config, str(source))
        flags = {**given(values, TrainConfig), **given(values, spec.config)}
        base = flags.get("base", ft.get("base", TrainConfig.__dataclass_fields__["base"].default))
        folder = train_base_folder(base)
        recommended = base_defaults(folder, spec.name)
        bt, bm = split_config(recommended, TrainConfig, spec.config, str(defaults_file(folder)))
        train_cfg = build_config(TrainConfig, {**bt, **ft}, given(values, TrainConfig), source, "training options")
        method_cfg = build_config(
            spec.config, {**bm, **fm}, given(values, spec.config), source, f"{spec.name} options"
        )
        method = spec.method(method_cfg)
        _, sources = resolve_train_options(spec.name, folder, flags, {**ft, **fm})
        click.echo(options_line(spec.name, base, train_cfg, method, sources, defaults_file(folder), [*bt, *bm]))
        result = train(method, train_cfg)  # train() guards --out: one writer, never a user's folder
        click.echo(f"trained {spec.name}: {result.artifact} (final loss {result.loss:.4f}, {result.seconds:.0f} s)")

    params = config_options(TrainConfig) + config_options(spec.config)
    params.append(
        click.Option(["--config"], type=click.Path(), default=None, help="YAML file of options (flags override it).")
    )
    params += subject_options(spec)
    doc = f"Train {spec.name}: {spec.summary}." + (f" Paper: {spec.paper}." if spec.paper else "")
    return click.Command(
        name or spec.name, callback=callback, params=params, help=doc, short_help=spec.summary, hidden=hidden
    )


class TrainGroup(click.Group):
    """``tailor train <method>``: one command per registered method (and a dashed alias of each ``a_b`` name),
    each built when asked for, so a training process does not carry every method's command and options."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(method_names())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name.replace("-", "_") not in method_names():
            return None
        spec = get_spec(cmd_name)  # imports this method's folder only
        alias = cmd_name != spec.name  # `tailor train t2i-adapter` works as well as `t2i_adapter`
        return make_train_command(spec, cmd_name if alias else None, hidden=alias)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """Click's "No such command" usage error, with the registered methods closest to a typo."""
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib

            close = difflib.get_close_matches(name.replace("-", "_"), list(method_names()), n=3)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint} Run 'tailor methods' for the list.")
        return super().resolve_command(ctx, args)


def train_group() -> click.Group:
    return TrainGroup("train", help="Train a method: tailor train <method> --base world --steps N --out DIR.")
