"""IC-Light: the official offsets format read and written; sampling equals the official demo's procedure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
from tailor.core.pipeline import Pipeline
from tailor.errors import IncompatibleError, InputError
from tailor.methods.ic_light import IcLightMethod
from tailor.methods.ic_light.formats import write_offsets


def _offsets(comps, channels: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random offsets over the tiny UNet widened to ``channels`` inputs (official keys and shapes)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in comps.unet.state_dict().items():
        shape = (v.shape[0], channels, *v.shape[2:]) if k == "conv_in.weight" else v.shape
        out[k] = torch.randn(shape, generator=g) * 0.02
    return out


def _images(size=32):
    y, x = np.mgrid[0:size, 0:size]
    disc = ((x - 16) ** 2 + (y - 14) ** 2 < 90).astype(np.uint8) * 255
    rgba = np.stack([x * 7, 220 - y * 5, np.full_like(x, 40), disc], -1).astype(np.uint8)
    bg = np.repeat(np.linspace(224, 32, size)[None, :, None], size, 0).repeat(3, 2).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA"), Image.fromarray(bg)


def _official(comps, offsets, fg_rgba, bg, prompt, seed, steps, guidance):
    """The official demo's procedure on diffusers' StableDiffusionPipeline: conv_in widened by hand (config left as
    is), merged = base + offset, the concatenated latents handed through cross_attention_kwargs by a hooked forward."""
    unet, vae = comps.unet, comps.vae
    channels = offsets["conv_in.weight"].shape[1]
    old = unet.conv_in
    new = torch.nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :4].copy_(old.weight)
        new.bias = old.bias
    unet.conv_in = new
    unet.load_state_dict({k: v + offsets[k] for k, v in unet.state_dict().items()}, strict=True)
    rgba = np.asarray(fg_rgba).astype(np.float32)
    fg = (127 + (rgba[..., :3] - 127) * rgba[..., 3:] / 255).clip(0, 255).astype(np.uint8)
    imgs = [fg] + ([np.asarray(bg)] if channels == 12 else [])
    pixels = torch.from_numpy(np.stack(imgs)).float().div(127.0).sub(1.0).movedim(-1, 1)
    with torch.no_grad():
        lat = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
    concat = torch.cat([c[None] for c in lat], dim=1)
    forward = unet.forward

    def hooked(sample, timestep, encoder_hidden_states, **kwargs):
        c = kwargs["cross_attention_kwargs"]["concat_conds"].to(sample)
        c = torch.cat([c] * (sample.shape[0] // c.shape[0]), dim=0)
        kwargs["cross_attention_kwargs"] = {}
        return forward(torch.cat([sample, c], dim=1), timestep, encoder_hidden_states, **kwargs)

    unet.forward = hooked
    pipe = comps.diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=[torch.Generator().manual_seed(seed)],
        output_type="np",
        cross_attention_kwargs={"concat_conds": concat},
    ).images


@pytest.mark.parametrize("mode,channels", [("fc", 8), ("fbc", 12)])
def test_official_file_equals_official_procedure(tmp_path, mode, channels):
    comps = tailor.tiny_components()
    offsets = _offsets(comps, channels)
    path = write_offsets(tmp_path / f"iclight_{mode}.safetensors", offsets)
    method = tailor.load(path)
    assert isinstance(method, IcLightMethod) and method.config.mode == mode
    fg, bg = _images()
    refs = [fg, bg] if mode == "fbc" else fg
    ours = Pipeline(comps).attach(method, foreground=refs).generate("a star", seed=4, steps=3, guidance=5.0).array
    ref = _official(tailor.tiny_components(), offsets, fg, bg, "a star", 4, 3, 5.0)
    assert np.abs(ours - ref).max() <= 1e-5
    plain = Pipeline(tailor.tiny_components()).generate("a star", seed=4, steps=3, guidance=5.0).array
    assert np.abs(ours - plain).max() > 1e-3


def test_save_roundtrip_unpatch_and_other_widths(tmp_path):
    comps = tailor.tiny_components()
    before = {k: v.clone() for k, v in comps.unet.state_dict().items()}
    fg, _ = _images()
    method = IcLightMethod(mode="fc")
    method.load_state_dict(_offsets(comps, 8, seed=1))
    pipe = Pipeline(comps).attach(method, foreground=fg)
    out = pipe.generate("a star", seed=0, steps=2).array
    method.save(tmp_path)
    pipe.detach()
    after = comps.unet.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], v) for k, v in before.items())
    for name in ("ic_light.safetensors", "iclight_fc.safetensors"):
        again = Pipeline(comps).attach(tailor.load(tmp_path / name), foreground=fg)
        assert np.abs(again.generate("a star", seed=0, steps=2).array - out).max() <= 1e-6
        again.detach()

    wide = tailor.tiny_components(cross_attention_dim=32)  # a base of other widths
    with pytest.raises(IncompatibleError, match="other widths|does not match"):
        Pipeline(wide).attach(tailor.load(tmp_path / "iclight_fc.safetensors"))
    assert wide.unet.config.in_channels == 4  # nothing left half-attached

    # a foreground with neither alpha nor mask: one sentence, nothing attached half-way
    with pytest.raises(InputError, match="no alpha channel and no mask"):
        Pipeline(comps).attach(IcLightMethod(), foreground=fg.convert("RGB")).generate("x", steps=1)
    # the same pixels with the alpha given as a mask image: the same image as the RGBA foreground
    rgba = IcLightMethod(mode="fc")
    rgba.load_state_dict(_offsets(comps, 8, seed=1))
    a = Pipeline(tailor.tiny_components()).attach(rgba, foreground=fg).generate("a star", seed=0, steps=2).array
    pipe = Pipeline(tailor.tiny_components())
    masked = IcLightMethod(mode="fc")
    masked.load_state_dict(_offsets(comps, 8, seed=1))
    alpha = fg.getchannel("A")
    b = pipe.attach(masked, foreground=fg.convert("RGB"), foreground_mask=alpha).generate("a star", seed=0, steps=2)
    assert np.abs(a - b.array).max() <= 1e-6


# ---------------------------------------------------------------------- training on lit triplets
def test_consistency_loss_matches_hand_computation():
    from tailor.methods.ic_light.consistency import consistency_loss, predicted_clean

    g = torch.Generator().manual_seed(0)
    n, c, h = 2, 4, 4
    x0 = torch.randn(3 * n, c, h, h, generator=g)
    abar = torch.tensor([0.9, 0.25] * 3)
    mask = torch.zeros(n, 1, 2 * h, 2 * h)
    mask[0, :, :4, :4] = 1.0  # item 0: the top-left 2x2 latent pixels; item 1: one latent pixel half covered
    mask[1, :, 0:1, 0:2] = 1.0

    def combine(a, b):
        return 0.5 * a + 2.0 * b

    got = consistency_loss(x0, abar, mask, n, combine)
    x = x0.numpy()
    per = []
    for j, pixels in ((0, [(0, 0, 1.0), (0, 1, 1.0), (1, 0, 1.0), (1, 1, 1.0)]), (1, [(0, 0, 0.5)])):
        a, b, ab = x[j], x[n + j], x[2 * n + j]
        num = sum(w * ((0.5 * a[:, y, xx] + 2.0 * b[:, y, xx] - ab[:, y, xx]) ** 2).sum() for y, xx, w in pixels)
        den = c * sum(w for *_, w in pixels)
        per.append(float(abar[2 * n + j]) * num / den)
    assert abs(float(got) - np.mean(per)) <= 1e-5 * max(1.0, abs(np.mean(per)))
    only_first = consistency_loss(x0, abar, mask, n, combine, valid=torch.tensor([True, False]))
    assert abs(float(only_first) - per[0]) <= 1e-5 * max(1.0, per[0])

    # the clean latents an epsilon / v prediction implies: x_t = sqrt(a) x0 + sqrt(1 - a) eps
    eps = torch.randn(3 * n, c, h, h, generator=g)
    a4 = abar.view(-1, 1, 1, 1)
    noisy = a4.sqrt() * x0 + (1 - a4).sqrt() * eps
    assert torch.allclose(predicted_clean(noisy, eps, abar, "epsilon"), x0, atol=1e-5)
    v = a4.sqrt() * eps - (1 - a4).sqrt() * x0
    assert torch.allclose(predicted_clean(noisy, v, abar, "v_prediction"), x0, atol=1e-5)


def test_lit_triplets_are_additive_and_share_noise():
    from tailor.methods.ic_light.data import LitTriplets, expand, triplet_lights
    from tailor.world.dataset import WorldDataset
    from tailor.world.light import render_lit

    world = WorldDataset(kind="light", size=32, seed=3, length=4)
    ds = LitTriplets(world, None, "fbc")
    item = ds[1]
    assert item["pixel_values"].shape == (3, 3, 32, 32) and item["background"].shape == (3, 3, 32, 32)
    assert all(", lit " not in c for c in item["caption"])  # fbc: the background carries the light
    assert float(item["foreground"].abs().max()) > 0.1 and item["mask"].sum() > 0
    seed, style = ds.scene(1)
    lights = triplet_lights(seed)
    s = render_lit(seed, lights=lights["AB"], style=style, size=32)
    from tailor.world.light import LitScene  # additivity of the three light sets on one scene

    scene = LitScene.from_parts(s.extras["albedo"].astype(np.float64), [s.mask])
    assert np.allclose(scene.linear(lights["A"]) + scene.linear(lights["B"]), scene.linear(lights["AB"]), atol=1e-12)
    fc = LitTriplets(world, None, "fc")[1]
    assert all(", lit " in c for c in fc["caption"][:2])
    batch = {k: torch.stack([v, v]) if isinstance(v, torch.Tensor) else [v, v] for k, v in fc.items()}
    rows, keys, positions = expand(batch, [(0, 1), (0, 2)], [10, 11])
    assert rows["pixel_values"].shape[0] == 6 and rows["triplets"] == 2
    assert positions == [10, 11, 10, 11, 10, 11] and len(set(keys)) == 6
    assert rows["caption"][0] == fc["caption"][0] and rows["caption"][4] == fc["caption"][2]


@pytest.mark.parametrize("mode", ["fc", "fbc"])
def test_training_step_decreases_loss_on_lit_triplets(mode):
    """A few optimizer steps on one lit batch (the trainer's objective, fixed draws) lower its loss."""
    from tailor.core.training import TrainConfig
    from tailor.core.training.data import collate
    from tailor.core.training.objective import Objective
    from tailor.methods.ic_light.data import LitTriplets
    from tailor.world.dataset import WorldDataset

    comps = tailor.tiny_components()
    comps.freeze()
    method = IcLightMethod(mode=mode, consistency_weight=1.0)
    torch.manual_seed(0)
    method.patch(comps)
    cfg = TrainConfig(base="tiny", out="unused", resolution=32)
    obj = Objective(comps, method, cfg, 32)
    ds = method.wrap_dataset(WorldDataset(kind="light", size=32, seed=0, length=8), cfg)
    assert isinstance(ds, LitTriplets)
    batch = collate([ds[0], ds[1]])
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        loss, logs = obj.loss(batch, [(0, 0), (0, 1)], [0, 1], 0, 0, 1, dropout=False)
        assert "consistency" in logs and logs["consistency"] > 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    assert method.combiner is not None and method.combiner.h[0].weight.grad is not None
    assert comps.unet.conv_in.weight.grad[:, 4:].abs().sum() > 0  # the widened channels learn


# ---------------------------------------------------------------------- bench metrics and bad inputs
def test_relight_metrics_against_hand_values():
    from tailor.bench.relight import albedo_drift, consistency_error, psnr_masked, scene

    mask = np.zeros((2, 2), bool)
    mask[0] = True
    a = np.zeros((2, 2, 3), np.uint8)
    b, ab = a.copy(), a.copy()
    a[0, 0], ab[0, 0] = 255, 255  # pixel (0,0): 1 + 0 - 1 = 0
    b[0, 1] = 255  # pixel (0,1): 0 + 1 - 0 = 1 in every channel
    ab[1, 1] = 255  # outside the mask: ignored
    assert consistency_error(a, b, ab, mask) == pytest.approx((0 + 1) / 2 * 255)
    # albedo 0.5 (linear) under unit shading, output white: |1 - srgb(0.5)| = 1 - (1.055 * 0.5 ** (1 / 2.4) - 0.055)
    shading, albedo = np.ones((2, 2, 3)), np.full((2, 2, 3), 0.5)
    out = np.full((2, 2, 3), 255, np.uint8)
    assert albedo_drift(out, shading, albedo, mask) == pytest.approx((1.055 - 1.055 * 0.5 ** (1 / 2.4)) * 255)
    assert albedo_drift(out, shading * 0.01, albedo, mask) is None  # too dark everywhere: no lit pixel
    ref = out.copy()
    ref[0, 0, 0] = 245  # one channel of one object pixel 10 levels off: MSE = 100 / 6 over the object
    assert psnr_masked(out, ref, mask) == pytest.approx(10 * np.log10(255.0**2 / (100 / 6)))

    # the bench's true shading and albedo rebuild the exact render: sRGB(albedo x shading) vs the (noisy) photo
    sc = scene(0, 64)
    from tailor.world.light import linear_to_srgb

    rebuilt = linear_to_srgb(sc["albedo"] * sc["shading"]["AB"]) * 255
    diff = np.abs(rebuilt - sc["renders"]["AB"].image.astype(np.float64))[sc["mask"]]
    assert diff.mean() < 2.5  # the photo's sensor noise (std 2) and 8-bit rounding only
    assert albedo_drift(sc["renders"]["AB"].image, sc["shading"]["AB"], sc["albedo"], sc["mask"]) < 4.0


def test_cli_refuses_foreground_without_alpha_and_other_widths(tmp_path, capsys):
    from tailor.cli import main as cli

    fg, _ = _images()
    fg.convert("RGB").save(tmp_path / "fg.png")
    wide = tailor.tiny_components(cross_attention_dim=32)
    path = write_offsets(tmp_path / "iclight_fc.safetensors", _offsets(tailor.tiny_components(), 8))
    other = write_offsets(tmp_path / "wide_fc.safetensors", _offsets(wide, 8))
    base = ["generate", "--base", "tiny", "-p", "a star", "-n", "1", "--steps", "1"]
    for model, culprit in ((path, "fg.png"), (other, "wide_fc.safetensors")):
        out = tmp_path / f"out-{culprit}"
        capsys.readouterr()
        code = cli([*base, "--out", str(out), "--ic-light", f"{model}={tmp_path / 'fg.png'}"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error:") and "\n" not in err and culprit in err, err
        assert not out.exists() or not any(out.iterdir())


def test_conv_in_learning_rate_group():
    comps = tailor.tiny_components()
    method = IcLightMethod(mode="fbc", input_lr_scale=10.0)
    method.patch(comps)
    groups = method.param_groups(1e-4)
    conv = {id(p) for p in comps.unet.conv_in.parameters()}
    assert [g["lr"] for g in groups] == [1e-4, pytest.approx(1e-3)]
    assert {id(p) for p in groups[1]["params"]} == conv
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in method.trainable_parameters()}


def test_bench_relight_row_none_means_models_only():
    from tailor.bench.relight import Settings, declared_rows
    from tailor.cli.bench import _rows

    assert _rows(None) is None and _rows(["NONE"]) == () and _rows(["fc", "fbc"]) == ("fc", "fbc")
    assert declared_rows(), "IC-Light declares its ablation rows"
    Settings(rows=_rows(["none"])).check()  # no training row, nothing to reject
