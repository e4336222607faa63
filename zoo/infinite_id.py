"""The zoo's world Infinite-ID (Wu et al. 2024, arXiv:2403.11781; no code released): the ID encoder (face embedding ->
Resampler tokens, CLIP image embedding -> linear + LayerNorm tokens) and the decoupled ``to_k_ip`` / ``to_v_ip``,
trained with identity-enhanced training (the text cross-attention off) on world faces of identities 1000 on (the
identity bench holds out 800-999), so that ``--infinite-id world --face IMG`` (or ``--infinite-id infinite-id``)
works out of the box.

The recipe is one of the zoo's adapters (``zoo/adapters.py`` takes :data:`RECIPES` in): it trains through the one
trainer, checkpoints every 100 steps into ``RUNS/adapters/infinite-id`` and resumes from the newest complete
checkpoint; the export writes ``tailor/world/zoo/weights/adapters/infinite-id/`` in float16 with its ``tailor.json``.

    python -m zoo train --only adapters --adapters infinite-id --runs RUNS     # train (resuming), then export
    python -m zoo.infinite_id train RUNS [STEPS]                               # the same, step by step
    python -m zoo.infinite_id export RUNS

Schedule (one busy CPU thread): 1,500 steps at batch 8, AdamW lr 2e-4 (the from-scratch ID tokens, as the zoo's
InstantID / PuLID; the paper trains far longer on real faces), weight decay 0.01, constant after 50 warm-up steps.
The Resampler keeps 1 of the paper's 4 layers (as the zoo's other identity weights: 4x smaller) with 4 face tokens and
4 CLIP tokens. ``id_drop`` 5% (the config's default) gives the ID stream an unconditional prediction to guide with.
"""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "infinite-id"  # the shipped folder, weights/adapters/infinite-id (``--infinite-id world`` names it too)
FIRST_TRAIN_IDENTITY = 1000  # identities 800-999 are held out (FaceSim oracle calibration, the identity bench)
FACE_DATA = f"world:faces:all:ids={FIRST_TRAIN_IDENTITY}-"
OPTIONS = {"resampler_depth": 1, "num_tokens": 4, "clip_tokens": 4, "image_encoder": "world"}
#: inference options written into the shipped file's config (measured best on the identity bench, docs/infinite_id.md):
#: the text stream's unconditional rows keep their own self-attention, so guidance amplifies what the ID stream adds
INFERENCE = {"style_fidelity": 1.0, "adain_mean": False}


def recipes() -> dict:
    from zoo.adapters import AdapterRecipe

    return {NAME: AdapterRecipe("infinite_id", dict(OPTIONS), steps=1500, batch_size=8, lr=2e-4, data=FACE_DATA)}


def train(runs: str | Path, steps: int | None = None, base: str = "world"):
    from zoo.adapters import train_adapter

    return train_adapter(runs, NAME, steps=steps, base=base)


def export(runs: str | Path, weights: str | Path | None = None) -> Path:
    """The float16 export of the zoo's adapters, its config carrying :data:`INFERENCE`."""
    import json

    from tailor.core.io import load_tensors, read_metadata, save_tensors
    from zoo.adapters import export_adapter

    folder = export_adapter(runs, NAME, weights)
    f = folder / "infinite_id.safetensors"
    meta = read_metadata(f)
    meta["config"] = json.dumps(json.loads(meta["config"]) | INFERENCE, sort_keys=True)
    save_tensors(f, load_tensors(f), meta)
    return folder


if __name__ == "__main__":
    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    what, runs = sys.argv[1], sys.argv[2]
    if what == "export":
        print(export(runs))
    elif what == "train":
        print(train(runs, int(sys.argv[3]) if len(sys.argv) > 3 else None))
    else:
        raise SystemExit(f"unknown action {what!r}; pick train or export.")
