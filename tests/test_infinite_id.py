"""Infinite-ID (Wu et al. 2024): AdaIN-mean and mixed attention against hand computations, the core reference bank's
``call`` reader, identity-enhanced training (text cross-attention exactly off, only the ID encoder and branch learn),
the two streams at sampling, and bad inputs — on tiny random models with the shipped world face models."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

import tailor
import tailor.world as world
from tailor.core.conditioning import StepState
from tailor.core.pipeline import Pipeline, call_unet
from tailor.core.prompts import encode_prompts
from tailor.core.reference_bank import ReferenceBank, ReferenceRows, fused_call
from tailor.errors import ConfigError, InputError
from tailor.methods.infinite_id import InfiniteIDMethod
from tailor.methods.infinite_id.modules import adain_mean, mixed_attention

OPTS = dict(num_tokens=2, clip_tokens=2, resampler_depth=1, image_encoder="tiny")


def test_adain_mean_is_x_minus_its_mean_plus_the_others():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 7, 5, generator=g) * 3 + 1, torch.randn(2, 4, 5, generator=g) - 2
    out = adain_mean(x, y)
    for b in range(2):
        for c in range(5):
            want = x[b, :, c] - x[b, :, c].mean() + y[b, :, c].mean()
            assert torch.allclose(out[b, :, c], want, atol=1e-6)
    assert torch.allclose(out.mean(1), y.mean(1), atol=1e-5)  # the mean is y's ...
    assert torch.allclose(out.std(1), x.std(1), atol=1e-5)  # ... the spread stays x's (not full AdaIN)


def _attention(seed=0):
    torch.manual_seed(seed)
    return Attention(query_dim=16, heads=2, dim_head=8, out_bias=True).eval()


def _hand(attn, x, ref, adain):
    """softmax(Q K^T / sqrt(d)) V per head, written out, over [ref; x]."""
    q, kt, vt = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    ki, vi = attn.to_k(ref), attn.to_v(ref)
    if adain:
        qi = attn.to_q(ref)
        q = q - q.mean(1, keepdim=True) + qi.mean(1, keepdim=True)
        kt = kt - kt.mean(1, keepdim=True) + ki.mean(1, keepdim=True)
    k, v = torch.cat([ki, kt], 1), torch.cat([vi, vt], 1)
    heads = []
    for h in range(2):
        sl = slice(8 * h, 8 * h + 8)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(8), dim=-1)
        heads.append(w @ v[..., sl])
    return attn.to_out[0](torch.cat(heads, -1))


@pytest.mark.parametrize("adain", [False, True])
def test_mixed_attention_matches_a_hand_computation(adain):
    attn = _attention()
    g = torch.Generator().manual_seed(1)
    x, ref = torch.randn(2, 6, 16, generator=g), torch.randn(2, 5, 16, generator=g) + 0.7
    with torch.no_grad():
        got = mixed_attention(attn, x, ref, [], adain)
        assert torch.allclose(got, _hand(attn, x, ref, adain), atol=1e-5)
        if not adain:  # = diffusers' own processor attending to the concatenated context
            want = AttnProcessor2_0()(attn, x, encoder_hidden_states=torch.cat([ref, x], 1))
            assert torch.allclose(got, want, atol=1e-5)
        else:  # AdaIN-mean changes the result (the ID stream's mean differs from the text stream's)
            assert not torch.allclose(got, mixed_attention(attn, x, ref, [], False), atol=1e-3)
        # extra features (another bank) join the keys / values
        extra = torch.randn(2, 3, 16, generator=g)
        both = mixed_attention(attn, x, ref, [extra], False)
        want = AttnProcessor2_0()(attn, x, encoder_hidden_states=torch.cat([ref, x, extra], 1))
        assert torch.allclose(both, want, atol=1e-5)


def test_call_reader_in_a_fused_call_sees_the_reference_rows(tiny):
    """The core hook: a ``call`` bank that concatenates gives what the ``attn`` reader gives; the rows' own
    prediction comes back in ``ReferenceRows.prediction``."""
    unet = tiny.unet
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 4, 4, generator=g)
    ref_x = torch.randn(1, 4, 4, 4, generator=g)
    hidden = torch.randn(2, 77, tiny.cross_attention_dim, generator=g)
    t = torch.tensor(500)
    seen = []

    def concat(attn, h, f, extra):
        seen.append((h.shape[0], f.shape))
        return AttnProcessor2_0()(attn, h, encoder_hidden_states=torch.cat([h, f], 1))

    outs = []
    for bank in (ReferenceBank(unet, reader="attn", style_fidelity=0.0),
                 ReferenceBank(unet, reader="call", style_fidelity=0.0, read_fn=concat)):  # fmt: skip
        bank.attach()
        rows = ReferenceRows(ref_x, hidden[:1], None, torch.tensor([1]), [bank])
        with torch.no_grad():
            outs.append((fused_call(unet, rows, x, t, hidden, None, {}), rows.prediction))
        bank.detach()
    assert seen and all(n == 2 for n, _ in seen)
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=hidden).sample
        alone = unet(ref_x, t, encoder_hidden_states=hidden[:1]).sample  # the reference rows keep their own attn1
    assert not torch.allclose(outs[1][0], plain, atol=1e-4)
    assert torch.allclose(outs[1][1], alone, atol=1e-5)
    with pytest.raises(ConfigError, match="read_fn"):
        ReferenceBank(unet, reader="call")


def test_zero_text_embeddings_switch_the_text_cross_attention_off(tiny):
    """SD's cross-attention keys / values have no bias: zero prompt embeddings make Attn(Q, K, V) exactly 0, the
    layer's output only ``to_out``'s bias (the ID attention then adds alone)."""
    from tailor.core.attention import cross_attention_layers

    name = cross_attention_layers(tiny.unet)[0]
    attn = tiny.unet.get_submodule(name.removesuffix(".processor"))
    assert attn.to_k.bias is None and attn.to_v.bias is None
    x = torch.randn(2, 16, attn.to_q.in_features)
    with torch.no_grad():
        out = attn(x, encoder_hidden_states=torch.zeros(2, 77, attn.to_k.in_features))
    assert torch.allclose(out, attn.to_out[0].bias.expand_as(out), atol=1e-6)


def _batch(comps, m, prompts):
    faces = [world.render_face(s, identity=1200 + s, size=32) for s in range(2)]
    px = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1).float() / 127.5 - 1 for f in faces])
    emb = m.face_embedder().embed((px + 1) / 2)
    inputs = {"pixel_values": px, "id_pixel_values": px.flip(0), "face_embedding": emb}
    return encode_prompts(comps, prompts, None, cfg=False), inputs


def test_training_step_learns_the_id_without_the_text(tiny):
    m = InfiniteIDMethod(**OPTS)
    m.patch(tiny)
    for mod in m.modules():
        mod.train()
    g = torch.Generator().manual_seed(0)
    noisy, t = torch.randn(2, 4, 4, 4, generator=g), torch.tensor([300, 800])
    preds = []
    for prompts in (["a red star", "a blue cube"], ["a sketch of a man", ""]):
        cond, inputs = _batch(tiny, m, prompts)
        cond = m.encode(cond, inputs)
        assert float(cond.encoder_hidden_states.abs().max()) == 0.0  # the text cross-attention off
        assert m.branch.tokens.shape == (2, 4, tiny.cross_attention_dim)  # 2 face + 2 CLIP tokens
        m.set_scale(1.0)
        preds.append(call_unet(tiny.unet, noisy, t, cond, {}))
    assert torch.allclose(preds[0], preds[1])  # the caption cannot reach the UNet
    state = StepState(noisy, t, cond, training=True, inputs=inputs)
    loss, _ = m.loss(preds[1], torch.randn(preds[1].shape, generator=g), state, None)
    loss.backward()
    trainable = m.trainable_parameters()
    assert trainable and all(p.grad is not None for p in trainable)
    assert all(p.grad is None for p in tiny.unet.parameters())  # the UNet stays frozen
    n = sum(p.numel() for p in trainable)
    assert n == sum(p.numel() for p in m.proj.parameters()) + sum(p.numel() for p in m.branch.parameters())
    # dropped samples: zero embeddings -> the tokens of an empty reference
    cond, inputs = _batch(tiny, m, ["a", "b"])
    m.encode(cond, {**inputs, "id_keep": [False, True]})
    with torch.no_grad():
        empty = m._tokens(torch.zeros(1, m.embed_width), torch.zeros(1, m.proj.clip_dim))
    assert torch.allclose(m.branch.tokens[0], empty[0], atol=1e-6)
    assert not torch.allclose(m.branch.tokens[1], empty[0], atol=1e-3)


def _face():
    return world.render_face(3, identity=901, size=32).pil()


def _generate(comps, m, weight=1.0, guidance=3.0, steps=3, **kw):
    pipe = Pipeline(comps).attach(m, weight=weight, face=_face(), **kw)
    out = pipe.generate("a photo of a man", n=1, seed=0, steps=steps, guidance=guidance).array
    pipe.detach()
    return out


def test_two_streams_share_self_attention_and_step_the_id_stream(tiny, monkeypatch):
    base = Pipeline(tiny).generate("a photo of a man", n=1, seed=0, steps=3, guidance=3.0).array
    m = InfiniteIDMethod(**OPTS)
    calls = []
    from tailor.methods.infinite_id import method as mod

    real = mod.mixed_attention

    def spy(attn, x, f, extra, adain):
        calls.append((x.shape[0], f.shape[0], adain))
        return real(attn, x, f, extra, adain)

    monkeypatch.setattr(mod, "mixed_attention", spy)
    out = _generate(tiny, m)
    assert calls and {c[:2] for c in calls} == {(2, 2)}  # 2 text rows read 2 ID rows (ID guidance: [u, c])
    assert all(c[2] for c in calls)
    assert abs(out - base).max() > 1e-3  # the ID reaches the text stream
    assert m._stream is None  # detached: nothing kept
    # the ID stream advanced with its own predictions (not re-synced from the text stream every step)
    m2 = InfiniteIDMethod(**OPTS)
    pipe = Pipeline(tiny).attach(m2, face=_face())
    pipe.generate("a photo of a man", n=1, seed=0, steps=3, guidance=3.0)
    st = m2._stream
    assert st.step == 2 and st.rows.prediction.shape[0] == 2
    pipe.detach()
    # reproducible; weight 0 and a window that excludes every step give the base exactly
    assert abs(_generate(tiny, m) - out).max() < 1e-6
    assert abs(_generate(tiny, m, weight=0.0) - base).max() < 1e-6
    assert abs(_generate(tiny, m, start=0.9, end=1.0) - base).max() < 1e-6
    # no ID guidance: one ID row per image, read by both guidance rows
    m3 = InfiniteIDMethod(**OPTS, id_guidance=1.0)
    pipe = Pipeline(tiny).attach(m3, face=_face())
    pipe.generate("a photo of a man", n=1, seed=0, steps=2, guidance=3.0)
    assert m3._stream.rows.latents.shape[0] == 1 and m3._stream.rows.rows.tolist() == [1]  # stands for the cond row
    pipe.detach()


def test_plain_mode_is_the_decoupled_adapter(tiny):
    m = InfiniteIDMethod(**OPTS, mixed=False)
    out = _generate(tiny, m)
    assert m.bank is None
    base = Pipeline(tiny).generate("a photo of a man", n=1, seed=0, steps=3, guidance=3.0).array
    assert abs(out - base).max() > 1e-3


def test_bad_inputs(tiny):
    m = InfiniteIDMethod(**OPTS)
    pipe = Pipeline(tiny).attach(m)
    with pytest.raises(InputError, match="reference face"):
        pipe.generate("a man", steps=1)
    pipe.detach()
    pipe = Pipeline(tiny).attach(InfiniteIDMethod(**OPTS), face=torch.zeros(128))
    with pytest.raises(InputError, match="image files"):
        pipe.generate("a man", steps=1)
    pipe.detach()
    for bad in (dict(id_guidance=0.5), dict(id_drop=1.0), dict(clip_tokens=0), dict(style_fidelity=2.0),
                dict(text_id_scale=-1.0)):  # fmt: skip
        with pytest.raises(ConfigError):
            InfiniteIDMethod(**{**OPTS, **bad})
    with pytest.raises(ConfigError, match="weight"):
        Pipeline(tiny).attach(InfiniteIDMethod(**OPTS), weight=9.0, face=_face()).generate("a man", steps=1)


def test_save_and_reload(tiny, tmp_path):
    m = InfiniteIDMethod(**OPTS)
    m.patch(tiny)
    with torch.no_grad():
        for p in m.proj.parameters():
            p.add_(0.1)
    m.unpatch()
    path = m.save(tmp_path) if m._built else None
    loaded = tailor.load(path)
    assert loaded.name == "infinite_id" and loaded.config.clip_tokens == 2
    loaded.patch(tiny)
    for a, b in zip(m.proj.state_dict().values(), loaded.proj.state_dict().values()):
        assert torch.equal(a, b)
    loaded.unpatch()
