"""tailor bench story: rows declared by the methods, frame 1 shared, the oracles' scores and the costs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import tailor
from tailor.errors import InputError


@pytest.fixture(scope="module")
def tiny_story_models(tmp_path_factory) -> dict[str, str]:
    """A StoryGen with a non-zero attn3 and an untrained IP-Adapter on the tiny base, saved as training folders."""
    import torch

    root = tmp_path_factory.mktemp("story")
    out = {}
    for key, name, kw in (("storygen", "storygen", {}), ("ip-adapter", "ip_adapter", {"image_encoder": "tiny"})):
        method = tailor.get_spec(name).method(**kw)
        method.patch(tailor.tiny_components())
        if name == "storygen":
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in method.net.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.3)
        method.unpatch()
        method.save(root / name)
        out[key] = str(root / name)
    return out


def test_story_bench_quick(tmp_path, tiny_story_models):
    from tailor.bench import story as B

    s = B.Settings(base="tiny", out=tmp_path, models=tiny_story_models, **(B.QUICK | {"stories": 3, "frames": 3}))
    result = B.run(s)
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"none", "storygen", "storygen-img1", "ip-adapter", "reference-attn", "real"}
    assert list(rows)[0] == "none" and list(rows)[-1] == "real"
    # frame 1 is the same image in every row; the conditioned frames differ from the base's
    first = {k: np.asarray(Image.open(tmp_path / "images" / k / "story_00" / "frame_000.png")) for k in rows
             if k != "real"}  # fmt: skip
    assert all(np.array_equal(a, first["none"]) for a in first.values())
    later = {k: np.asarray(Image.open(tmp_path / "images" / k / "story_01" / "frame_002.png")) for k in first}
    assert not np.array_equal(later["storygen"], later["none"])
    for r in rows.values():
        assert -1.0 <= r["consistency"] <= 1.0 and 0.0 <= r["prompt_acc"] <= 1.0 and 0.0 <= r["all_correct"] <= 1.0
        assert r["facesim"] is not None and r["consistency_object"] is not None
    # the oracles know the real stories: the same subject across frames, their prompts' attributes
    assert rows["real"]["consistency"] > result["different_subject_level"] + 0.05
    assert rows["real"]["prompt_acc"] > 0.5
    # costs: the base is the unit; StoryGen's 3-way guidance adds a UNet row and reference passes
    assert rows["none"]["step_cost"] == 1.0 and rows["reference-attn"]["trainable_params"] == 0
    assert rows["storygen"]["step_cost"] > 1.2 and rows["storygen"]["step_cost_3"] > 1.2
    sg = tailor.load(tiny_story_models["storygen"])
    sg.patch(tailor.tiny_components())
    assert rows["storygen"]["trainable_params"] == sum(p.numel() for p in sg.net.parameters())
    for k in ("storygen", "ip-adapter"):
        assert rows[k]["train_s_per_step"] > 0 and rows[k]["train_peak_rss_mb"] > 100
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "grid.png").is_file()


def test_story_bench_refuses_undeclared_rows(tmp_path):
    from tailor.bench import story as B

    with pytest.raises(InputError, match="not declared"):
        B.run(B.Settings(base="tiny", out=tmp_path, rows=("nope",)))
