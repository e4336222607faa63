"""The resampler's own width (issue 19): official IP-Adapter-Plus and InstantID files whose resampler is narrower or
wider than the base's cross-attention (SDXL: 1280 wide, 20 heads under a 2048 cross-attention) load in tailor, give
diffusers' ``load_ip_adapter`` images, and tailor trains, saves and reloads such a resampler — on the tiny SDXL base,
with files built here with random weights in the official key layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_instantid import KW, PROMPT, run
from test_ip_adapter import diffusers_run, ours, ref_image

import tailor
from tailor.core.components import tiny_image_encoder
from tailor.core.pipeline import Pipeline
from tailor.core.resampler import resampler_sizes
from tailor.core.samplers import make_scheduler
from tailor.errors import ConfigError, FormatError
from tailor.methods.instantid import InstantIDMethod
from tailor.methods.ip_adapter import IPAdapterMethod


def official_plus(unet, embed: int, width: int, heads: int, tokens: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """An IP-Adapter-Plus state dict in the original repository's flat key layout (``image_proj.*`` +
    ``ip_adapter.<2n+1>.to_{k,v}_ip.weight``), random weights, the resampler ``width`` wide with ``heads`` of 64."""
    g = torch.Generator().manual_seed(seed)
    cad, inner = unet.config.cross_attention_dim, heads * 64

    def rnd(*shape, scale=0.2):
        return (scale * torch.randn(*shape, generator=g)).contiguous()

    proj = {"latents": rnd(1, tokens, width, scale=width**-0.5), "proj_in.weight": rnd(width, embed),
            "proj_in.bias": rnd(width), "proj_out.weight": rnd(cad, width), "proj_out.bias": rnd(cad),
            "norm_out.weight": 1 + rnd(cad), "norm_out.bias": rnd(cad)}  # fmt: skip
    for i in range(4):
        p = f"layers.{i}."
        for norm in ("0.norm1", "0.norm2", "1.0"):
            proj[p + norm + ".weight"], proj[p + norm + ".bias"] = 1 + rnd(width), rnd(width)
        proj.update({p + "0.to_q.weight": rnd(inner, width), p + "0.to_kv.weight": rnd(2 * inner, width),
                     p + "0.to_out.weight": rnd(width, inner), p + "1.1.weight": rnd(4 * width, width),
                     p + "1.3.weight": rnd(width, 4 * width)})  # fmt: skip
    state = {f"image_proj.{k}": v for k, v in proj.items()}
    cross = [n for n in unet.attn_processors if not n.endswith("attn1.processor")]
    for n, name in enumerate(cross):
        out = unet.get_submodule(name.removesuffix(".processor")).to_k.weight.shape[0]
        state[f"ip_adapter.{2 * n + 1}.to_k_ip.weight"] = rnd(out, cad)
        state[f"ip_adapter.{2 * n + 1}.to_v_ip.weight"] = rnd(out, cad)
    return state


@pytest.mark.parametrize("width", [32, 128])
def test_official_sdxl_plus_file_of_another_width_matches_diffusers(width, tmp_path):
    comps = tailor.tiny_components(sdxl=True)
    assert width != comps.cross_attention_dim  # the point: 1280 vs 2048 at real size
    heads = max(1, width // 64)
    enc = tiny_image_encoder()
    state = official_plus(comps.unet, enc.config.hidden_size, width, heads, tokens=16)
    folder = tmp_path / "ipa"
    folder.mkdir()
    save_file(state, str(folder / "ip_adapter.safetensors"))
    enc.save_pretrained(folder / "image_encoder")
    m = IPAdapterMethod.from_file(folder / "ip_adapter.safetensors", image_encoder="tiny")
    c = m.config
    sizes = (c.plus, c.num_tokens, c.resampler_width, c.resampler_heads, c.resampler_depth)
    assert sizes == (True, 16, width, heads, 4)
    img = ref_image(0)
    mine = ours(comps, [(m, img, 0.8)])
    theirs = diffusers_run(comps, [folder], img, 0.8)
    assert np.abs(mine - theirs).max() <= 1e-4
    assert np.abs(mine - Pipeline(comps).generate(PROMPT, n=1, seed=3, steps=3, guidance=5.0).array).max() > 1e-3
    m.patch(comps)  # tailor's own save keeps the official shapes and names
    saved = m.state_dict()
    m.unpatch()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in state)


def test_official_instantid_file_of_another_width_matches_diffusers(tmp_path):
    from diffusers import ControlNetModel

    comps = tailor.tiny_components(sdxl=True)
    seed_method = InstantIDMethod(num_tokens=4)  # an IdentityNet for the folder, and the face embedding width
    seed_method.patch(comps)
    embed = seed_method.embed_width
    folder = tmp_path / "release"
    seed_method.save(tmp_path / "tmp")
    seed_method.unpatch()
    folder.mkdir()
    (tmp_path / "tmp" / "ControlNetModel").rename(folder / "ControlNetModel")
    state = official_plus(comps.unet, embed, width=128, heads=2, tokens=16, seed=1)
    save_file(state, str(folder / "ip-adapter.safetensors"))
    m = InstantIDMethod.from_file(folder)
    c = m.config
    sizes = (c.embed_dim, c.num_tokens, c.resampler_width, c.resampler_heads, c.resampler_depth)
    assert sizes == (embed, 16, 128, 2, 4)
    m.config = c.replace(controlnet_scale=0.0, ip_scale=1.0)  # IdentityNet off, as in test_instantid
    emb = torch.randn(1, embed, generator=torch.Generator().manual_seed(1))
    mine = run(comps, m, weight=0.7, face=emb)
    pipe = comps.diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("ddim", comps.scheduler)
    pipe.load_ip_adapter(str(folder), subfolder="", weight_name="ip-adapter.safetensors", image_encoder_folder=None)
    pipe.set_ip_adapter_scale(0.7)
    embeds = torch.cat([torch.zeros_like(emb), emb])[:, None, None]
    theirs = pipe(PROMPT, generator=[torch.Generator().manual_seed(3)], num_inference_steps=3, guidance_scale=5.0,
                  ip_adapter_image_embeds=[embeds], output_type="np").images  # fmt: skip
    pipe.unload_ip_adapter()
    assert np.abs(mine - theirs).max() <= 1e-4
    assert np.abs(mine - Pipeline(comps).generate(PROMPT, **KW).array).max() > 1e-3
    assert isinstance(ControlNetModel.from_pretrained(folder / "ControlNetModel"), ControlNetModel)


@pytest.mark.parametrize("kind", ["ip_adapter", "instantid", "pulid"])
def test_tailor_adapter_of_another_width_saves_and_reloads_exactly(kind, tmp_path):
    comps = tailor.tiny_components(sdxl=True)
    opts = {"resampler_width": 128, "resampler_heads": 3, "resampler_depth": 2, "num_tokens": 4}
    if kind == "ip_adapter":
        m = IPAdapterMethod(image_encoder="tiny", plus=True, **opts)
    else:
        m = tailor.get_spec(kind).method(**opts)
    m.patch(comps)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in list(m.proj.parameters()) + list(m.branch.parameters()):
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    assert m.proj.latents.shape == (1, 4, 128) and m.proj.proj_out.weight.shape == (comps.cross_attention_dim, 128)
    path = m.save(tmp_path)
    state = m.state_dict()
    m.unpatch()
    sizes = resampler_sizes({k[len("image_proj.") :]: v for k, v in state.items() if k.startswith("image_proj.")})
    assert (sizes["width"], sizes["heads"], sizes["depth"], sizes["num_tokens"]) == (128, 3, 2, 4)
    again = tailor.load(path) if kind != "ip_adapter" else IPAdapterMethod.from_file(path, image_encoder="tiny")
    again.patch(tailor.tiny_components(sdxl=True))
    reloaded = again.state_dict()
    assert reloaded.keys() == state.keys() and all(torch.equal(reloaded[k], state[k]) for k in state)


def test_default_width_is_the_cross_attention_width_and_bad_options_are_refused():
    comps = tailor.tiny_components(sdxl=True)
    m = IPAdapterMethod(image_encoder="tiny", plus=True)
    m.patch(comps)
    assert m.proj.latents.shape[-1] == comps.cross_attention_dim  # files trained before the option: same shapes
    m.unpatch()
    with pytest.raises(ConfigError, match="resampler_width"):
        IPAdapterMethod(plus=True, resampler_width=-1)
    with pytest.raises(ConfigError, match="resampler_heads"):
        InstantIDMethod(resampler_heads=-2)
    state = official_plus(comps.unet, 64, width=32, heads=1, tokens=4)
    proj = {k[len("image_proj.") :]: v for k, v in state.items() if k.startswith("image_proj.")}
    proj["layers.0.0.to_q.weight"] = proj["layers.0.0.to_q.weight"][:40]
    with pytest.raises(FormatError, match="not a multiple of 64"):
        resampler_sizes(proj)
    del proj["latents"]
    with pytest.raises(FormatError, match="latents"):
        resampler_sizes(proj)
