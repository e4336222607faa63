"""Hypernetworks (NovelAI / A1111): the processor against a hand computation, strength 0 = base exactly, nesting,
A1111 .pt files with exact key names, pickles that run code are refused, other-width files, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0
from PIL import Image

import tailor
from tailor.core.components import tiny_components
from tailor.core.pipeline import Pipeline
from tailor.errors import IncompatibleError, UnsafeFileError
from tailor.methods.hypernetwork import HypernetworkMethod as HN


def blocks(comps):
    block = comps.unet.down_blocks[0].attentions[0].transformer_blocks[0]
    return block.attn1, block.attn2  # self-attention (context width 32), cross-attention (context width 64)


def randomize(method, std=0.2):
    with torch.no_grad():
        for p in method.layers.parameters():
            p.normal_(0, std)


def hand_attention(attn, h, ctx_k, ctx_v):
    q, k, v = attn.to_q(h), attn.to_k(ctx_k), attn.to_v(ctx_v)
    b, heads = h.shape[0], attn.heads
    q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[-1])
    return attn.to_out[1](attn.to_out[0](o))


def bump(method, x, which):
    return x + method.mlp(x.shape[-1], which)(x) * method.config.strength * method.scale


@torch.no_grad()
def test_processor_equals_hand_computation_and_strength_zero_is_exact():
    comps = tiny_components()
    self_attn, cross = blocks(comps)
    h, text = torch.randn(2, 16, 32), torch.randn(2, 7, 64)
    base_self, base_cross = self_attn(h), cross(h, encoder_hidden_states=text)
    method = HN(strength=0.8)
    method.patch(comps)
    assert sorted(method.layers) == ["32", "64"]  # every context width: self-attention 32/64, cross-attention 64
    randomize(method)
    method.set_scale(0.5)
    assert torch.allclose(self_attn(h), hand_attention(self_attn, h, bump(method, h, "k"), bump(method, h, "v")),
                          atol=1e-5)  # fmt: skip
    expected = hand_attention(cross, h, bump(method, text, "k"), bump(method, text, "v"))
    assert torch.allclose(cross(h, encoder_hidden_states=text), expected, atol=1e-5)
    assert (cross(h, encoder_hidden_states=text) - base_cross).abs().max() > 1e-3
    method.set_scale(0.0)
    assert torch.equal(self_attn(h), base_self) and torch.equal(cross(h, encoder_hidden_states=text), base_cross)
    # several hypernetworks apply in attachment order: k context = x1 + mlp2(x1) s2, x1 = x + mlp1(x) s1
    second = HN(strength=0.3)
    second.patch(comps)
    randomize(second)
    method.set_scale(1.0)
    k1, v1 = bump(method, text, "k"), bump(method, text, "v")
    expected = hand_attention(cross, h, bump(second, k1, "k"), bump(second, v1, "v"))
    assert torch.allclose(cross(h, encoder_hidden_states=text), expected, atol=1e-5)
    method.unpatch()  # out of order: the other wrapper stays
    assert torch.allclose(
        cross(h, encoder_hidden_states=text),
        hand_attention(cross, h, bump(second, text, "k"), bump(second, text, "v")),
        atol=1e-5,
    )
    second.unpatch()
    assert all(type(p) is AttnProcessor2_0 for p in comps.unet.attn_processors.values())
    assert torch.equal(cross(h, encoder_hidden_states=text), base_cross)


def test_pipeline_weight_zero_and_detach_restore_exactly():
    comps = tiny_components()
    plain = Pipeline(comps).generate("a red star", steps=2).array
    method = HN()
    pipe = Pipeline(comps).attach(method, weight=0.0)
    assert np.abs(pipe.generate("a red star", steps=2).array - plain).max() == 0
    randomize(method)
    pipe.attachments[0].weight = 1.0
    assert np.abs(pipe.generate("a red star", steps=2).array - plain).max() > 1e-4
    pipe.detach()
    assert np.abs(Pipeline(comps).generate("a red star", steps=2).array - plain).max() == 0


A1111_KEYS = {
    # relu + LayerNorm, [1, 2, 1]: Linear, ReLU, LayerNorm, Linear, LayerNorm
    "ln": (dict(activation_func="relu", is_layer_norm=True), [0, 2, 3, 4]),
    # relu + dropout after both hidden layers, [1, 2, 2, 1]: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
    "dropout": (dict(activation_func="relu", layer_structure=[1, 2, 2, 1], use_dropout=True, last_layer_dropout=True),
                [0, 3, 6]),
    "linear": (dict(), [0, 1]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(A1111_KEYS))
def test_a1111_pt_round_trip_with_exact_keys(case, tmp_path):
    options, linear_idx = A1111_KEYS[case]
    comps = tiny_components()
    method = HN(**options)
    pipe = Pipeline(comps).attach(method)
    randomize(method, 0.05)
    out = pipe.generate("a red star", steps=2).array
    method.save(tmp_path)
    raw = torch.load(tmp_path / "hypernetwork.pt", weights_only=True)
    assert sorted(k for k in raw if isinstance(k, int)) == [32, 64]
    expected = {f"linear.{i}.{p}" for i in linear_idx for p in ("weight", "bias")}
    assert set(raw[64][0]) == set(raw[64][1]) == set(raw[32][0]) == expected
    assert raw["layer_structure"] == [float(x) for x in options.get("layer_structure", [1, 2, 1])]
    assert raw["activation_func"] == options.get("activation_func", "linear")
    for key in ("is_layer_norm", "weight_initialization", "use_dropout", "dropout_structure", "last_layer_dropout",
                "activate_output", "name", "step", "sd_checkpoint", "sd_checkpoint_name"):  # fmt: skip
        assert key in raw
    for name in ("hypernetwork.pt", "hypernetwork.safetensors"):
        loaded = tailor.load(tmp_path / name)
        assert isinstance(loaded, HN)
        assert (
            np.abs(Pipeline(tiny_components()).attach(loaded).generate("a red star", steps=2).array - out).max() == 0
        )


@torch.no_grad()
def test_hand_built_a1111_file_and_old_keys(tmp_path):
    w = {d: [torch.randn(2 * d, d) * 0.1, torch.randn(2 * d) * 0.1, torch.randn(d, 2 * d) * 0.1, torch.randn(d) * 0.1]
         for d in (32, 64)}  # fmt: skip
    data = {d: ({"linear1.weight": a, "linear1.bias": b, "linear2.weight": c, "linear2.bias": e},
                {"linear.0.weight": a, "linear.0.bias": b, "linear.1.weight": c, "linear.1.bias": e})
            for d, (a, b, c, e) in w.items()}  # fmt: skip
    data.update(layer_structure=[1, 2, 1], activation_func="linear", name="old", step=100)
    torch.save(data, tmp_path / "old.pt")
    method = tailor.load(tmp_path / "old.pt")
    assert isinstance(method, HN) and method.config.widths == [32, 64]
    method.patch(tiny_components())
    x = torch.randn(3, 64)
    a, b, c, e = w[64]
    for which in ("k", "v"):
        assert torch.allclose(method.mlp(64, which)(x), (x @ a.T + b) @ c.T + e, atol=1e-6)


def test_code_running_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    torch.save({64: (Payload(), {}), "layer_structure": [1, 2, 1]}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeFileError, match="evil.pt"):
        tailor.load(tmp_path / "evil.pt")
    with pytest.raises(UnsafeFileError):
        HN.from_file(tmp_path / "evil.pt")
    assert not marker.exists()


def test_file_for_another_base_width_is_refused(tmp_path):
    def pair(d):
        sd = {"linear.0.weight": torch.zeros(2 * d, d), "linear.0.bias": torch.zeros(2 * d),
              "linear.1.weight": torch.zeros(d, 2 * d), "linear.1.bias": torch.zeros(d)}  # fmt: skip
        return (sd, dict(sd))

    torch.save({768: pair(768), 320: pair(320), "layer_structure": [1, 2, 1]}, tmp_path / "sd15.pt")
    method = tailor.load(tmp_path / "sd15.pt")
    comps = tiny_components()
    with pytest.raises(IncompatibleError, match=r"768.*64"):
        Pipeline(comps).attach(method)
    assert method.components is None and method.state_dict()  # still detached, weights kept
    assert all(type(p) is AttnProcessor2_0 for p in comps.unet.attn_processors.values())


def test_training_moves_only_the_mlps(tmp_path):
    from tailor.core.training import TrainConfig, train

    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / "a.png")
    (folder / "a.txt").write_text("a red star")
    comps = tiny_components()
    unet = {k: v.clone() for k, v in comps.unet.state_dict().items()}
    method = HN(use_dropout=True, activation_func="gelu", layer_structure=[1, 2, 2, 1])
    assert method.default_lr == 1e-5
    method.patch(comps)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    cfg = TrainConfig(base="tiny", out=str(tmp_path / "run"), data=str(folder), steps=1, batch_size=1, resolution=32,
                      lr=1e-3)  # fmt: skip
    train(method, cfg, components=comps)
    assert all(torch.equal(v, unet[k]) for k, v in comps.unet.state_dict().items())  # MLPs are not UNet weights
    assert max((v - before[k]).abs().max() for k, v in method.state_dict().items()) > 0
    assert not method.layers.training


def test_sdxl_base(tmp_path):
    comps = tiny_components(sdxl=True)
    plain = Pipeline(comps).generate("a red star", steps=2).array
    method = HN()
    pipe = Pipeline(comps).attach(method)
    assert sorted(method.layers) == ["32", "64"]
    randomize(method)
    out = pipe.generate("a red star", steps=2).array
    assert np.abs(out - plain).max() > 1e-4
    method.save(tmp_path)
    pipe.detach()
    again = Pipeline(tiny_components(sdxl=True)).attach(tailor.load(tmp_path / "hypernetwork.pt"))
    assert np.abs(again.generate("a red star", steps=2).array - out).max() == 0
