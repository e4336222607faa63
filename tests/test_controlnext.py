"""ControlNeXt (Peng et al. 2024): cross-normalized control added after the first down block; files; sizes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import tailor
from tailor.core.pipeline import Pipeline
from tailor.errors import IncompatibleError
from tailor.methods.controlnext import ControlNeXtMethod
from tailor.methods.controlnext.modules import ControlNeXtModel, cross_normalize, num_stages, scaled_widths


def test_hook_adds_cross_normalized_control_after_block0(tiny):
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    seen = {}
    block = tiny.unet.down_blocks[0]
    before = block.register_forward_hook(lambda m, a, out: seen.__setitem__("before", (out[0].clone(), out[1])))
    m = ControlNeXtMethod(control_scale=0.5)
    pipe = Pipeline(tiny).attach(m, weight=0.8, image=img)
    after = block.register_forward_hook(lambda m_, a, out: seen.__setitem__("after", out))
    ctrl = {}
    orig_forward = m.model.forward
    m.model.forward = lambda *a, **k: ctrl.setdefault("c", orig_forward(*a, **k))
    pipe.generate("a star", n=1, seed=0, steps=1, guidance=3.0)
    h0, skips0 = seen["before"]
    h1, skips1 = seen["after"]
    assert skips1 is skips0  # the skip connections are untouched
    want = cross_normalize(ctrl["c"], h0) * 0.8 * 0.5
    assert torch.allclose(h1 - h0, want, atol=1e-5)
    c = cross_normalize(ctrl["c"], h0)
    assert torch.allclose(c.mean(dim=(1, 2, 3)), h0.mean(dim=(1, 2, 3)), atol=1e-5)
    assert torch.allclose(c.std(dim=(1, 2, 3)), h0.std(dim=(1, 2, 3)), atol=1e-4)
    before.remove()
    after.remove()
    pipe.detach()
    assert not block._forward_hooks  # detach removes the hook


def test_window_and_weight_zero_leave_the_base(tiny):
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    plain = Pipeline(tiny).generate("a star", n=1, seed=0, steps=2, guidance=3.0).array
    m = ControlNeXtMethod()
    on = Pipeline(tiny).attach(m, image=img).generate("a star", n=1, seed=0, steps=2, guidance=3.0).array
    m.unpatch()
    assert abs(on - plain).max() > 1e-3
    zero = Pipeline(tiny).attach(m, weight=0.0, image=img).generate("a star", n=1, seed=0, steps=2, guidance=3.0)
    m.unpatch()
    assert abs(zero.array - plain).max() == 0


def test_sizes_files_and_official_layout(tiny, tmp_path):
    assert [num_stages(f) for f in (2, 4, 8)] == [1, 2, 2]
    sd = ControlNeXtModel()  # the official SD1.5 module: 512 px -> 64x64x320, pooled to the 32x32 injection point
    assert tuple(sd(torch.rand(1, 3, 64, 64), torch.tensor([10])).shape) == (1, 320, 8, 8)
    save_file({k: v.contiguous() for k, v in sd.state_dict().items()}, str(tmp_path / "official.safetensors"))
    loaded = tailor.load(tmp_path / "official.safetensors")
    assert isinstance(loaded, ControlNeXtMethod) and loaded.model_config["output_channels"] == 320
    with pytest.raises(IncompatibleError, match="another base"):
        loaded.patch(tiny)  # SD1.5 module on a base whose first block has 32 channels

    m = ControlNeXtMethod(condition="hf")
    m.patch(tiny)
    m.save(tmp_path / "run")
    back = tailor.load(tmp_path / "run" / "controlnext.safetensors")
    assert back.config.condition == "hf"
    back.patch(tailor.tiny_components())
    ref = m.model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in back.model.state_dict().items())
    folder = ControlNeXtModel.from_pretrained(tmp_path / "run" / "controlnext")
    assert all(torch.equal(v, ref[k]) for k, v in folder.state_dict().items())


def shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_widths_scale_with_the_base():
    """Every width keeps its official ratio to the first UNet block (64, 128, 256 / 320), rounded to 8s."""
    sd = ControlNeXtModel.for_base((320, 640, 1280, 1280), 8)
    assert shapes(sd) == shapes(ControlNeXtModel())  # SD1.5: the official module, shape for shape
    assert sum(p.numel() for p in sd.parameters()) == 3_526_400
    assert scaled_widths(320) == {"embed": 64, "mid": 128, "last": 256, "time_proj": 128, "time_embed": 256}
    assert scaled_widths(640) == {"embed": 128, "mid": 256, "last": 512, "time_proj": 256, "time_embed": 512}
    # the world base (32, 64, 128), VAE factor 4: 6.4 -> 8, 12.8 -> 16, 25.6 -> 24
    world = ControlNeXtModel.for_base((32, 64, 128), 4)
    got = shapes(world)
    assert got["embedding.0.weight"] == (8, 3, 3, 3) and got["embedding.6.weight"] == (16, 8, 3, 3)
    assert got["time_embedding.linear_1.weight"] == (24, 16) and got["time_embedding.linear_2.weight"] == (24, 24)
    assert got["down_res.0.conv1.weight"] == (16, 16, 3, 3) and got["down_res.1.conv1.weight"] == (24, 16, 3, 3)
    assert got["down_res.1.time_emb_proj.weight"] == (24, 24) and got["mid_convs.0.0.weight"] == (24, 24, 3, 3)
    assert got["mid_convs.1.weight"] == (32, 24, 1, 1)
    assert sum(p.numel() for p in world.parameters()) == 36_768  # the paper-width module on this base: 3,452,384
    assert set(got) == set(shapes(ControlNeXtModel()))  # the official key layout
    out = world(torch.rand(2, 3, 64, 64), torch.tensor([10]))
    assert tuple(out.shape) == (2, 32, 8, 8)  # 64 px -> 32 (stem) -> 8 after two stages: the injection point's size


def test_scaled_module_round_trips_through_the_official_layout(tmp_path):
    """A file of bare official keys at scaled widths reads back with the widths its tensors imply."""
    world = ControlNeXtModel.for_base((32, 64, 128), 4)
    save_file({k: v.contiguous() for k, v in world.state_dict().items()}, str(tmp_path / "m.safetensors"))
    loaded = tailor.load(tmp_path / "m.safetensors")
    assert loaded.model_config["embedding_channels"] == [8, 16] and loaded.model_config["time_proj_dim"] == 16
    loaded.patch(tailor.tiny_components())  # first block 32 wide: fits
    ref = world.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.model.state_dict().items())


def test_shipped_world_module_loads_by_name():
    from tailor.world.zoo import WEIGHTS, shipped_adapters

    if "controlnext-canny" not in shipped_adapters() or not (WEIGHTS / "base" / "model_index.json").is_file():
        pytest.skip("controlnext-canny or the world base is not shipped")
    m = tailor.load("controlnext-canny")
    assert isinstance(m, ControlNeXtMethod) and m.config.condition == "canny"
    world = tailor.load_components("world")
    m.patch(world)
    want = ControlNeXtModel.for_base(world.unet.config.block_out_channels, world.vae_scale_factor)
    assert shapes(m.model) == shapes(want)  # shipped at the widths scaled to the base
    m.unpatch()


def test_control_bench_times_each_file_at_its_own_widths(tmp_path, monkeypatch):
    """Two ControlNeXt files of one config but different widths get their own training timing (the bench once
    timed the paper-width file with the base-scaled module)."""
    from tailor.bench import control as B

    seen = []

    def fake_train(method, config, components=None):
        seen.append(method.model_config)
        raise RuntimeError("timed")

    monkeypatch.setattr(tailor, "train", fake_train)
    s = B.Settings(base="tiny", out=tmp_path, **B.QUICK)
    cfg = ControlNeXtMethod(condition="canny").config
    paper, scaled = dict(ControlNeXtModel().config), dict(ControlNeXtModel.for_base((32, 64), 2).config)
    rows = [B.timed_training(n, "controlnext", cfg, s, tmp_path, a) for n, a in (("p", paper), ("s", scaled))]
    assert [m["output_channels"] for m in seen] == [320, 32]  # each timed at the loaded file's architecture
    assert all("timed" in r["train_error"] for r in rows)
    B.timed_training("again", "controlnext", cfg, s, tmp_path, paper)
    assert len(seen) == 2  # the cache answers the same architecture
