"""AnyDoor (Chen et al., CVPR 2024): the official high-frequency map against a hand computation of its formula, the
collage, ID tokens replacing the context, the official checkpoint layout (round trip, keys), timestep sampling,
training pairs, a tiny train / generate, bad inputs through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
from tailor.core.pipeline import Pipeline
from tailor.errors import InputError
from tailor.methods.anydoor import AnyDoorMethod
from tailor.methods.anydoor.hf import collage, hf_map, object_square

OPTS = {"image_encoder": "tiny", "rank": 2}


def object_image(size: int = 32) -> tuple[Image.Image, np.ndarray]:
    """A striped square on white and its mask."""
    img = np.full((size, size, 3), 255, np.uint8)
    m = np.zeros((size, size), bool)
    m[6:26, 8:24] = True
    stripes = (np.arange(size) // 3 % 2)[:, None].repeat(size, 1).astype(bool)
    img[m & stripes] = (200, 30, 30)
    img[m & ~stripes] = (20, 40, 220)
    return Image.fromarray(img), m


def scene(size: int = 32) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (size, size, 3), dtype=np.uint8)


def inputs(**over):
    obj, m = object_image()
    return {"object": [obj], "object_mask": m.astype(np.uint8) * 255, "scene": scene(), "box": "4,6,20,26"} | over


def generate(method, comps=None, **over):
    pipe = Pipeline(comps or tailor.tiny_components()).attach(method, **inputs(**over))
    try:
        return pipe.generate("ignored", n=1, seed=0, steps=2, guidance=5.0).array
    finally:
        pipe.detach()


# --------------------------------------------------------------------- the high-frequency map
def hand_hf(img: np.ndarray, mask: np.ndarray, thresh: int = 50) -> np.ndarray:
    """The official formula written out without OpenCV (image already at the work size): per-channel 3x3 Sobel
    (reflect-101 borders), |.| saturated to uint8, 0.5|x| + 0.5|y| rounded (half to even) and saturated, max over
    channels, times the mask eroded by a 5x5 box twice (outside counts as object), < thresh -> 0, times image / 255."""
    x = img.astype(np.float64)
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="reflect")
    h, w = img.shape[:2]

    def at(dy, dx):
        return p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    ax, ay = np.clip(np.rint(np.abs(gx)), 0, 255), np.clip(np.rint(np.abs(gy)), 0, 255)
    edge = np.clip(np.rint(0.5 * ax + 0.5 * ay), 0, 255).max(axis=-1)
    m = mask.astype(np.uint8)
    for _ in range(2):
        q = np.pad(m, 2, constant_values=1)
        m = np.min([q[dy : dy + h, dx : dx + w] for dy in range(5) for dx in range(5)], axis=0)
    edge = edge * m
    edge[edge < thresh] = 0
    return (edge[..., None].astype(np.float32) / 255 * img.astype(np.float32)).astype(np.uint8)


def test_hf_map_is_the_official_formula():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    img[10:30, 10:30] = img[10:30, 10:30] // 4 * 4  # some flat-ish structure too
    mask = np.zeros((40, 40), bool)
    mask[4:36, 6:34] = True
    got = hf_map(img, mask, work=40)  # at the work size: no resizing, the formula alone
    want = hand_hf(img, mask)
    assert np.array_equal(got, want)
    assert (got[~mask] == 0).all() and (got > 0).any()
    # threshold: every kept pixel had an edge value >= 50; a higher threshold keeps fewer
    assert (hf_map(img, mask, threshold=200, work=40) > 0).sum() < (got > 0).sum()


def test_object_square_and_collage():
    obj, m = object_image()
    square, sm = object_square(np.asarray(obj), m, expand=1.2)
    assert square.shape[0] == square.shape[1] == sm.shape[0] and (square[sm == 0] == 255).all()
    hint = collage(scene(), (4, 6, 20, 26), np.full((10, 10, 3), 255, np.uint8))
    assert hint.shape == (32, 32, 4)
    assert hint[..., 3].sum() == 16 * 20 and np.allclose(hint[6:26, 4:20, :3], 1.0)
    outside = np.ones((32, 32), bool)
    outside[6:26, 4:20] = False
    assert np.allclose(hint[outside, :3], scene()[outside] / 127.5 - 1.0, atol=1e-6)
    cleared = collage(scene(), (4, 6, 20, 26), None)  # the ablation without the detail map
    assert np.allclose(cleared[6:26, 4:20, :3], -1.0)


# --------------------------------------------------------------------- tokens, step, files
def test_id_tokens_replace_the_context_and_uncond_is_a_zero_image():
    comps = tailor.tiny_components()
    m = AnyDoorMethod(**OPTS)
    pipe = Pipeline(comps).attach(m, **inputs())
    from tailor.core.prompts import encode_prompts

    cond = m.encode(encode_prompts(comps, ["a", "b"], cfg=True), pipe.attachments[0].inputs)
    n_tokens = 1 + (m.encoder.config.image_size // m.encoder.config.patch_size) ** 2
    assert cond.encoder_hidden_states.shape == (4, n_tokens, comps.unet.config.cross_attention_dim)
    zero = m.id_tokens(torch.zeros(1, 3, 8, 8))[0]
    assert torch.allclose(cond.encoder_hidden_states[0], zero) and torch.allclose(cond.encoder_hidden_states[1], zero)
    assert not torch.allclose(cond.encoder_hidden_states[2], zero)
    # the prompt is not read
    a = pipe.generate("a red star", n=1, seed=0, steps=2).array
    b = pipe.generate("a blue circle", n=1, seed=0, steps=2).array
    assert np.array_equal(a, b)


def _randomize(m: AnyDoorMethod, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_official_layout_round_trip(tmp_path):
    comps = tailor.tiny_components()
    m = AnyDoorMethod(**OPTS)
    m.patch(comps)
    _randomize(m)
    want = generate(m, comps)  # attaches and detaches
    m.patch(comps)
    path = m.save_official(tmp_path / "anydoor_official.safetensors")
    from tailor.core.io import load_tensors

    state = load_tensors(path)
    assert set(state) >= {"cond_stage_model.projector.weight", "cond_stage_model.projector.bias"}
    assert state["control_model.input_hint_block.0.weight"].shape[1] == 4  # the 4-channel hint
    assert any(k.startswith("model.diffusion_model.output_blocks.") for k in state)
    assert (
        any(k.startswith("control_model.zero_convs.") for k in state)
        and "control_model.middle_block_out.0.weight" in state
    )
    assert not any(k.startswith(("projector.", "controlnet.", "unet_")) for k in state)
    # the merged decoder: W + (alpha / r) B A, checked on one layer by hand
    key = next(k for k in m.lora.state_dict() if k.endswith(".lora_A.weight") and "attn1.to_q" in k)
    mod = key[: -len(".lora_A.weight")]
    lora = m.lora.state_dict()
    base = comps.unet.get_submodule(mod.removeprefix("unet.")).get_base_layer().weight
    merged = base + m.config.lora_alpha / m.config.rank * lora[f"{mod}.lora_B.weight"] @ lora[key]
    from tailor.core.single_file import unet_ldm_namer

    name = "model.diffusion_model." + unet_ldm_namer(comps.unet)(mod.removeprefix("unet.")) + ".weight"
    assert torch.allclose(state[name], merged, atol=1e-6)
    m.unpatch()
    back = tailor.load(path)
    assert isinstance(back, AnyDoorMethod) and back.config.decoder == "full"
    got = generate(back, comps)
    assert np.abs(got - want).max() < 1e-4
    # detach puts the base decoder back, bit for bit
    fresh = tailor.tiny_components()
    assert all(torch.equal(v, fresh.unet.state_dict()[k]) for k, v in comps.unet.state_dict().items())
    # the read file writes back the same tensors
    back.patch(comps)
    again = back.official_state_dict()
    assert set(again) == set(state) and all(torch.allclose(again[k], state[k], atol=1e-6) for k in state)


def test_tailor_file_round_trip_and_detail_ablation(tmp_path):
    comps = tailor.tiny_components()
    m = AnyDoorMethod(**OPTS)
    m.patch(comps)
    _randomize(m, 1)
    want = generate(m, comps)
    art = m.save(tmp_path)
    m.unpatch()
    assert np.array_equal(generate(tailor.load(art), comps), want)
    no_detail = tailor.load(art)
    no_detail.config = no_detail.config.replace(detail=False)
    assert not np.array_equal(generate(no_detail, comps), want)


def test_timesteps_follow_the_pair_kind():
    m = AnyDoorMethod(**OPTS, uniform_t=0.0)
    for kind, lo, hi in ((1, 500, 1000), (0, 0, 500), (2, 0, 1000)):
        g = torch.Generator().manual_seed(0)
        ts = []
        for _ in range(200):
            m._dynamic = [kind]
            ts.append(int(m.sample_timesteps(1, 1000, g)))
        assert lo <= min(ts) and max(ts) < hi
        if kind == 2:
            assert min(ts) < 500 <= max(ts)
    m = AnyDoorMethod(**OPTS)  # official: 30% uniform -> some low t even for large-pose pairs
    g = torch.Generator().manual_seed(0)
    low = 0
    for _ in range(400):
        m._dynamic = [1]
        low += int(m.sample_timesteps(1, 1000, g)) < 500
    assert 0.08 < low / 400 < 0.22  # 0.3 x 0.5 expected


def test_training_pairs():
    from tailor.core.resources import resolve
    from tailor.methods.anydoor.config import AnyDoorConfig
    from tailor.methods.anydoor.data import AnyDoorPairs

    data, _ = resolve("data", "world:pair")(64, 0, False)
    pairs = AnyDoorPairs(data, AnyDoorConfig(drop_object=0.0), 0)
    items = [pairs[i] for i in range(12)]
    again = pairs[3]
    assert torch.equal(again["anydoor_hint"], items[3]["anydoor_hint"])  # a pure function of the index
    kinds = [int(it["anydoor_dynamic"]) for it in items]
    assert 0 in kinds and any(k in (1, 2) for k in kinds)
    for it in items:
        x0, y0, x1, y1 = it["anydoor_box"].tolist()
        assert it["anydoor_hint"][3, y0:y1, x0:x1].eq(1).all() and it["anydoor_hint"][3].sum() == (x1 - x0) * (y1 - y0)
        assert it["caption"] == "" and it["anydoor_object"].shape == (3, 64, 64) and it["anydoor_object"].max() > 0
    nocross = AnyDoorPairs(data, AnyDoorConfig(cross_pose=0.0), 0)
    assert all(int(nocross[i]["anydoor_dynamic"]) == 0 for i in range(6))


def test_tiny_train_then_generate(tmp_path):
    from tailor.core.training import TrainConfig, train

    m = AnyDoorMethod(**OPTS)
    cfg = TrainConfig(base="tiny", out=str(tmp_path / "r"), steps=2, batch_size=2, resolution=32, lr=1e-3,
                      data="world:pair")  # fmt: skip
    comps = tailor.tiny_components()
    before = None
    train(m, cfg, components=comps)
    trained = tailor.load(tmp_path / "r")
    fresh = AnyDoorMethod(**OPTS)
    fresh.patch(tailor.tiny_components())
    before = fresh.state_dict()
    after = trained.state_dict()
    changed = {k.split(".")[0] for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"projector", "controlnet", "unet_lora"}
    assert np.isfinite(generate(trained)).all()


# --------------------------------------------------------------------- bad input
def test_bad_inputs(tmp_path, capsys):
    from tailor.cli import main

    with pytest.raises(InputError, match="lies outside the 32x32 --scene"):
        generate(AnyDoorMethod(**OPTS), box="10,10,40,20")
    m = AnyDoorMethod(**OPTS)
    m.patch(tailor.tiny_components())
    art = m.save(tmp_path / "m")
    obj, mask = object_image()
    obj.save(tmp_path / "obj.png")
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(tmp_path / "white.png")
    Image.fromarray(mask.astype(np.uint8) * 255).resize((16, 16)).save(tmp_path / "mask16.png")
    Image.fromarray(scene()).save(tmp_path / "scene.png")
    out = tmp_path / "o"
    base = ["generate", "--base", "tiny", "-n", "1", "--steps", "1", "--out", str(out), "-p", "x", "--anydoor",
            str(art), "--scene", str(tmp_path / "scene.png")]  # fmt: skip
    for extra, words in (
        (["--object", str(tmp_path / "obj.png"), "--box", "0,0,33,10"], "lies outside the 32x32 --scene"),
        (["--object", str(tmp_path / "white.png"), "--box", "2,2,20,20"], "is all background"),
        (
            [
                "--object",
                str(tmp_path / "obj.png"),
                "--box",
                "2,2,20,20",
                "--object-mask",
                str(tmp_path / "mask16.png"),
            ],
            "16x16 but the --object image is 32x32",
        ),
        (["--object", str(tmp_path / "obj.png"), "--box", "2,2"], "is not four numbers"),
    ):
        code = main([*base, *extra])
        err = capsys.readouterr().err
        assert code == 2 and words in err and "Traceback" not in err, err
        assert not out.exists() or not any(out.iterdir())
    code = main([*base, "--object", str(tmp_path / "obj.png"), "--box", "2,2,20,20"])
    assert code == 0 and (out / "000.png").is_file()
