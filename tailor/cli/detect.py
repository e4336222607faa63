"""``tailor detect``: train a small CenterNet-style detector on COCO folders, evaluate it (COCO mAP), and write the
COCO annotation file of a ``tailor world render`` folder (:mod:`tailor.detect`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

detect_app = typer.Typer(no_args_is_help=True)


@detect_app.command("train")
def train(
    data: Annotated[list[Path], typer.Option(help="COCO folder (images + annotations.json); repeat to mix sets.")],
    out: Annotated[Path, typer.Option(help="Output folder: detector.safetensors, log.jsonl, tailor.json.")],
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 1500,
    batch_size: Annotated[int, typer.Option(help="Images per step (drawn with replacement).")] = 32,
    lr: Annotated[float, typer.Option(help="AdamW peak learning rate (warmup, then cosine).")] = 2e-3,
    width: Annotated[int, typer.Option(help="Channel width of the first stage.")] = 16,
    size: Annotated[int, typer.Option(help="Square input side; images are resized to it.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and of every batch.")] = 0,
    flip: Annotated[bool, typer.Option(help="Mirror half the images left-right.")] = True,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between resumable checkpoints (0: none).")] = 200,
    resume: Annotated[bool, typer.Option(help="Continue from --out's checkpoint.")] = False,
) -> None:
    """Train a CenterNet-style detector (Zhou et al. 2019) on one or more COCO folders."""
    from tailor.core.outputs import guarded_out
    from tailor.detect import DetectTrainConfig, train_detector

    cfg = DetectTrainConfig(steps=steps, batch_size=batch_size, lr=lr, width=width, size=size, seed=seed, flip=flip,
                            checkpoint_every=checkpoint_every)  # fmt: skip
    with guarded_out(out, "tailor detect train", inputs=data) as folder:
        record = train_detector(data, folder, cfg, resume=resume, log=typer.echo)
    typer.echo(f"wrote {folder / 'detector.safetensors'} ({len(record['classes'])} classes, "
               f"{record['train_images']} training images)")  # fmt: skip


@detect_app.command("eval")
def evaluate(
    model: Annotated[Path, typer.Option(help="A detector file or the `tailor detect train` --out folder.")],
    data: Annotated[Path, typer.Option(help="COCO folder (images + annotations.json) to evaluate on.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """COCO box mAP@.50:.95 and mAP@.50 (and @.75, per class) of a trained detector on a COCO folder."""
    from tailor.detect import evaluate_detector

    result = evaluate_detector(model, data)
    result.pop("detections")
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"mAP@.50:.95 {result['map']:.4f}")
    typer.echo(f"mAP@.50     {result['map50']:.4f}")
    typer.echo(f"mAP@.75     {result['map75']:.4f}")
    typer.echo(f"images {result['images']}, objects {result['objects']}")
    for c, ap in result["per_class"].items():
        typer.echo(f"  {c:<10} {ap:.4f}")


@detect_app.command("coco")
def coco(
    renders: Annotated[Path, typer.Option(help="A `tailor world render` folder (labels.json + images).")],
    out: Annotated[Path, typer.Option(help="The annotation file to write, e.g. RENDERS/annotations.json.")],
) -> None:
    """Write the COCO annotation file of world renders (one category per shape; the images stay in place)."""
    from tailor.detect import coco_from_renders
    from tailor.errors import ConfigError

    if out.suffix != ".json" or out.is_dir():
        raise ConfigError(f"--out {out} must be a .json file path, e.g. {renders}/annotations.json.")
    path = coco_from_renders(renders, out)
    typer.echo(f"wrote {path}")
