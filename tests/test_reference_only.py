"""reference_only (sd-webui-controlnet's reference modes) and the core reference bank.

The numerics test re-implements diffusers' community ``stable_diffusion_reference`` pipeline (examples/community)
independently of tailor: its hacked ``BasicTransformerBlock`` / block forwards, its write and read passes, its
``uc_mask`` style-fidelity rule and its gates, on diffusers' own ``StableDiffusionPipeline`` pieces; tailor's
pipeline with the method attached (``reference_pass="both"``) must give the same images to 1e-5.
"""

from __future__ import annotations

import logging
import types

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
from tailor.core.pipeline import Pipeline
from tailor.core.reference_bank import ReferenceAttnProcessor, ReferenceBank, match_rows, run_reference_pass
from tailor.errors import ConfigError, InputError
from tailor.methods.reference_only import ReferenceOnlyMethod

PROMPT = "a photo of a red star"


def ref_image(size=32, seed=3) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    arr = np.stack([x * 7 % 256, y * 5 % 256, (x * y) % 256], -1) + rng.integers(0, 20, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------- the community pipeline, re-implemented
def _community(components, image, *, n, seed, steps, guidance, attn, adain, style_fidelity, weight, noise_seed=0):
    """diffusers' community ``StableDiffusionReferencePipeline.__call__`` formulas (reference latent = VAE mean,
    reference noise of step i from ``noise_seed + i``: the two documented deviations)."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.unets.unet_2d_blocks import CrossAttnDownBlock2D, CrossAttnUpBlock2D, DownBlock2D, UpBlock2D

    pipe = components.diffusers_pipeline()
    unet, vae, sched = pipe.unet, pipe.vae, pipe.scheduler
    cfg = guidance > 1.0
    b = n
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPT, "cpu", n, cfg)
        embeds = torch.cat([uncond, cond]) if cfg else cond
        px = np.asarray(image.convert("RGB").resize((32, 32), Image.LANCZOS)).astype(np.float32) / 255.0
        px = torch.from_numpy((px - 0.5) / 0.5).permute(2, 0, 1)[None]
        ref = vae.encode(px).latent_dist.mean * vae.config.scaling_factor
        ref = ref.repeat(b, 1, 1, 1)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(b)]
    sched.set_timesteps(steps)
    latents = pipe.prepare_latents(b, 4, 32, 32, embeds.dtype, "cpu", gens)
    state = {"mode": "write"}
    uc_mask = torch.tensor([1] * b + [0] * b).bool()
    eps = 1e-6

    def block_forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, **kw):
        norm = self.norm1(hidden_states)
        if state["mode"] == "write":
            self.bank.append(norm.detach().clone())
            out = self.attn1(norm)
        elif weight > self.attn_weight:
            out_uc = self.attn1(norm, encoder_hidden_states=torch.cat([norm] + self.bank, dim=1))
            out_c = out_uc.clone()
            if cfg and style_fidelity > 0:
                out_c[uc_mask] = self.attn1(norm[uc_mask], encoder_hidden_states=norm[uc_mask])
            out = style_fidelity * out_c + (1.0 - style_fidelity) * out_uc
            self.bank.clear()
        else:
            out = self.attn1(norm)
        hidden_states = out + hidden_states
        hidden_states = (
            self.attn2(self.norm2(hidden_states), encoder_hidden_states=encoder_hidden_states) + hidden_states
        )
        return self.ff(self.norm3(hidden_states)) + hidden_states

    def gn(self, h, i):
        if state["mode"] == "write":
            if weight >= self.gn_weight:
                var, mean = torch.var_mean(h, dim=(2, 3), keepdim=True, correction=0)
                self.mean_bank.append([mean])
                self.var_bank.append([var])
        elif len(self.mean_bank) > 0:
            var, mean = torch.var_mean(h, dim=(2, 3), keepdim=True, correction=0)
            std = torch.maximum(var, torch.zeros_like(var) + eps) ** 0.5
            mean_acc = sum(self.mean_bank[i]) / float(len(self.mean_bank[i]))
            var_acc = sum(self.var_bank[i]) / float(len(self.var_bank[i]))
            std_acc = torch.maximum(var_acc, torch.zeros_like(var_acc) + eps) ** 0.5
            h_uc = ((h - mean) / std) * std_acc + mean_acc
            h_c = h_uc.clone()
            if cfg and style_fidelity > 0:
                h_c[uc_mask] = h[uc_mask]
            h = style_fidelity * h_c + (1.0 - style_fidelity) * h_uc
        return h

    def done(self):
        if state["mode"] == "read":
            self.mean_bank, self.var_bank = [], []

    def down_forward(self, hidden_states, temb=None, encoder_hidden_states=None, **kw):
        outs = ()
        attns = getattr(self, "attentions", None) or [None] * len(self.resnets)
        for i, (resnet, att) in enumerate(zip(self.resnets, attns)):
            hidden_states = resnet(hidden_states, temb)
            if att is not None:
                hidden_states = att(hidden_states, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
            hidden_states = gn(self, hidden_states, i)
            outs += (hidden_states,)
        done(self)
        for d in self.downsamplers or []:
            hidden_states = d(hidden_states)
            outs += (hidden_states,)
        return hidden_states, outs

    def up_forward(self, hidden_states, res_hidden_states_tuple, temb=None, encoder_hidden_states=None,
                   upsample_size=None, **kw):  # fmt: skip
        attns = getattr(self, "attentions", None) or [None] * len(self.resnets)
        for i, (resnet, att) in enumerate(zip(self.resnets, attns)):
            res, res_hidden_states_tuple = res_hidden_states_tuple[-1], res_hidden_states_tuple[:-1]
            hidden_states = resnet(torch.cat([hidden_states, res], dim=1), temb)
            if att is not None:
                hidden_states = att(hidden_states, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
            hidden_states = gn(self, hidden_states, i)
        done(self)
        for u in self.upsamplers or []:
            hidden_states = u(hidden_states, upsample_size)
        return hidden_states

    def mid_forward(self, *args, **kwargs):
        x = self.original_forward(*args, **kwargs)
        if state["mode"] == "write":
            if weight >= self.gn_weight:
                var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
                self.mean_bank.append(mean)
                self.var_bank.append(var)
        else:
            if len(self.mean_bank) > 0:
                var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
                std = torch.maximum(var, torch.zeros_like(var) + eps) ** 0.5
                mean_acc = sum(self.mean_bank) / float(len(self.mean_bank))
                var_acc = sum(self.var_bank) / float(len(self.var_bank))
                std_acc = torch.maximum(var_acc, torch.zeros_like(var_acc) + eps) ** 0.5
                x_uc = ((x - mean) / std) * std_acc + mean_acc
                x_c = x_uc.clone()
                if cfg and style_fidelity > 0:
                    x_c[uc_mask] = x[uc_mask]
                x = style_fidelity * x_c + (1.0 - style_fidelity) * x_uc
            self.mean_bank, self.var_bank = [], []
        return x

    if attn:
        blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
        blocks = sorted(blocks, key=lambda m: -m.norm1.normalized_shape[0])
        for i, m in enumerate(blocks):
            m.forward = types.MethodType(block_forward, m)
            m.bank, m.attn_weight = [], float(i) / float(len(blocks))
    if adain:
        mods = [unet.mid_block]
        unet.mid_block.gn_weight = 0
        for w, m in enumerate(unet.down_blocks):
            m.gn_weight = 1.0 - float(w) / float(len(unet.down_blocks))
            mods.append(m)
        for w, m in enumerate(unet.up_blocks):
            m.gn_weight = float(w) / float(len(unet.up_blocks))
            mods.append(m)
        for i, m in enumerate(mods):
            if i == 0:
                m.original_forward = m.forward
                m.forward = types.MethodType(mid_forward, m)
            elif isinstance(m, CrossAttnDownBlock2D | DownBlock2D):
                m.forward = types.MethodType(down_forward, m)
            elif isinstance(m, CrossAttnUpBlock2D | UpBlock2D):
                m.forward = types.MethodType(up_forward, m)
            m.mean_bank, m.var_bank = [], []
            m.gn_weight *= 2
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            model_in = sched.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
            noise = torch.randn(ref.shape, generator=torch.Generator().manual_seed(noise_seed + i))
            ref_xt = sched.add_noise(ref, noise, t.reshape(1))
            ref_xt = sched.scale_model_input(torch.cat([ref_xt] * 2) if cfg else ref_xt, t)
            state["mode"] = "write"
            unet(ref_xt, t, encoder_hidden_states=embeds, return_dict=False)
            state["mode"] = "read"
            pred = unet(model_in, t, encoder_hidden_states=embeds, return_dict=False)[0]
            if cfg:
                u, c = pred.chunk(2)
                pred = u + guidance * (c - u)
            latents = sched.step(pred, t, latents, return_dict=False)[0]
        image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="np")


CASES = [
    dict(mode="attn+adain", style_fidelity=0.5, weight=1.0, guidance=3.0),
    dict(mode="attn", style_fidelity=0.0, weight=0.5, guidance=3.0),
    dict(mode="adain", style_fidelity=1.0, weight=1.0, guidance=3.0),
    dict(mode="attn+adain", style_fidelity=0.5, weight=2.0, guidance=1.0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['mode']}-sf{c['style_fidelity']}-w{c['weight']}")
def test_equals_community_reference_pipeline(tiny, case):
    image = ref_image()
    mode, sf, w, g = case["mode"], case["style_fidelity"], case["weight"], case["guidance"]
    method = ReferenceOnlyMethod(mode=mode, style_fidelity=sf, reference_pass="both")
    pipe = Pipeline(tiny).attach(method, weight=w, reference=image)
    ours = pipe.generate(PROMPT, n=2, seed=4, steps=3, guidance=g).array
    pipe.detach()
    ref = _community(tailor.tiny_components(), image, n=2, seed=4, steps=3, guidance=g, attn="attn" in mode,
                     adain="adain" in mode, style_fidelity=sf, weight=w)  # fmt: skip
    plain = Pipeline(tiny).generate(PROMPT, n=2, seed=4, steps=3, guidance=g).array
    assert np.abs(ours - plain).max() > 1e-3, "the reference must change the images"
    assert np.abs(ours - ref).max() <= 1e-5


# --------------------------------------------------------------------- the bank itself
def test_single_row_pass_is_shared_and_close(tiny):
    """reference_pass=cond: one reference row per image, read by both guidance rows (the pass costs half)."""
    image = ref_image()
    calls, outs = [], []
    hook = tiny.unet.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    tail = tiny.unet.conv_out.register_forward_pre_hook(lambda m, args: outs.append(args[0].shape[0]))
    try:
        pipe = Pipeline(tiny).attach(ReferenceOnlyMethod(mode="attn+adain", reference_pass="cond"), reference=image)
        cond_out = pipe.generate(PROMPT, n=1, seed=0, steps=3, guidance=3.0).array
        pipe.detach()
    finally:
        hook.remove()
        tail.remove()
    assert calls == [1, 2] * 3  # reference pass (1 row), then the guided call (2 rows), per step
    assert outs == [1, 2, 2, 2]  # after the first pass, passes stop after their last write (no conv_out)
    pipe = Pipeline(tiny).attach(ReferenceOnlyMethod(mode="attn+adain", reference_pass="both"), reference=image)
    both_out = pipe.generate(PROMPT, n=1, seed=0, steps=3, guidance=3.0).array
    pipe.detach()
    assert 0 < np.abs(cond_out - both_out).max() < 0.1


@pytest.mark.parametrize("mode", ["attn", "attn+adain"])
def test_fused_rows_equal_a_separate_pass(tiny, mode):
    """reference_pass=fused runs the reference rows in front of the batch in the sampling call (one UNet call per
    step) and equals the separate single-row pass; a ControlNet's residuals get zero rows for them, as the separate
    pass gets none."""
    from tailor.methods.controlnet import SPEC as CN

    control = CN.example_inputs(tiny)
    outs, calls = {}, []
    hook = tiny.unet.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        for rp in ("fused", "cond"):
            cn = CN.method(**CN.test_options)
            pipe = Pipeline(tiny).attach(ReferenceOnlyMethod(mode=mode, reference_pass=rp), reference=ref_image())
            pipe.attach(cn, weight=0.7, **control)
            outs[rp] = pipe.generate(PROMPT, n=2, seed=0, steps=3, guidance=3.0).array
            pipe.detach()
    finally:
        hook.remove()
    assert calls[:3] == [6, 6, 6]  # 2 reference rows + [uncond x2, cond x2] in one call per step
    assert np.abs(outs["fused"] - outs["cond"]).max() <= 1e-5


def test_weight_zero_and_window_are_plain(tiny):
    plain = Pipeline(tiny).generate(PROMPT, n=1, seed=0, steps=3, guidance=3.0).array
    for kw in (dict(weight=0.0), dict(start=0.0, end=0.01)):
        pipe = Pipeline(tiny).attach(ReferenceOnlyMethod(mode="attn+adain"), reference=ref_image(), **kw)
        out = pipe.generate(PROMPT, n=1, seed=0, steps=3, guidance=3.0).array
        pipe.detach()
        assert np.abs(out - plain).max() == 0, kw


def test_chains_with_ip_adapter(tiny):
    """Both attach (attn1: the bank's processor, attn2: the decoupled one); detaching either keeps the other."""
    from tailor.core.attention import DecoupledAttnProcessor
    from tailor.methods.ip_adapter import IPAdapterMethod

    ipa = IPAdapterMethod(image_encoder="tiny")
    ref = ReferenceOnlyMethod(mode="attn+adain")
    pipe = Pipeline(tiny).attach(ipa, weight=0.5, ip_image=ref_image()).attach(ref, reference=ref_image())
    both = pipe.generate(PROMPT, n=2, seed=0, steps=2, guidance=3.0).array
    procs = tiny.unet.attn_processors
    assert any(isinstance(p, ReferenceAttnProcessor) for p in procs.values())
    assert any(isinstance(p, DecoupledAttnProcessor) for p in procs.values())
    pipe.detach(ref)
    assert not any(isinstance(p, ReferenceAttnProcessor) for p in tiny.unet.attn_processors.values())
    only_ip = pipe.generate(PROMPT, n=2, seed=0, steps=2, guidance=3.0).array
    pipe.detach()
    assert np.isfinite(both).all() and np.abs(both - only_ip).max() > 1e-4


def test_composes_with_hypernetwork_and_keeps_kwargs(tiny):
    """A hypernetwork wraps the bank's processors (and the bank wraps its); the wrapper shows the wrapped processor's
    signature, so diffusers passes the cross-attention kwargs it names."""
    import inspect

    from tailor.methods.hypernetwork import SPEC as HN

    ref = ReferenceOnlyMethod(mode="attn")
    hn = HN.method(**HN.test_options)
    pipe = Pipeline(tiny).attach(ref, reference=ref_image()).attach(hn, weight=1.0)
    out = pipe.generate(PROMPT, n=1, seed=0, steps=2, guidance=3.0).array
    proc = next(p for p in tiny.unet.attn_processors.values() if isinstance(p.base, ReferenceAttnProcessor))
    assert "encoder_hidden_states" in inspect.signature(proc.base.__call__).parameters
    pipe.detach()
    assert not any(isinstance(p, ReferenceAttnProcessor) for p in tiny.unet.attn_processors.values())
    assert np.isfinite(out).all()


def test_several_references_concatenate(tiny):
    bank = ReferenceBank(tiny.unet, reader="attn")
    bank.attach()
    try:
        x = torch.randn(4, 4, 16, 16)  # two references x two rows, reference-major
        hidden = torch.randn(2, 77, 64)
        run_reference_pass([bank], tiny.unet, x.repeat(1, 1, 1, 1), 500, hidden.repeat(2, 1, 1), groups=2)
        name = bank.layers[0]
        raw = bank.features[name]
        got = bank.feature(name, 4)
        n = raw.shape[1]
        assert got.shape == (4, 2 * n, raw.shape[2])
        assert torch.equal(got[0, :n], raw[0]) and torch.equal(got[0, n:], raw[2])  # row 0: ref 0 then ref 1
        assert torch.equal(got[2], got[0])  # CFG halves repeat in order
    finally:
        bank.detach()
    assert not any(isinstance(p, ReferenceAttnProcessor) for p in tiny.unet.attn_processors.values())
    with pytest.raises(RuntimeError, match="rows"):
        match_rows(torch.zeros(3, 2), 4)


def test_attn3_reader_adds_a_cross_attention(tiny):
    """The ``attn3`` reader: a zero-initialised added cross-attention leaves the output as it was; a non-zero one
    changes it (StoryGen's context module reads the bank this way)."""
    from diffusers.models.attention_processor import Attention

    unet = tiny.unet
    mods = {}
    for name in [n for n, _ in __import__("tailor").core.reference_bank.self_attention_layers(unet)]:
        attn1 = unet.get_submodule(name.removesuffix(".processor"))
        a3 = Attention(attn1.to_q.in_features, heads=attn1.heads, dim_head=attn1.to_q.out_features // attn1.heads)
        torch.nn.init.zeros_(a3.to_out[0].weight)
        torch.nn.init.zeros_(a3.to_out[0].bias)
        mods[name] = a3
    bank = ReferenceBank(unet, reader="attn3", attn3=mods)
    bank.attach()
    x, t, hidden = torch.randn(1, 4, 16, 16), 400, torch.randn(1, 77, 64)
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=hidden).sample
        run_reference_pass([bank], unet, torch.randn(1, 4, 16, 16), t, hidden)
        zero = unet(x, t, encoder_hidden_states=hidden).sample
        for m in mods.values():
            torch.nn.init.normal_(m.to_out[0].weight, std=0.1)
        some = unet(x, t, encoder_hidden_states=hidden).sample
    bank.detach()
    assert torch.allclose(zero, plain, atol=1e-6) and (some - plain).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="attn3"):
        ReferenceBank(unet, reader="attn3")


# --------------------------------------------------------------------- bad input and the surface
def test_other_size_reference_is_resized_said_once(tiny, caplog):
    pipe = Pipeline(tiny).attach(ReferenceOnlyMethod(), reference=ref_image(size=40))
    with caplog.at_level(logging.WARNING, logger="tailor"):
        pipe.generate(PROMPT, n=1, seed=0, steps=3, guidance=3.0)
        pipe.generate(PROMPT, n=1, seed=1, steps=2, guidance=3.0)
    said = [r.getMessage() for r in caplog.records if "resized" in r.getMessage()]
    assert len(said) == 1 and "40x40" in said[0] and "32x32" in said[0]
    pipe.detach()


def test_bad_inputs(tiny):
    pipe = Pipeline(tiny).attach(ReferenceOnlyMethod())
    with pytest.raises(InputError, match="reference image"):
        pipe.generate(PROMPT, n=1, steps=1)
    pipe.detach()
    pipe = Pipeline(tiny).attach(ReferenceOnlyMethod(), reference=42)
    with pytest.raises(InputError, match="reference must be"):
        pipe.generate(PROMPT, n=1, steps=1)
    pipe.detach()
    with pytest.raises(ConfigError, match="style_fidelity"):
        ReferenceOnlyMethod(style_fidelity=1.5)
    with pytest.raises(ConfigError, match="mode"):
        ReferenceOnlyMethod(mode="attn3")


def test_cannot_train(tmp_path):
    from tailor.core.training import TrainConfig, train

    cfg = TrainConfig(base="tiny", out=str(tmp_path / "run"), steps=1)
    with pytest.raises(ConfigError, match="training-free"):
        train(ReferenceOnlyMethod(), cfg, components=tailor.tiny_components())
    assert not (tmp_path / "run").exists()


def test_generate_cli(tmp_path, capsys):
    import json

    from tailor.cli import main

    ref = tmp_path / "ref.png"
    ref_image(size=40).save(ref)
    out = tmp_path / "out"
    code = main(["generate", "--base", "tiny", "-p", PROMPT, "-n", "1", "--steps", "2", "--out", str(out),
                 "--reference-only", f"{ref}:0.8", "--reference-only-mode", "attn+adain",
                 "--reference-only-style-fidelity", "0.3"])  # fmt: skip
    assert code == 0, capsys.readouterr()
    methods = json.loads((out / "generation.json").read_text())["settings"]["methods"]
    assert methods == [dict(method="reference_only", weight=0.8, start=0.0, end=1.0)]
    capsys.readouterr()
    code = main(["generate", "--base", "tiny", "-p", "x", "--out", str(tmp_path / "o2"),
                 "--reference-only-mode", "adain"])  # fmt: skip
    assert code == 2 and "without --reference-only" in capsys.readouterr().err
    code = main(["generate", "--base", "tiny", "-p", "x", "--out", str(tmp_path / "o3"),
                 "--reference-only", str(tmp_path / "missing.png")])  # fmt: skip
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_sdxl_base(tiny_xl):
    plain = Pipeline(tiny_xl).generate(PROMPT, n=1, seed=0, steps=2, guidance=3.0).array
    for rp in ("cond", "both"):
        pipe = Pipeline(tiny_xl).attach(ReferenceOnlyMethod(mode="attn+adain", reference_pass=rp),
                                        reference=[ref_image(), ref_image(seed=5)])  # fmt: skip
        out = pipe.generate(PROMPT, n=2, seed=0, steps=2, guidance=3.0).array
        pipe.detach()
        assert np.isfinite(out).all() and np.abs(out[:1] - plain).max() > 1e-4
