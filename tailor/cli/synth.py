"""``tailor synth``: synthetic detection data from real renders of one domain (:mod:`tailor.synth`)."""

from __future__ import annotations

import click


def make_synth_command() -> click.Command:
    from tailor.synth.methods import SYNTH_METHODS

    def callback(method, real, n, out, seed, base, control, scale, steps, guidance, threshold, filter_steps, lora,
                 finetune, finetune_scope):  # fmt: skip
        from tailor.core.outputs import guarded_out
        from tailor.synth import synthesize

        # --lora / --finetune only when given: without them the settings (and outputs) are what they always were
        extra = {
            k: v
            for k, v in {"lora": lora, "finetune": finetune, "finetune_scope": finetune_scope}.items()
            if v is not None
        }
        with guarded_out(out, "tailor synth", inputs=[real]) as folder:
            summary = synthesize(method, real, n, folder, seed=seed, threshold=threshold, filter_steps=filter_steps,
                                 log=click.echo, base=base, steps=steps, guidance=guidance, control=control,
                                 scale=scale, **extra)  # fmt: skip
        if summary is not None:
            click.echo(f"wrote {summary['kept']} of {summary['candidates']} images ({summary['objects']} boxes) and "
                       f"annotations.json to {out}")  # fmt: skip

    methods = "; ".join(f"{k}: {v.summary}" for k, v in SYNTH_METHODS.items())
    return click.Command(
        "synth",
        callback=callback,
        params=[
            click.Option(["--method"], type=click.Choice(list(SYNTH_METHODS)), default="layout", help=methods),
            click.Option(["--real"], required=True, help="`tailor world render --kind relation` folder (one domain)."),
            click.Option(["--n", "n"], type=int, required=True, help="Layouts to sample (failures are dropped)."),
            click.Option(["--out"], required=True, help="Output folder (COCO: images/ + annotations.json)."),
            click.Option(["--seed"], type=int, default=0, help="Seed of the layouts and images.  [default: 0]"),
            click.Option(["--base"], default="world", help="Base model.  [default: world]"),
            click.Option(
                ["--control"],
                default=None,
                help="layout: the ControlNet (default: shipped 'layout'); odgen: the model (default: 'odgen').",
            ),  # fmt: skip
            click.Option(
                ["--scale"], type=float, default=1.0, help="The ControlNet's / ODGEN's weight.  [default: 1.0]"
            ),
            click.Option(["--steps"], type=int, default=20, help="Sampler steps.  [default: 20]"),
            click.Option(["--guidance"], type=float, default=7.5, help="Classifier-free guidance.  [default: 7.5]"),
            click.Option(
                ["--threshold"],
                type=float,
                default=0.5,
                help="Keep an image when every box's crop scores its class >= this (0: keep all).  [default: 0.5]",
            ),  # fmt: skip
            click.Option(["--filter-steps"], type=int, default=300, help="Foreground classifier training steps."),
            click.Option(
                ["--lora"],
                default=None,
                help="A LoRA (file or training --out) baked into the base first, e.g. one trained with `tailor train "
                "lora --data coco:REAL` (ODGEN's base fine-tuned on the domain's scenes and crops).",
            ),  # fmt: skip
            click.Option(
                ["--finetune"],
                type=int,
                default=None,
                help="ODGEN's first stage: train a rank-4 LoRA on --real's whole images and box crops for this many "
                "steps (into OUT/finetune, resumable) and synthesise with that fine-tuned base.",
            ),  # fmt: skip
            click.Option(
                ["--finetune-scope"],
                type=click.Choice(["all", "objects"]),
                default=None,
                help="odgen with --finetune / --lora: the fine-tuned base makes everything (all) or only the objects "
                "of the image list, the UNet under the ControlNet staying the plain base (objects).  [default: all]",
            ),  # fmt: skip
        ],
        help="Synthetic detection data: fit box statistics of --real, sample --n layouts, generate, filter, write "
        "a COCO folder. Resumable; `accelerate launch -m tailor synth ...` splits the candidates over processes.",
        short_help="Synthetic detection data: layouts -> images + COCO JSON.",
    )
