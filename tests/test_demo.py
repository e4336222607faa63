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
