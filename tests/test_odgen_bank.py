"""ODGEN's training data path with the object bank (tiny base): the bank is generated once per key (seeded by the key's
grid index, so a bank completed in parts equals one made at once) and reused from its file; items paste the bank's
centre crop of each object's attributes into its box; the class-only caption replaces the global caption at the asked
rate (resumable draws per sample position); the recipes' options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tailor
from tailor.methods.odgen import bank as bank_mod
from tailor.methods.odgen.bank import bank_key, build_bank, centre_crop, grid, key_prompt, object_key
from tailor.methods.odgen.data import ODGENDataset, plain_caption, scene_boxes
from tailor.methods.odgen.method import ODGENMethod
from tailor.methods.odgen.modules import build_canvases
from tailor.world.dataset import WorldDataset

SIZE = 32


def _scenes(n=3):
    return WorldDataset("relation", size=SIZE, length=n)


def _keys(ds):
    return sorted({object_key(o, ds[i]["attrs"]) for i in range(len(ds)) for o in ds[i]["attrs"]["objects"]})


def test_keys_prompts_and_grid():
    assert bank_key("photo", "grass", "red", "striped", "star") == "photo|grass|red|striped|star"
    assert key_prompt("cartoon|water|red|striped|star") == "a cartoon of a red striped star on water"
    keys = grid(("photo",))
    assert len(keys) == 7 * 10 * 4 * 8 and keys == sorted(keys) and len(set(keys)) == len(keys)
    img = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
    assert np.array_equal(centre_crop(img, 0.6), img[2:8, 2:8])


def test_bank_generates_once_seeds_by_key_and_reuses_its_file(tmp_path, monkeypatch):
    comps = tailor.tiny_components()
    keys = grid(("photo",))[:5]
    whole = build_bank(comps, tmp_path / "a.safetensors", keys, steps=2, log=lambda *a, **k: None)
    assert sorted(whole) == keys and all(v.dtype == np.uint8 and v.shape[2] == 3 for v in whole.values())
    # a bank completed in parts (two keys first, then the rest) equals the one made at once
    build_bank(comps, tmp_path / "b.safetensors", [keys[1], keys[3]], steps=2, log=lambda *a, **k: None)
    parts = build_bank(comps, tmp_path / "b.safetensors", keys, steps=2, log=lambda *a, **k: None)
    # keys[1] and keys[3] were seeded as index 0 and 1 of their list: equal to the whole bank only by index
    assert all(np.array_equal(parts[k], whole[k]) for k in (keys[0], keys[2], keys[4]))

    def boom(*a, **k):
        raise AssertionError("a complete bank is read, not generated")

    monkeypatch.setattr(tailor.Pipeline, "generate", boom)
    again = build_bank(comps, tmp_path / "a.safetensors", keys, steps=2)
    assert all(np.array_equal(again[k], whole[k]) for k in keys)


def test_items_paste_the_bank_objects_and_carry_the_plain_caption():
    ds = _scenes()
    rng = np.random.default_rng(0)
    bank = {k: rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for k in _keys(ds)}
    data = ODGENDataset(ds, 0, 3, 1.0, bank=bank, object_crop=0.6)
    for i in range(len(ds)):
        item, attrs = data[i], ds[i]["attrs"]
        objs = scene_boxes(attrs, SIZE)
        crops = [centre_crop(bank[object_key(o, attrs)], 0.6) for o in attrs["objects"]]
        want, mask = build_canvases(crops, [o["box"] for o in objs], SIZE, 3)
        assert torch.equal(item["odgen_canvases"], want) and torch.equal(item["odgen_mask"], mask)
        plain = item["odgen_plain_caption"]
        assert plain == plain_caption(attrs, item["caption"]) and plain != item["caption"]
        for o in attrs["objects"]:
            assert o["shape"] in plain and o["color"] not in plain.split() and o["pattern"] not in plain.split()
    with pytest.raises(tailor.errors.ConfigError, match="object bank has no image"):
        ODGENDataset(ds, 0, 3, 1.0, bank={}, object_crop=0.6)[0]


def test_wrap_dataset_builds_the_bank_and_expand_batch_swaps_captions(tmp_path, monkeypatch):
    from tailor.core.training import TrainConfig

    ds = _scenes(2)
    monkeypatch.setattr(bank_mod, "grid", lambda styles: _keys(ds))  # the tiny test's keys only
    path = tmp_path / "bank.safetensors"
    m = ODGENMethod(object_bank=str(path), object_steps=2, empty_prompts=0.0, plain_prompts=1.0)
    m.patch(tailor.tiny_components())
    data = m.wrap_dataset(ds, TrainConfig(base="tiny", out=str(tmp_path / "run"), data="world:relation:photo"))
    assert path.is_file() and sorted(data.bank) == _keys(ds)
    batch = {"caption": ["a red star", ""], "odgen_plain_caption": ["a star", "a circle"]}
    out, _, _ = m.expand_batch(batch, [(0, 0), (0, 1)], [0, 1])
    assert out["caption"] == ["a star", ""]  # an empty caption stays empty
    m.config.plain_prompts = 0.5
    draws = [m.expand_batch({**batch, "caption": ["x", "x"]}, [], [p, p + 1000])[0]["caption"] for p in range(40)]
    swapped = sum(c == "a star" for d in draws for c in d[:1])
    assert 8 <= swapped <= 32  # about half of the positions
    again = [m.expand_batch({**batch, "caption": ["x", "x"]}, [], [p, p + 1000])[0]["caption"] for p in range(40)]
    assert again == draws  # per position: resumable
    m.config.plain_prompts = 0.0
    assert m.expand_batch(batch, [], [0, 1])[0]["caption"] == batch["caption"]


def test_recipes():
    from zoo.odgen import recipe_options, run_dir

    bank = recipe_options("R", "bank")
    assert bank["object_bank"].endswith("bank.safetensors") and bank["plain_prompts"] == 0.3
    assert recipe_options("R", "crops") == {"init": "layout"}
    assert run_dir("R", "crops").name == "run" and run_dir("R", "bank").name == "run_bank"
    ODGENMethod(**bank).config.validate()
    with pytest.raises(tailor.errors.ConfigError, match="object_bank must be a .safetensors"):
        ODGENMethod(object_bank="bank.npz")


def test_grouped_files_refuse_other_methods_files(tmp_path):
    """The shared file code (tailor.core.control_groups) names the method, with its article."""
    from tailor.core.io import save_tensors
    from tailor.methods.controlgpt.method import ControlGPTMethod

    f = tmp_path / "x.safetensors"
    save_tensors(f, {"a": torch.zeros(1)}, {"method": "lora"})
    want = "is not an odgen file; pass one written by `tailor train odgen`"
    with pytest.raises(tailor.errors.FormatError, match=want):
        ODGENMethod.from_file(f)
    with pytest.raises(tailor.errors.FormatError, match="is not a controlgpt file"):
        ControlGPTMethod.from_file(f)


def test_list_guidance_gives_the_unconditional_half_the_empty_list():
    from tailor.core.conditioning import Conditioning, StepState
    from tailor.core.pipeline import Pipeline

    objs = [{"name": "star", "box": [2, 8, 14, 24]}, {"name": "circle", "box": [18, 8, 30, 24]}]
    layout = {"size": 32, "objects": objs, "relations": []}
    images = [np.full((8, 8, 3), (200, 30, 30), np.uint8), np.full((8, 8, 3), (30, 30, 200), np.uint8)]
    comps = tailor.tiny_components()
    m = ODGENMethod()
    torch.manual_seed(0)
    m.patch(comps)

    def generate():
        pipe = Pipeline(comps).attach(m, layout=layout, object_images=images)
        out = pipe.generate("a red star and a blue circle", n=1, seed=0, steps=2, guidance=3.0).array
        pipe.detach()
        return out

    with torch.no_grad():  # open the stem and the ControlNet's zero convs (any weights do)
        cn = m.control
        for z in [m.image_list.conv_out, *cn.controlnet_down_blocks, cn.controlnet_mid_block,
                  cn.controlnet_cond_embedding.conv_out]:  # fmt: skip
            z.weight.normal_(0, 0.1)
    m.config.list_guidance = True
    inputs = {"layout": layout, "object_images": images}
    f = comps.vae_scale_factor
    lat = torch.zeros(2, int(comps.vae.config.latent_channels), 32 // f, 32 // f)
    cond = Conditioning(encoder_hidden_states=torch.zeros(2, 1, 8), cfg=True, batch_size=1)
    hint, tokens = m._sampling_condition(StepState(latents=lat, timestep=torch.tensor(1), cond=cond, inputs=inputs))
    assert hint.shape[0] == 2 and hint[0].abs().max() == 0 and hint[1].abs().max() > 0
    assert torch.allclose(tokens[0], m.text_tokens([[]])[0]) and not torch.allclose(tokens[0], tokens[1])
    with_lg = generate()
    m.config.list_guidance = False
    assert np.abs(with_lg - generate()).max() > 0
