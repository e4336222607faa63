"""The synthetic-data bench of issue 24: does a detector trained on real + synthetic data of a held-out domain beat
one trained on the real data alone? (``python -m tailor.synth.bench``; docs/synth.md gives the commands and numbers.)

Given the real COCO folder of the domain (``tailor world render`` + ``tailor detect coco``), a fresh held-out test
folder of the same domain and a ``tailor synth`` output, it trains ``tailor detect`` detectors with the same steps,
batch and seed on (a) real only, (b) real + the synthetic images the foreground filter kept, (c) real + every
synthetic candidate (no filter), and reports COCO mAP@.50:.95 / @.50 on the test folder, with an FID-like distance
(:func:`tailor.eval.world.frechet_distance` over world-CLIP image embeddings) of each synthetic set to the real set
and, as the floor of that distance at this sample size, of the test renders to the real ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def all_candidates_coco(synth_out: str | Path) -> Path:
    """``all.json`` beside a ``tailor synth`` output: every candidate (kept and dropped) with its layout boxes."""
    from tailor.detect.coco import write_coco

    out = Path(synth_out)
    recs = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
    classes = json.loads((out / "annotations.json").read_text())["categories"]
    images = [{"id": r["index"], "file_name": r["file"], "width": r["size"], "height": r["size"]} for r in recs]
    objects = [[{"box": o["box"], "class": o["class"]} for o in r["objects"]] for r in recs]
    return write_coco(out / "all.json", images, objects, [c["name"] for c in classes])


def fid_like(a: str | Path, b: str | Path) -> float:
    """FID's formula over world-CLIP image embeddings of two COCO folders' images."""
    from PIL import Image

    from tailor.detect.coco import read_coco
    from tailor.eval.world import frechet_distance
    from tailor.world.zoo.scorer import clip_image_embeds

    def embeds(path):
        files = [im["file"] for im in read_coco(path).images]
        return clip_image_embeds([Image.open(f).convert("RGB") for f in files])

    return frechet_distance(embeds(a), embeds(b))


ROWS = ("real", "real+synth_kept", "real+synth_all")


def run(real: Path, test: Path, synth: Path, runs: Path, steps: int, seed: int = 0,
        rows: tuple[str, ...] = ROWS) -> dict[str, Any]:  # fmt: skip
    """Train and score the detectors of ``rows`` (a subset of :data:`ROWS`; a row whose detector is in ``runs``
    already is scored, not retrained)."""
    from tailor.detect import DetectTrainConfig, evaluate_detector, read_coco, train_detector

    all_json = all_candidates_coco(synth)
    kept = len(read_coco(synth))
    sets = {"real": [real], "real+synth_kept": [real, synth], "real+synth_all": [real, all_json]}
    sets = {k: v for k, v in sets.items() if k in rows}
    if kept == 0:
        sets.pop("real+synth_kept", None)
    result: dict[str, Any] = {"synthetic_kept": kept, "synthetic_candidates": len(read_coco(all_json)), "rows": {}}
    cfg = DetectTrainConfig(steps=steps, seed=seed)
    for name, data in sets.items():
        folder = runs / name.replace("+", "_")
        if not (folder / "detector.safetensors").is_file():
            train_detector(data, folder, cfg, resume=True)
        m = evaluate_detector(folder, test)
        result["rows"][name] = {"map": m["map"], "map50": m["map50"], "map75": m["map75"]}
        print(name, json.dumps(result["rows"][name]), flush=True)
    result["fid_like"] = {"test_vs_real": fid_like(test, real), "synth_all_vs_real": fid_like(all_json, real)}
    if kept >= 2:
        result["fid_like"]["synth_kept_vs_real"] = fid_like(synth, real)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", type=Path, required=True)
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--synth", type=Path, required=True)
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    a = p.parse_args(argv)
    rows = tuple(r.strip() for r in a.rows.split(",") if r.strip())
    if not rows or any(r not in ROWS for r in rows):
        p.error(f"--rows takes a comma-separated subset of {', '.join(ROWS)}; got {a.rows!r}.")
    result = run(a.real, a.test, a.synth, a.runs, a.steps, a.seed, rows)
    a.runs.mkdir(parents=True, exist_ok=True)
    (a.runs / "bench.json").write_text(json.dumps(result, indent=1, default=float))
    print(json.dumps(result, indent=1, default=lambda x: float(np.asarray(x))))


if __name__ == "__main__":
    main()
