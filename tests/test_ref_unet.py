"""ref_unet (IDM-VTON): the bank's concatenate-and-crop attention against a hand-computed one, GarmentNet's features,
the official folder layout written and read back, bad inputs, a tiny train / generate."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
from tailor.core.pipeline import Pipeline
from tailor.core.reference_bank import ReferenceBank, self_attention_layers
from tailor.errors import InputError
from tailor.methods.ref_unet import RefUnetMethod
from tailor.methods.ref_unet.data import TryOnItems, render_tryon
from tailor.methods.ref_unet.formats import read_official, sniff, write_official


def _case(size=32, seed=3):
    c = render_tryon(seed, size=size)
    return {k: Image.fromarray(c[k]) for k in ("scene", "reference", "mask", "shape")}


def _randomize(method, seed=0):
    """Non-zero LoRA B and conv_in extra channels, so the trained parts change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_bank_crop_equals_hand_attention(tiny):
    """TryonNet's self-attention with GarmentNet's features: the official ``attn1(cat([x, f]))[:, :N]`` and the
    softmax formula ``softmax(Q K^T / sqrt(d)) V`` over ``[x; f]`` (zero features for the unconditional row)."""
    unet = tiny.unet
    name = self_attention_layers(unet)[0][0]
    attn = unet.get_submodule(name[: -len(".processor")])
    base = attn.processor
    bank = ReferenceBank(unet, reader="attn", style_fidelity=0.0)
    bank.attach()
    g = torch.Generator().manual_seed(0)
    dim = attn.to_q.in_features
    x, f = torch.randn(2, 16, dim, generator=g), torch.randn(1, 24, dim, generator=g)
    feats = torch.cat([torch.zeros_like(f), f])  # [uncond: zeros, cond: f], the official CFG rule
    bank.features, bank.mode = {name: feats}, "read"
    with torch.no_grad():
        got = attn(x)
        official = base(attn, torch.cat([x, feats], 1), None)[:, :16]  # concatenate, attend, crop
        h, d = attn.heads, dim // attn.heads
        ctx = torch.cat([x, feats], 1)
        q = attn.to_q(x).view(2, 16, h, d).transpose(1, 2)
        k = attn.to_k(ctx).view(2, 40, h, d).transpose(1, 2)
        v = attn.to_v(ctx).view(2, 40, h, d).transpose(1, 2)
        w = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, -1)
        hand = attn.to_out[0]((w @ v).transpose(1, 2).reshape(2, 16, dim))
        plain = base(attn, x, None)
    bank.detach()
    torch.testing.assert_close(got, official, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, hand, atol=1e-5, rtol=1e-5)
    assert (got[1] - plain[1]).abs().max() > 1e-3  # the conditional row reads the reference


def test_garmentnet_features_are_the_clean_reference_at_t(tiny):
    """The bank holds the frozen *base* UNet's ``norm1`` inputs for the clean reference latent at the main call's t."""
    import copy

    plain = copy.deepcopy(tiny.unet)  # the base before anything is attached
    m = RefUnetMethod(ip_adapter="", rank=2)
    inputs = _case()
    pipe = Pipeline(tiny).attach(m, **inputs)
    _randomize(m)  # TryonNet differs from the base; GarmentNet must not
    calls = {}

    def keep(key):
        def hook(mod, args, kwargs):
            calls.setdefault(key, (args, kwargs))

        return hook

    h1 = m.reference.register_forward_pre_hook(keep("ref"), with_kwargs=True)
    h2 = tiny.unet.register_forward_pre_hook(keep("main"), with_kwargs=True)
    pipe.generate("a star", seed=0, steps=1, guidance=2.0)
    h1.remove(), h2.remove()
    (x, t), kw = calls["ref"]
    assert torch.equal(torch.as_tensor(t), torch.as_tensor(calls["main"][0][1]))  # the same t
    torch.testing.assert_close(x, m._prepare(inputs, 32, 32)[1])  # the clean (un-noised) reference latent
    name = self_attention_layers(plain)[-1][0]
    seen = {}
    block = plain.get_submodule(name[: -len(".processor")])
    hook = block.register_forward_pre_hook(lambda mod, a: seen.__setitem__("x", a[0]))
    with torch.no_grad():
        plain(x, t, encoder_hidden_states=kw["encoder_hidden_states"])
    hook.remove()
    feats = m.reader.features[name]
    assert torch.equal(feats[0], torch.zeros_like(feats[0]))  # the unconditional row: zero features (official)
    torch.testing.assert_close(feats[1:], seen["x"], atol=1e-5, rtol=1e-5)
    pipe.detach()


def _predictions(pipe, tiny) -> torch.Tensor:
    """The UNet's predictions over a 2-step sampling (the tiny VAE's images are nearly flat)."""
    preds = []
    hook = tiny.unet.register_forward_hook(lambda mod, a, out: preds.append(out[0].detach().clone()))
    pipe.generate("a star", seed=0, steps=2, guidance=2.0)
    hook.remove()
    return torch.cat(preds)


def test_reference_changes_the_output_only_with_the_reference_unet(tiny):
    a, b = _case(seed=3), _case(seed=4)
    outs = {}
    for use in (True, False):
        m = RefUnetMethod(ip_adapter="", rank=2, reference_unet=use)
        pipe = Pipeline(tiny).attach(m, **a)
        _randomize(m)
        one = _predictions(pipe, tiny)
        pipe.detach().attach(m, **{**a, "reference": b["reference"]})
        two = _predictions(pipe, tiny)
        pipe.detach()
        outs[use] = float((one - two).abs().max())
    assert outs[True] > 1e-3 and outs[False] == 0
    assert tiny.unet.config.in_channels == 4 and tiny.unet.conv_in.in_channels == 4  # detached: the base is back


def _ip_file(tmp_path, comps):
    ip = tailor.get_spec("ip_adapter").method(image_encoder="tiny", plus=True)
    ip.patch(comps)
    _randomize(ip, 5)
    ip.save(tmp_path / "ip")
    ip.unpatch()
    return str(tmp_path / "ip" / "ip_adapter.safetensors")


def test_official_layout_written_and_read_back(tiny, tmp_path):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

    inputs = _case()
    m = RefUnetMethod(ip_adapter=_ip_file(tmp_path, tiny), rank=2)
    pipe = Pipeline(tiny).attach(m, **inputs)
    _randomize(m)
    want = _predictions(pipe, tiny)
    folder = write_official(m, tmp_path / "idm")
    cfg = json.loads((folder / "unet" / "config.json").read_text())
    assert cfg["in_channels"] == 13 and cfg["encoder_hid_dim_type"] == "ip_image_proj"
    from tailor.core.io import load_tensors

    w = load_tensors(folder / "unet" / "diffusion_pytorch_model.safetensors")
    assert w["conv_in.weight"].shape[1] == 13
    assert any(k.startswith("encoder_hid_proj.layers.0.0.to_kv") for k in w)
    assert any(k.endswith("attn2.processor.to_k_ip.weight") for k in w)
    assert not any("lora" in k for k in w)
    enc = UNet2DConditionModel.from_pretrained(folder / "unet_encoder")
    assert enc.config.in_channels == 4
    base = {k: v for k, v in m.reference.state_dict().items()}
    assert all(torch.equal(v, base[k]) for k, v in enc.state_dict().items())
    assert CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder") is not None
    pipe.detach()
    assert sniff(folder / "unet" / "diffusion_pytorch_model.safetensors")
    back = tailor.load(folder / "unet")  # the unet weights resolve, the folder is sniffed
    assert isinstance(back, RefUnetMethod) and back.config.reference_unet
    fresh = tailor.tiny_components()
    got = _predictions(Pipeline(fresh).attach(back, **inputs), fresh)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert read_official(folder, RefUnetMethod).config.ip_adapter == ""


def test_bad_inputs(tiny, caplog):
    m = RefUnetMethod(ip_adapter="", rank=2)
    inputs = _case()
    pipe = Pipeline(tiny)
    small = inputs["mask"].resize((16, 16))
    with pytest.raises(InputError, match="mask is 16x16 but the scene is 32x32"):
        pipe.attach(m, **{**inputs, "mask": small}).generate("a star", steps=1)
    pipe.detach()
    with pytest.raises(InputError, match="mask is empty"):
        pipe.attach(m, **{**inputs, "mask": Image.new("L", (32, 32))}).generate("a star", steps=1)
    pipe.detach()
    with pytest.raises(InputError, match="SCENE\\+REFERENCE\\+MASK"):
        pipe.attach(m, tryon=[inputs["scene"]]).generate("a star", steps=1)
    pipe.detach()
    big = inputs["reference"].resize((48, 48))
    with caplog.at_level(logging.WARNING, logger="tailor"):
        pipe.attach(m, **{**inputs, "reference": big})
        pipe.generate("a star", steps=2)
        pipe.generate("a star", steps=2, seed=1)
    assert sum("reference is resized" in r.message for r in caplog.records) == 1  # said once


def test_tryon_items_differ_only_in_the_mask():
    item = TryOnItems(4, 32, 0)[1]
    c = TryOnItems(4, 32, 0).case(1)
    outside = c["mask"] < 128
    assert np.array_equal(c["scene"][outside], c["target"][outside])  # exact target: only the object changes
    assert not np.array_equal(c["scene"][~outside], c["target"][~outside])
    assert item["masked_pixel_values"][:, ~torch.from_numpy(outside)].abs().max() == 0


def test_tiny_train_then_generate(tmp_path):
    from tailor.core.training import TrainConfig, train

    cfg = TrainConfig(base="tiny", out=str(tmp_path / "run"), data="world:pair", steps=2, batch_size=2,
                      resolution=32, lr=1e-3)  # fmt: skip
    m = RefUnetMethod(ip_adapter="", rank=2)
    train(m, cfg)
    back = tailor.load(tmp_path / "run")
    state = back.state_dict()
    assert state["ref_unet.conv_in.weight"].shape[1] == 13
    assert state["ref_unet.conv_in.weight"][:, 4:].abs().max() > 0  # the new channels moved
    out = Pipeline(tailor.tiny_components()).attach(back, **_case()).generate("a star", steps=2).array
    assert out.shape == (1, 32, 32, 3)


def test_cli_by_name_and_one_line_errors(capsys, tmp_path):
    """``--ref-unet ref-unet=...`` loads the shipped world weights by name; an empty mask or a mask of another size
    exits 2 with one sentence and writes nothing; a reference of another size is resized."""
    from tailor.cli import main

    c = render_tryon(7)
    for k in ("scene", "reference", "mask", "shape"):
        Image.fromarray(c[k]).save(tmp_path / f"{k}.png")
    Image.new("L", (64, 64)).save(tmp_path / "empty.png")
    Image.fromarray(c["mask"]).resize((32, 32)).save(tmp_path / "small.png")
    Image.fromarray(c["reference"]).resize((96, 96)).save(tmp_path / "big.png")
    p = str(tmp_path)
    for mask, needle in (("empty.png", "mask is empty"), ("small.png", "mask is 32x32 but the scene is 64x64")):
        spec = f"ref-unet={p}/scene.png+{p}/reference.png+{p}/{mask}"
        code = main(["generate", "--base", "world", "--ref-unet", spec, "-p", "x", "--steps", "1", "--out",
                     f"{p}/bad"])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and needle in err and "Traceback" not in err
        assert not (tmp_path / "bad").exists()
    spec = f"ref-unet={p}/scene.png+{p}/big.png+{p}/mask.png+{p}/shape.png"
    code = main(["generate", "--base", "world", "--ref-unet", spec, "-p", c["caption"], "--steps", "2", "-n", "1",
                 "--out", f"{p}/ok"])  # fmt: skip
    assert code == 0 and (tmp_path / "ok" / "generation.json").is_file()


def test_bank_rows_follow_a_call_on_some_rows(tiny):
    """Core bank: a UNet call on some rows of the sampling batch (``batch_rows``, StoryGen's extra guidance row) reads
    those rows of a bank written per sampling row (ref_unet's [zero, features] under guidance)."""
    from tailor.core.reference_bank import batch_rows

    bank = ReferenceBank(tiny.unet, reader="attn")
    name = bank.layers[0]
    f = torch.arange(2.0).view(2, 1, 1).expand(2, 3, 4)
    bank.features, bank.mode = {name: f}, "read"
    assert torch.equal(bank.feature(name, 2), f)
    with batch_rows(torch.tensor([1])):
        assert torch.equal(bank.feature(name, 1), f[1:])
    with batch_rows(torch.tensor([0])):
        assert torch.equal(bank.feature(name, 1), f[:1])
