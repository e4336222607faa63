"""ControlNeXt (Peng et al. 2024): cross-normalized control added after the first down block; files; sizes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import tailor
from tailor.core.pipeline import Pipeline
from tailor.errors import IncompatibleError
from tailor.methods.controlnext import ControlNeXtMethod
from tailor.methods.controlnext.modules import ControlNeXtModel, cross_normalize, num_stages


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
