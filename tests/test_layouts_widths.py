"""Official IP-Adapter and InstantID files at the release's sizes (issue 19): random weights in the official key
layout with the shapes of ``ip-adapter_sd15`` (4 tokens, ViT-H projection 1024 -> 4 x 768), ``ip-adapter_sdxl``
(ViT-bigG projection 1280 -> 4 x 2048), ``ip-adapter-plus_sdxl_vit-h`` (Resampler 1280 wide, 20 heads, 4 layers, 16
queries over ViT-H's 1280-wide hidden states, out 2048) and InstantID's SDXL ``ip-adapter`` file (the same Resampler
over a 512-d face embedding) + ``ControlNetModel/``. tailor reads every size from the file and gives the images
diffusers' ``load_ip_adapter`` gives. The UNets are tiny-block bases at the real cross-attention widths (768 / 2048);
the image encoders are one layer deep at the real output widths. The SDXL cases (83M-parameter resamplers) are marked
slow (``pytest -m slow -o addopts="" tests/test_layouts_widths.py``); tests/test_resampler_widths.py checks the same
paths at tiny widths in the fast suite.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_ip_adapter import PROMPT, diffusers_run, ours, ref_image
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

import tailor
from tailor.core.pipeline import Pipeline
from tailor.core.samplers import make_scheduler
from tailor.methods.instantid import InstantIDMethod
from tailor.methods.ip_adapter import IPAdapterMethod


def official_ip(unet, embed: int, plus: bool, width: int = 1280, heads: int = 20, tokens: int = 16, seed: int = 0):
    """An official IP-Adapter state (flat ``image_proj.*`` / ``ip_adapter.<2n+1>.to_{k,v}_ip.weight``), random
    weights scaled by fan-in so the tokens stay of order one."""
    g = torch.Generator().manual_seed(seed)
    cad = unet.config.cross_attention_dim

    def lin(out, inp):
        return torch.randn(out, inp, generator=g) * inp**-0.5

    def norm(d):
        return 1 + 0.1 * torch.randn(d, generator=g), 0.1 * torch.randn(d, generator=g)

    if plus:
        inner = heads * 64
        proj = {"latents": torch.randn(1, tokens, width, generator=g) * width**-0.5,
                "proj_in.weight": lin(width, embed), "proj_in.bias": torch.zeros(width),
                "proj_out.weight": lin(cad, width), "proj_out.bias": torch.zeros(cad)}  # fmt: skip
        proj["norm_out.weight"], proj["norm_out.bias"] = norm(cad)
        for i in range(4):
            p = f"layers.{i}."
            for n in ("0.norm1", "0.norm2", "1.0"):
                proj[p + n + ".weight"], proj[p + n + ".bias"] = norm(width)
            proj.update({p + "0.to_q.weight": lin(inner, width), p + "0.to_kv.weight": lin(2 * inner, width),
                         p + "0.to_out.weight": lin(width, inner), p + "1.1.weight": lin(4 * width, width),
                         p + "1.3.weight": lin(width, 4 * width)})  # fmt: skip
    else:
        proj = {"proj.weight": lin(4 * cad, embed), "proj.bias": torch.zeros(4 * cad)}
        proj["norm.weight"], proj["norm.bias"] = norm(cad)
    state = {f"image_proj.{k}": v for k, v in proj.items()}
    cross = [n for n in unet.attn_processors if not n.endswith("attn1.processor")]
    for n, name in enumerate(cross):
        out = unet.get_submodule(name.removesuffix(".processor")).to_k.weight.shape[0]
        state[f"ip_adapter.{2 * n + 1}.to_k_ip.weight"] = lin(out, cad)
        state[f"ip_adapter.{2 * n + 1}.to_v_ip.weight"] = lin(out, cad)
    return state


def encoder(hidden: int, projection: int) -> CLIPVisionModelWithProjection:
    """A one-layer CLIP vision tower with the real output width (``hidden`` for Plus, ``projection`` for plain)."""
    cfg = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=hidden, intermediate_size=2 * hidden,
                           num_attention_heads=max(1, hidden // 64), num_hidden_layers=1,
                           projection_dim=projection)  # fmt: skip
    torch.manual_seed(7)
    return CLIPVisionModelWithProjection(cfg).eval()


@pytest.mark.parametrize(
    "name, cad, plus, hidden, projection",
    [("ip-adapter_sd15", 768, False, 64, 1024),
     pytest.param("ip-adapter_sdxl", 2048, False, 64, 1280, marks=pytest.mark.slow),
     pytest.param("ip-adapter-plus_sdxl_vit-h", 2048, True, 1280, 64, marks=pytest.mark.slow)],
)  # fmt: skip
def test_official_ip_adapter_at_release_sizes_matches_diffusers(name, cad, plus, hidden, projection, tmp_path):
    comps = tailor.tiny_components(sdxl=cad == 2048, cross_attention_dim=cad)
    embed = hidden if plus else projection  # Plus reads the penultimate hidden states, plain the projected embedding
    state = official_ip(comps.unet, embed, plus)
    folder = tmp_path / name
    folder.mkdir()
    save_file(state, str(folder / "ip_adapter.safetensors"))
    encoder(hidden, projection).save_pretrained(folder / "image_encoder")
    m = IPAdapterMethod.from_file(folder / "ip_adapter.safetensors", image_encoder=str(folder / "image_encoder"))
    c = m.config
    if plus:
        assert (c.plus, c.num_tokens, c.resampler_width, c.resampler_heads, c.resampler_depth) == (
            True,
            16,
            1280,
            20,
            4,
        )
    else:
        assert (c.plus, c.num_tokens) == (False, 4)
    img = ref_image(0)
    mine = ours(comps, [(m, img, 0.8)])
    theirs = diffusers_run(comps, [folder], img, 0.8)
    print(f"{name}: max |tailor - diffusers| {np.abs(mine - theirs).max():.2e}")
    assert np.abs(mine - theirs).max() <= 1e-4
    assert np.abs(mine - Pipeline(comps).generate(PROMPT, n=1, seed=3, steps=3, guidance=5.0).array).max() > 1e-3
    m.patch(comps)  # saved back in the official names and shapes
    saved = m.state_dict()
    m.unpatch()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in state)


@pytest.mark.slow
def test_official_instantid_sdxl_folder_at_release_sizes_matches_diffusers(tmp_path):
    comps = tailor.tiny_components(sdxl=True, cross_attention_dim=2048)
    # an IdentityNet for the folder (a narrow resampler of its own: only the ControlNet is kept)
    seed_method = InstantIDMethod(num_tokens=4, embed_dim=512, resampler_width=64, resampler_depth=1)
    seed_method.patch(comps)
    seed_method.save(tmp_path / "tmp")
    seed_method.unpatch()
    folder = tmp_path / "InstantID"
    folder.mkdir()
    (tmp_path / "tmp" / "ControlNetModel").rename(folder / "ControlNetModel")
    state = official_ip(comps.unet, 512, plus=True, seed=1)
    save_file(state, str(folder / "ip-adapter.safetensors"))  # the .bin dict form: tests/test_instantid.py
    m = tailor.load(folder / "ip-adapter.safetensors")
    c = m.config
    assert isinstance(m, InstantIDMethod)
    assert (c.embed_dim, c.num_tokens, c.resampler_width, c.resampler_heads, c.resampler_depth) == (
        512,
        16,
        1280,
        20,
        4,
    )
    m.config = c.replace(controlnet_scale=0.0, ip_scale=1.0)  # IdentityNet off: the ID adapter against diffusers
    emb = torch.randn(1, 512, generator=torch.Generator().manual_seed(1))
    pipe = Pipeline(comps).attach(m, weight=0.7, face=emb)
    mine = pipe.generate(PROMPT, n=1, seed=3, steps=3, guidance=5.0).array
    pipe.detach()
    dp = comps.diffusers_pipeline()
    dp.set_progress_bar_config(disable=True)
    dp.scheduler = make_scheduler("ddim", comps.scheduler)
    dp.load_ip_adapter(str(folder), subfolder="", weight_name="ip-adapter.safetensors", image_encoder_folder=None)
    dp.set_ip_adapter_scale(0.7)
    embeds = torch.cat([torch.zeros_like(emb), emb])[:, None, None]
    theirs = dp(PROMPT, generator=[torch.Generator().manual_seed(3)], num_inference_steps=3, guidance_scale=5.0,
                ip_adapter_image_embeds=[embeds], output_type="np").images  # fmt: skip
    dp.unload_ip_adapter()
    print(f"instantid sdxl: max |tailor - diffusers| {np.abs(mine - theirs).max():.2e}")
    assert np.abs(mine - theirs).max() <= 1e-4
    assert np.abs(mine - Pipeline(comps).generate(PROMPT, n=1, seed=3, steps=3, guidance=5.0).array).max() > 1e-3
