"""``tailor faces``: face analysis for the identity methods (InstantID, PhotoMaker, PuLID)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated

import typer

faces_app = typer.Typer(no_args_is_help=True)


@faces_app.command("analyze")
def analyze(
    image: Annotated[Path, typer.Argument(help="An image file.")],
    backend: Annotated[str, typer.Option(help="auto, world (renders; keypoint detector) or dlib (real photos).")] = (
        "auto"
    ),
    embedder: Annotated[
        str,
        typer.Option(help="Face embedder: world (shipped; dlib's descriptor on photos) or an ArcFace .onnx file."),
    ] = "world",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Faces found (largest first): box, InstantID's 5 keypoints, embedding width, and which path found them."""
    from tailor.faces import analyze as run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        faces = run(image, backend=backend, embedder=embedder)
    result = {"image": str(image), "faces": [f.to_json() for f in faces]}
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"{len(faces)} face(s) in {image}")
    for i, f in enumerate(result["faces"]):
        typer.echo(f"  {i}: box={f['box']} keypoints={f['keypoints']} embedding={f['embedding_dim']} ({f['source']})")
