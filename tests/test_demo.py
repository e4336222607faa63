"""``make demo`` (tailor.demo) end to end on the tiny base with short runs: every part writes its files."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_demo_tiny_writes_grids_and_personalize_scores(tmp_path):
    from tailor.demo import main

    assert main(["--out", str(tmp_path), "--base", "tiny", "--steps", "2", "--personalize-steps", "2"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["base"] == "tiny" and summary["steps"] == 2
    p = summary["personalize"]
    assert p["method"] == "dreambooth_lora_te" and p["train_steps"] == 2 and p["prompt"].endswith("star on snow")
    for name in ("before", "after"):
        assert set(p[name]) == {"dino_like", "clip_i_like", "subject_attribute_accuracy", "background_snow"}
        assert (tmp_path / f"personalize_{name}.png").is_file()
    for f in ("world_grid.png", "before_after.png"):
        assert (tmp_path / f).is_file()


def test_demo_world_grid_shows_world_v2_on_its_own_row(tmp_path):
    import numpy as np
    from PIL import Image

    from tailor.demo import world_grid, world_v2_row

    row = world_v2_row()
    assert len(row) == 8 and all(im.shape == row[0].shape for im in row)
    lit_a, lit_b = (im.astype(float) for im in row[:2])
    assert np.abs(lit_a - lit_b).mean() > 5  # the same scene under two lights is not the same image
    story = [im.astype(float) for im in row[4:]]
    assert all(np.abs(story[0] - f).mean() > 5 for f in story[1:])  # frames differ (scene, pose)
    grid = np.asarray(Image.open(world_grid(tmp_path)).convert("RGB"))
    rows = grid.shape[0] // (grid.shape[1] // 8)
    last = grid[-grid.shape[0] // rows :]  # the v2 row is the last one and starts at its first tile
    assert last[:, : grid.shape[1] // 8].mean() < 250  # not the white padding
