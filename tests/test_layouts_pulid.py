"""PuLID's release layouts (issue 19), read: ``pulid_v1.bin`` (MLP ``IDEncoder``) and ``pulid_v1.1.safetensors``
(``IDFormer``), ``id_adapter.*`` + ``id_adapter_attn_layers.<j>.id_to_{k,v}.weight``, random weights at the release's
widths (ID condition 1280, EVA-CLIP ViT features 1024, tokens 2048, IDFormer 1024 wide with heads of 64) on tiny-xl at
SDXL's cross-attention width; fewer ViT features (2 instead of 5) and IDFormer layers per feature (1 instead of 2).

The references are written here from the official code (``pulid/encoders.py``, ``pulid/encoders_transformer.py``,
``pulid/attention_processor.py`` ``IDAttnProcessor``, ``pulid/pipeline.py`` ``hack_unet_attn_layers``) as functions
of the state dict: tailor's ID tokens equal them, and tailor's images equal diffusers' SDXL pipeline running the
official attention processor (with the release's ``NUM_ZERO`` zero tokens).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import tailor
from tailor.core.pipeline import Pipeline
from tailor.core.samplers import make_scheduler
from tailor.errors import ConfigError, FormatError, InputError
from tailor.methods.pulid import PuLIDMethod

PROMPT = "a photo of a man"
N_VIT, TOKENS = 2, 17  # ViT features and their length (the release: 5 and 577)


def xl2048():
    return tailor.tiny_components(sdxl=True, cross_attention_dim=2048)


def rnd_mlp(g, out: dict, name: str, sizes) -> None:
    d_in, h1, h2, d_out = sizes
    for i, (a, b) in zip((0, 3, 6), ((d_in, h1), (h1, h2), (h2, d_out))):
        out[f"{name}.{i}.weight"] = torch.randn(b, a, generator=g) * a**-0.5
        out[f"{name}.{i}.bias"] = 0.1 * torch.randn(b, generator=g)
    for i, width in ((1, h1), (4, h2)):
        out[f"{name}.{i}.weight"] = 1 + 0.1 * torch.randn(width, generator=g)
        out[f"{name}.{i}.bias"] = 0.1 * torch.randn(width, generator=g)


def attn_layers(g, unet) -> dict[str, torch.Tensor]:
    """``hack_unet_attn_layers``: an IDAttnProcessor (id_to_k / id_to_v) at every processor not named attn1."""
    out = {}
    for j, name in enumerate(unet.attn_processors):
        if name.endswith("attn1.processor"):
            continue
        attn = unet.get_submodule(name.removesuffix(".processor"))
        hidden, cad = attn.to_k.out_features, unet.config.cross_attention_dim
        out[f"id_adapter_attn_layers.{j}.id_to_k.weight"] = torch.randn(hidden, cad, generator=g) * cad**-0.5
        out[f"id_adapter_attn_layers.{j}.id_to_v.weight"] = torch.randn(hidden, cad, generator=g) * cad**-0.5
    return out


def v1_state(unet, seed=0, hidden=1024) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    enc: dict[str, torch.Tensor] = {}
    rnd_mlp(g, enc, "body", (1280, hidden, hidden, 5 * 2048))  # h1 = min(2048 * 5 // 4, 1024), h2 likewise
    for i in range(N_VIT):
        rnd_mlp(g, enc, f"mapping_{i}", (1024, hidden, hidden, 2048))
        rnd_mlp(g, enc, f"mapping_patch_{i}", (1024, hidden, hidden, 2048))
    return {**{f"id_adapter.{k}": v for k, v in enc.items()}, **attn_layers(g, unet)}


def v11_state(unet, seed=0, per_vit=1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dim, ff = 1024, 4096
    enc = {"latents": torch.randn(1, 32, dim, generator=g) * dim**-0.5,
           "proj_out": torch.randn(dim, 2048, generator=g) * dim**-0.5}  # fmt: skip
    for layer in range(N_VIT * per_vit):
        p = f"layers.{layer}."
        for norm in ("0.norm1", "0.norm2", "1.0"):
            enc[p + norm + ".weight"] = 1 + 0.1 * torch.randn(dim, generator=g)
            enc[p + norm + ".bias"] = 0.1 * torch.randn(dim, generator=g)
        for name, shape in (("0.to_q", (dim, dim)), ("0.to_kv", (2 * dim, dim)), ("0.to_out", (dim, dim)),
                            ("1.1", (ff, dim)), ("1.3", (dim, ff))):  # fmt: skip
            enc[p + name + ".weight"] = torch.randn(*shape, generator=g) * shape[1] ** -0.5
    for i in range(N_VIT):
        rnd_mlp(g, enc, f"mapping_{i}", (1024, 1024, 1024, dim))
    rnd_mlp(g, enc, "id_embedding_mapping", (1280, 1024, 1024, 5 * dim))
    return {**{f"id_adapter.{k}": v for k, v in enc.items()}, **attn_layers(g, unet)}


def features(seed=1, batch=1):
    g = torch.Generator().manual_seed(seed)
    cond = torch.cat([torch.randn(batch, 512, generator=g), F.normalize(torch.randn(batch, 768, generator=g))], -1)
    return {"id_cond": cond, "vit_hidden": [torch.randn(batch, TOKENS, 1024, generator=g) for _ in range(N_VIT)]}


# --------------------------------------------------------------------- the official modules, from their formulas
def ref_mlp(sd, name, x):
    w = {k[len(name) + 1 :]: v for k, v in sd.items() if k.startswith(name + ".")}
    x = F.leaky_relu(F.layer_norm(F.linear(x, w["0.weight"], w["0.bias"]), (w["1.weight"].shape[0],), w["1.weight"],
                                  w["1.bias"]))  # fmt: skip
    x = F.leaky_relu(F.layer_norm(F.linear(x, w["3.weight"], w["3.bias"]), (w["4.weight"].shape[0],), w["4.weight"],
                                  w["4.bias"]))  # fmt: skip
    return F.linear(x, w["6.weight"], w["6.bias"])


def ref_v1(sd, cond, hidden):
    """``IDEncoder.forward``: body -> (-1, num_token, context_dim); + one token per ViT layer."""
    x = ref_mlp(sd, "id_adapter.body", cond).reshape(-1, 5, 2048)
    per = [ref_mlp(sd, f"id_adapter.mapping_{i}", h[:, :1])
           + ref_mlp(sd, f"id_adapter.mapping_patch_{i}", h[:, 1:]).mean(dim=1, keepdim=True)
           for i, h in enumerate(hidden)]  # fmt: skip
    return torch.cat([x, *per], dim=1)


def ref_v11(sd, cond, hidden, per_vit=1, heads=16):
    """``IDFormer.forward`` with ``PerceiverAttention`` (scale split over q and k, softmax in float32)."""
    e = {k[len("id_adapter.") :]: v for k, v in sd.items() if k.startswith("id_adapter.")}
    latents = e["latents"].repeat(cond.shape[0], 1, 1)
    x = ref_mlp(sd, "id_adapter.id_embedding_mapping", cond).reshape(-1, 5, 1024)
    latents = torch.cat([latents, x], dim=1)
    for i in range(N_VIT):
        ctx = torch.cat([x, ref_mlp(sd, f"id_adapter.mapping_{i}", hidden[i])], dim=1)
        for layer in range(i * per_vit, (i + 1) * per_vit):
            p = f"layers.{layer}."
            xn = F.layer_norm(ctx, (1024,), e[p + "0.norm1.weight"], e[p + "0.norm1.bias"])
            ln = F.layer_norm(latents, (1024,), e[p + "0.norm2.weight"], e[p + "0.norm2.bias"])
            b, n, _ = ln.shape
            q = ln @ e[p + "0.to_q.weight"].T
            k, v = (torch.cat([xn, ln], dim=-2) @ e[p + "0.to_kv.weight"].T).chunk(2, dim=-1)
            q, k, v = (t.view(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
            scale = 1 / (64**0.5) ** 0.5
            w = torch.softmax(((q * scale) @ (k * scale).transpose(-2, -1)).float(), dim=-1)
            out = (w @ v).permute(0, 2, 1, 3).reshape(b, n, -1) @ e[p + "0.to_out.weight"].T
            latents = out + latents
            y = F.layer_norm(latents, (1024,), e[p + "1.0.weight"], e[p + "1.0.bias"])
            latents = F.gelu(y @ e[p + "1.1.weight"].T) @ e[p + "1.3.weight"].T + latents
    return latents[:, :32] @ e["proj_out"]


class OfficialIDAttnProcessor:
    """``IDAttnProcessor.__call__`` (ORTHO off): text attention + id_scale x attention to id_to_k/v of the ID
    embedding with ``num_zero`` zero tokens appended, through the layer's own score function."""

    def __init__(self, k, v, num_zero):
        self.k, self.v, self.num_zero = k, v, num_zero

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 id_embedding=None, id_scale=1.0):  # fmt: skip
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        out = attn.batch_to_head_dim(torch.bmm(attn.get_attention_scores(query, key, None), value))
        ids = id_embedding
        if self.num_zero:
            ids = torch.cat([ids, ids.new_zeros(ids.shape[0], self.num_zero, ids.shape[-1])], dim=1)
        id_key = attn.head_to_batch_dim(F.linear(ids, self.k))
        id_value = attn.head_to_batch_dim(F.linear(ids, self.v))
        id_out = attn.batch_to_head_dim(torch.bmm(attn.get_attention_scores(query, id_key, None), id_value))
        return attn.to_out[1](attn.to_out[0](out + id_scale * id_out)) / attn.rescale_output_factor


def official_image(comps, sd, tokens, num_zero, id_scale):
    from diffusers.models.attention_processor import AttnProcessor

    pipe = comps.diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("ddim", comps.scheduler)
    procs, before = {}, dict(pipe.unet.attn_processors)
    for j, name in enumerate(pipe.unet.attn_processors):
        if name.endswith("attn1.processor"):
            procs[name] = AttnProcessor()
        else:
            k, v = (sd[f"id_adapter_attn_layers.{j}.id_to_{kind}.weight"] for kind in ("k", "v"))
            procs[name] = OfficialIDAttnProcessor(k, v, num_zero)
    pipe.unet.set_attn_processor(procs)
    kwargs = {"id_embedding": tokens, "id_scale": id_scale}
    images = pipe(PROMPT, generator=[torch.Generator().manual_seed(3)], num_inference_steps=2, guidance_scale=3.0,
                  cross_attention_kwargs=kwargs, output_type="np").images  # fmt: skip
    pipe.unet.set_attn_processor(before)
    return images


# --------------------------------------------------------------------- tests
@pytest.mark.parametrize("which", [pytest.param("v1", marks=pytest.mark.slow), "v1.1"])
def test_release_file_gives_the_official_tokens_and_images(which, tmp_path):
    comps = xl2048()
    sd = v1_state(comps.unet) if which == "v1" else v11_state(comps.unet)
    if which == "v1":
        path = tmp_path / "pulid_v1.bin"
        torch.save(sd, path)
    else:
        path = tmp_path / "pulid_v1.1.safetensors"
        save_file(sd, str(path))
    m = tailor.load(path)
    assert isinstance(m, PuLIDMethod) and m.config.release == which
    num_zero = 8 if which == "v1.1" else 0
    m.config = m.config.replace(num_zero=num_zero)
    feats = features()
    pipe = Pipeline(comps).attach(m, weight=0.8, id_features=feats)
    ours = pipe.generate(PROMPT, n=1, seed=3, steps=2, guidance=3.0).array
    ref = ref_v1 if which == "v1" else ref_v11
    zeros = {"id_cond": torch.zeros_like(feats["id_cond"]), "vit_hidden": [torch.zeros_like(h) for h in
                                                                            feats["vit_hidden"]]}  # fmt: skip
    with torch.no_grad():
        want = torch.cat(
            [ref(sd, zeros["id_cond"], zeros["vit_hidden"]), ref(sd, feats["id_cond"], feats["vit_hidden"])]
        )
    got = m.branch.tokens[:, : want.shape[1]]
    assert got.shape == want.shape == (2, 5 + N_VIT if which == "v1" else 32, 2048)
    err = float((got - want).abs().max())
    print(f"pulid {which}: max |tailor - official| token difference {err:.2e} (max |token| {want.abs().max():.2f})")
    assert err <= 2e-5 * want.abs().max()
    assert m.branch.tokens.shape[1] == want.shape[1] + num_zero and not m.branch.tokens[:, want.shape[1] :].any()
    # the state round-trips bit-exact (the release's keys)
    back = m.state_dict()
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    pipe.detach()
    theirs = official_image(comps, sd, want, num_zero, id_scale=0.8)
    print(
        f"pulid {which}: max image difference to diffusers + the official processor {np.abs(ours - theirs).max():.2e}"
    )
    assert np.abs(ours - theirs).max() <= 1e-4
    assert np.abs(ours - Pipeline(comps).generate(PROMPT, n=1, seed=3, steps=2, guidance=3.0).array).max() > 1e-3


def test_saved_release_model_reloads_and_bad_inputs_are_refused(tmp_path):
    comps = xl2048()
    sd = v1_state(comps.unet, seed=2, hidden=32)  # narrow MLPs: only the file handling is tested here
    torch.save(sd, tmp_path / "pulid_v1.bin")
    m = tailor.load(tmp_path / "pulid_v1.bin")
    m.patch(comps)
    path = m.save(tmp_path / "out")
    m.unpatch()
    again = tailor.load(path)
    assert again.config.release == "v1"
    again.patch(comps)
    assert all(torch.equal(again.state_dict()[k], sd[k]) for k in sd)
    again.unpatch()
    pipe = Pipeline(comps).attach(tailor.load(path), face="face.png")
    with pytest.raises(InputError, match="id_features"):
        pipe.generate(PROMPT, n=1, seed=0, steps=1)
    pipe.detach()
    bad = features()
    bad["vit_hidden"] = bad["vit_hidden"][:1]
    pipe = Pipeline(comps).attach(tailor.load(path), id_features=bad)
    with pytest.raises(InputError, match="2 ViT hidden states"):
        pipe.generate(PROMPT, n=1, seed=0, steps=1)
    pipe.detach()
    with pytest.raises(FormatError, match="SDXL"):
        tailor.load(path).patch(tailor.tiny_components(sdxl=True))
    with pytest.raises(ConfigError, match="release file"):
        PuLIDMethod(release="v1").patch(tailor.tiny_components(sdxl=True))
    with pytest.raises(ConfigError, match="release must be"):
        PuLIDMethod(release="v2")
