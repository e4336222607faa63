"""``tailor generate``: text-to-image with any attached methods; writes PNGs, a grid and a sidecar JSON.

Nothing here names a method. The flags are generated: the sampling settings from
:class:`~tailor.core.generation.GenerateConfig`; one repeatable flag per method declaration
(:class:`~tailor.core.surface.GenerateInput` in each ``MethodSpec``: ``--lora``, ``--control``, ``--ip-adapter``,
...), the shared reference flags they name (``--face``, ``--ip-image``, ``--id-images``), switches such as
``--control-map``, and the folders of prompt tags (``--lora-dir`` for ``<lora:name:w>``, ``--embedding-dir``);
``--apply`` takes any trained artifact.
"""

from __future__ import annotations

import os

import click

from tailor.cli.generate_inputs import attach_all, option_prompt, read_prompts, read_story, settings_from
from tailor.cli.generate_options import generate_options
from tailor.cli.generate_outputs import watch_attention, write_attention, write_outputs
from tailor.errors import ConfigError

__all__ = ["generate", "make_generate_command", "run", "settings_from"]


def make_generate_command() -> click.Command:
    """``tailor generate``, built from :class:`GenerateConfig` and the registry's declarations."""
    from tailor.compose import generate_flags

    flags = generate_flags()
    params = generate_options(flags)

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

            generate_prompts(pipe, texts, config, out)
        else:
            result = pipe.generate(texts, config, progress=True)
            write_outputs(out, result, config, len(texts))
        if store is not None:
            store.detach()
            write_attention(out, result, store, tokens)


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
