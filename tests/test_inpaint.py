"""inpaint: continued training makes a 4-channel base a 9-channel inpainting base that tailor and diffusers load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
from tailor.core.pipeline import Pipeline
from tailor.core.training.noise import generator
from tailor.errors import ConfigError, IncompatibleError, InputError
from tailor.methods.inpaint import InpaintConfig, InpaintMethod
from tailor.methods.inpaint.masks import random_mask


def test_masks_are_seeded_and_varied():
    kinds = ["box", "ellipse", "strokes"]
    a = [random_mask(generator(0, 21, p), 32, kinds, 0.25, 3) for p in range(40)]
    b = [random_mask(generator(0, 21, p), 32, kinds, 0.25, 3) for p in range(40)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    cover = torch.stack([m.mean() for m in a])
    assert ((cover == 1).float().mean() - 0.25).abs() < 0.2  # about a quarter repaint everything
    partial = cover[cover < 1]
    assert (partial > 0).all() and partial.mean() < 0.7
    assert set(torch.unique(torch.stack(a)).tolist()) <= {0.0, 1.0}


def test_config_errors():
    with pytest.raises(ConfigError, match="mask_kinds"):
        InpaintConfig(mask_kinds=["blob"])
    with pytest.raises(ConfigError, match="full_mask_prob"):
        InpaintConfig(full_mask_prob=1.5)


def test_train_makes_an_inpainting_base(tmp_path):
    from diffusers import StableDiffusionInpaintPipeline

    from tailor.core.training import TrainConfig, train

    comps = tailor.tiny_components()
    method = InpaintMethod()
    cfg = TrainConfig(base="tiny", out=str(tmp_path / "run"), steps=2, batch_size=2, resolution=32, lr=1e-3)
    train(method, cfg, components=comps)
    assert comps.unet.config.in_channels == 9 and comps.is_inpainting
    assert comps.unet.conv_in.weight[:, 4:].abs().sum() > 0  # the new channels trained
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    ours = Pipeline(comps).generate("a star", seed=1, steps=3, init_image=img, mask=mask).array

    folder = tmp_path / "run" / "pipeline"
    ref = StableDiffusionInpaintPipeline.from_pretrained(str(folder), local_files_only=True)
    assert ref.unet.config.in_channels == 9
    loaded = tailor.load_components(folder)
    assert loaded.is_inpainting
    again = Pipeline(loaded).generate("a star", seed=1, steps=3, init_image=img, mask=mask).array
    assert np.abs(again - ours).max() <= 1e-5

    method.unpatch()  # the base is the 4-channel one again
    assert comps.unet.config.in_channels == 4 and comps.unet.conv_in.weight.shape[1] == 4
    reapplied = Pipeline(tailor.tiny_components()).attach(tailor.load(tmp_path / "run"))
    assert np.abs(reapplied.generate("a star", seed=1, steps=3, init_image=img, mask=mask).array - ours).max() <= 1e-5


def test_other_widths_are_refused():
    from tailor.core.input_channels import widen_conv_in

    comps = tailor.tiny_components()
    widen_conv_in(comps.unet, 2)
    with pytest.raises(IncompatibleError, match="takes 6"):
        InpaintMethod().patch(comps)


def test_bench_inpaint_quick(tmp_path):
    """`tailor bench inpaint --quick` on the tiny base: the exact render agrees with itself, blending keeps more of
    the unmasked region than an untrained (2-step) inpainting base, the PSNR helper is the textbook formula."""
    from tailor.bench import inpaint as B
    from tailor.core.training import TrainConfig, train

    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 255
    region = np.zeros((4, 4), bool)
    region[0, :2] = True
    assert B.psnr_region(a, b, region) == pytest.approx(10 * np.log10(255.0**2 / (255.0**2 * 3 / 6)))
    train(InpaintMethod(unet_rank=2), TrainConfig(base="tiny", out=str(tmp_path / "run"), steps=1, batch_size=1,
                                                 resolution=32))  # fmt: skip
    s = B.Settings(base="tiny", out=tmp_path / "bench", models={"mine": str(tmp_path / "run")}, keep_unmasked=0,
                   **B.QUICK)  # fmt: skip
    res = B.run(s)
    rows = {r["row"]: r for r in res["rows"]}
    assert rows["exact render"]["object"] == 1.0 and rows["exact render"]["psnr_kept"] is None
    assert rows["base + blending"]["psnr_kept"] > rows["mine"]["psnr_kept"]
    assert (tmp_path / "bench" / "grid.png").is_file() and rows["mine"]["step_cost"] > 0
    # pasted back with a hard edge, the kept region is the render itself (no finite PSNR), the mask the model's
    for key in ("base + blending", "mine"):
        pasted = rows[f"{key} + keep-unmasked 0"]
        assert pasted["psnr_kept"] is None and pasted["psnr_mask"] == pytest.approx(rows[key]["psnr_mask"])
    with pytest.raises(InputError, match="keep-unmasked"):
        B.Settings(keep_unmasked=-1).check()
