"""``tailor eval``: scores (metrics, pair, world, subject, prompt, identity, control, ocr, relations); every command
takes ``--json`` and then prints one JSON object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from tailor.errors import InputError

eval_app = typer.Typer(no_args_is_help=True)


@eval_app.command("metrics")
def metrics(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """List the available metrics."""
    from tailor.eval import METRICS

    if as_json:
        typer.echo(json.dumps(METRICS))
        return
    for name, desc in METRICS.items():
        typer.echo(f"{name:<10} {desc}")


@eval_app.command("pair")
def pair(
    images: Annotated[Path, typer.Option(help="Folder of generated images.")],
    reference: Annotated[Path, typer.Option(help="Folder of reference images with the same file names.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """SSIM, PSNR and edge F1 of each image against the same-named reference image (mean over pairs)."""
    from tailor.core.images import list_images, load_image
    from tailor.eval.image_metrics import canny, edge_f1, psnr, ssim

    refs = {p.name: p for p in list_images(reference)}
    pairs = [(p, refs[p.name]) for p in list_images(images) if p.name in refs]
    if not pairs:
        raise InputError(f"no file in {images} has a same-named reference in {reference}; match the file names.")
    scores: dict[str, list[float]] = {"ssim": [], "psnr": [], "edge_f1": []}
    for a, b in pairs:
        x = np.asarray(load_image(a))
        y = np.asarray(load_image(b).resize((x.shape[1], x.shape[0])))
        scores["ssim"].append(ssim(x, y))
        scores["psnr"].append(min(psnr(x, y), 100.0))
        scores["edge_f1"].append(edge_f1(canny(x), canny(y)))
    result = {k: float(np.mean(v)) for k, v in scores.items()} | {"pairs": len(pairs)}
    if as_json:
        typer.echo(json.dumps(result))
    else:
        for k, v in result.items():
            typer.echo(f"{k:<8} {v:.4f}" if isinstance(v, float) else f"{k:<8} {v}")


def _emit(result: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result))
        return
    for k, v in result.items():
        if isinstance(v, dict):
            parts = (f"{a}={b:.4f}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items())
            typer.echo(f"{k}: " + "  ".join(parts))
        else:
            typer.echo(f"{k:<12} {v:.4f}" if isinstance(v, float) else f"{k:<12} {v}")


@eval_app.command("world")
def world(
    images: Annotated[Path, typer.Option(help="Folder of generated images (with tailor generate's generation.json).")],
    prompts: Annotated[Path, typer.Option(help="File of prompts (one per image or per equal group).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Per-attribute accuracy of the world's attribute oracle against the attributes each prompt names."""
    from tailor.eval.world import prompts_for, read_images, world_scores

    files, imgs = read_images(images)
    _emit(world_scores(imgs, prompts_for(images, files, prompts)), as_json)


@eval_app.command("relations")
def relations(
    images: Annotated[Path, typer.Option(help="Folder of images (a relation render's labels.json or prompts).")],
    prompts: Annotated[Path, typer.Option(help="File of prompts (one per image or per equal group).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Object and relation accuracy (VISOR) from the world detector oracle's boxes, against the folder's
    labels.json (`tailor world render --kind relation`; then also the detector's mAP) or each image's prompt."""
    from tailor.eval.relations import evaluate_folder

    _emit(evaluate_folder(images, prompts), as_json)


@eval_app.command("subject")
def subject(
    images: Annotated[Path, typer.Option(help="Folder of generated images.")],
    reference: Annotated[Path, typer.Option(help="Folder of real images of the subject.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """DINO-like and CLIP-I-like similarity to the reference images, and subject-attribute accuracy."""
    from tailor.eval.world import read_images, subject_scores

    _, imgs = read_images(images)
    _, refs = read_images(reference)
    _emit(subject_scores(imgs, refs), as_json)


@eval_app.command("prompt")
def prompt(
    images: Annotated[Path, typer.Option(help="Folder of generated images (with generation.json).")],
    prompts: Annotated[Path, typer.Option(help="File of prompts (one per image or per equal group).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """CLIP-T-like image-prompt similarity in world-CLIP space."""
    from tailor.eval.world import prompt_scores, prompts_for, read_images

    files, imgs = read_images(images)
    _emit(prompt_scores(imgs, prompts_for(images, files, prompts)), as_json)


@eval_app.command("identity")
def identity(
    images: Annotated[Path, typer.Option(help="Folder of generated images.")],
    reference: Annotated[Path, typer.Option(help="Reference face image, or a folder of them.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """FaceSim by the world face oracle: mean cosine to the reference face(s), share judged the same identity."""
    from tailor.core.images import load_image
    from tailor.eval.identity import identity_scores
    from tailor.eval.world import read_images
    from tailor.faces.analysis import analyze

    _, imgs = read_images(images)
    ref_files, refs = read_images(reference) if reference.is_dir() else ([reference], [load_image(reference)])
    for f in ref_files:  # a reference without a face would still give a (meaningless) score
        if not analyze(f, embed=False):
            raise InputError(f"no face found in the reference {f}; pass a clearly visible, roughly frontal face.")
    _emit(identity_scores(imgs, refs), as_json)


@eval_app.command("control")
def control(
    kind: Annotated[str, typer.Option(help="canny (edge F1) or seg (mIoU by the world segmenter oracle).")],
    images: Annotated[Path, typer.Option(help="Folder of generated images.")],
    conditions: Annotated[Path, typer.Option(help="Folder of their condition maps, paired by file name (stem).")],
    segmenter: Annotated[
        str, typer.Option(help="seg: the world segmenter oracle, segmenter (first) or segmenter_scenes, or a file.")
    ] = "segmenter",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Controllability: how well each image follows its condition map (ControlNet++'s edge F1 / mIoU)."""
    from tailor.eval.control import control_scores

    result = control_scores(kind, images, conditions, segmenter)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"{'image':<16} {result['metric']}")
    for stem, score in result["per_image"].items():
        typer.echo(f"{stem:<16} {score:.4f}")
    typer.echo(f"{'mean':<16} {result['score']:.4f}  ({result['pairs']} pairs, {kind})")


@eval_app.command("ocr")
def ocr(
    images: Annotated[Path, typer.Option(help="Folder of images (with labels.json or generation.json).")],
    prompts: Annotated[Path, typer.Option(help="File of prompts quoting the text (one per image or group).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Sen.ACC and NED of the world OCR oracle against each image's text (labels.json or the prompt's quoted word)."""
    from tailor.eval.ocr import ocr_eval

    result = ocr_eval(images, prompts)
    if not as_json:
        result.pop("read")
    _emit(result, as_json)
