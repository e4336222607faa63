"""PhotoMaker's v1 SDXL release layout (issue 19), read and written: a random-weight file with the release's keys and
shapes (``photomaker/model.py``: CLIP ViT-L/14 tower 1024 wide, ``visual_projection`` [768, 1024],
``visual_projection_2`` [1280, 1024], ``fuse_module`` at 2048; the LoRA in diffusers' attention-processor names) at
SDXL's text widths (768 + 1280), the tower one layer deep instead of 24.

Checked: the stacked ID embedding tailor feeds the UNet equals the official ``PhotoMakerIDEncoder`` written out here
from its formulas (on transformers' CLIP vision model); the LoRA gives the image diffusers' ``load_lora_weights`` gives
with those embeddings (the official pipeline's path); read -> write is bit-exact; a tailor-layout model written in the
release layout gives the same tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

import tailor
import tailor.world as world
from tailor.cli import main
from tailor.core.pipeline import Pipeline
from tailor.core.samplers import make_scheduler
from tailor.errors import ConfigError, FormatError
from tailor.methods.photomaker import PhotoMakerMethod, formats
from tailor.methods.photomaker.modules import id_prompt

PROMPT = "a photo of a man img"
VISION = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=1, patch_size=14,
              image_size=224)  # fmt: skip
RANK = 4


def sdxl_real_text():
    """tiny-xl at SDXL's cross-attention width: text encoders 768 (CLIP-L) + 1280 (bigG), concatenated 2048."""
    comps = tailor.tiny_components(sdxl=True, cross_attention_dim=2048)
    assert (comps.text_encoder.config.hidden_size, comps.text_encoder_2.config.hidden_size) == (768, 1280)
    comps.text_encoder_2.text_model.eos_token_id = comps.tokenizer_2.eos_token_id  # pool at the real EOS
    return comps


def official_state(unet, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """``photomaker-v1.bin``'s two dicts with random weights, in the release's names and shapes."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.05):
        return scale * torch.randn(*shape, generator=g)

    with torch.device("meta"):  # names and shapes only
        tower = CLIPVisionModel(CLIPVisionConfig(**VISION))
    ide = {}
    for k, v in tower.state_dict().items():
        norm = "norm" in k and k.endswith(".weight")
        ide["vision_model." + k.removeprefix("vision_model.")] = (1 if norm else 0) + rnd(*v.shape)
    ide["visual_projection.weight"] = rnd(768, 1024)
    ide["visual_projection_2.weight"] = rnd(1280, 1024)
    for mlp, d_in in (("mlp1", 4096), ("mlp2", 2048)):
        ide[f"fuse_module.{mlp}.layernorm.weight"] = 1 + rnd(d_in)
        ide[f"fuse_module.{mlp}.layernorm.bias"] = rnd(d_in)
        ide[f"fuse_module.{mlp}.fc1.weight"], ide[f"fuse_module.{mlp}.fc1.bias"] = rnd(2048, d_in), rnd(2048)
        ide[f"fuse_module.{mlp}.fc2.weight"], ide[f"fuse_module.{mlp}.fc2.bias"] = rnd(2048, 2048), rnd(2048)
    ide["fuse_module.layer_norm.weight"], ide["fuse_module.layer_norm.bias"] = 1 + rnd(2048), rnd(2048)
    lora = {}
    for name, mod in unet.named_modules():
        if name.endswith(("attn1", "attn2")):
            for proj, layer in (("to_q", mod.to_q), ("to_k", mod.to_k), ("to_v", mod.to_v), ("to_out", mod.to_out[0])):
                p = f"unet.{name}.processor.{proj}_lora"
                lora[f"{p}.down.weight"] = rnd(RANK, layer.in_features, scale=0.2)
                lora[f"{p}.up.weight"] = rnd(layer.out_features, RANK, scale=0.2)
    return {"id_encoder": ide, "lora_weights": lora}


def flat(parts) -> dict[str, torch.Tensor]:
    return {f"{p}.{k}": v.contiguous() for p, d in parts.items() for k, v in d.items()}


def refs(n=2):
    return [world.render_face(s, identity=901).pil() for s in range(n)]


def official_embeds(ide, comps, images, prompt=PROMPT):
    """The official ``PhotoMakerIDEncoder`` forward (``photomaker/model.py``) written out: the tower's pooled output
    -> both projections, concatenated -> ``fuse_fn`` on the class-token rows of the SDXL prompt embeddings."""
    tower = CLIPVisionModel(CLIPVisionConfig(**VISION)).eval()
    tower.load_state_dict({k[len("vision_model.") :]: v for k, v in ide.items() if k.startswith("vision_model.")})
    px = CLIPImageProcessor()(images, return_tensors="pt").pixel_values  # the release's id_image_processor
    rows, pos = [], None
    for tok, te in ((comps.tokenizer, comps.text_encoder), (comps.tokenizer_2, comps.text_encoder_2)):
        ids, pos, _ = id_prompt(tok, prompt, "img", len(images))
        with torch.no_grad():
            rows.append(te(torch.tensor([ids]), output_hidden_states=True).hidden_states[-2][0])
    prompt_embeds = torch.cat(rows, dim=-1)
    with torch.no_grad():
        shared = tower(pixel_values=px)[1]
        vp, vp2 = ide["visual_projection.weight"], ide["visual_projection_2.weight"]
        id_embeds = torch.cat([shared @ vp.T, shared @ vp2.T], dim=-1)

        def mlp(name, x, residual):
            w = {k.split(f"fuse_module.{name}.")[1]: v for k, v in ide.items() if k.startswith(f"fuse_module.{name}.")}
            y = F.layer_norm(x, (x.shape[-1],), w["layernorm.weight"], w["layernorm.bias"])
            y = F.linear(F.gelu(F.linear(y, w["fc1.weight"], w["fc1.bias"])), w["fc2.weight"], w["fc2.bias"])
            return y + x if residual else y

        cls = prompt_embeds[pos]
        x = mlp("mlp1", torch.cat([cls, id_embeds], dim=-1), False) + cls
        x = F.layer_norm(mlp("mlp2", x, True), (2048,), ide["fuse_module.layer_norm.weight"],
                         ide["fuse_module.layer_norm.bias"])  # fmt: skip
    out = prompt_embeds.clone()
    out[pos] = x
    return out


def capture(comps):
    seen = []
    handle = comps.unet.register_forward_pre_hook(
        lambda mod, args, kw: seen.append((kw["encoder_hidden_states"].clone(), kw["added_cond_kwargs"])),
        with_kwargs=True,
    )
    return seen, handle


def test_release_file_loads_gives_the_official_embedding_and_lora_and_round_trips(tmp_path):
    comps = sdxl_real_text()
    parts = official_state(comps.unet)
    state = flat(parts)
    save_file(state, str(tmp_path / "photomaker-v1.safetensors"))
    few = {p: dict(list(d.items())[:3]) for p, d in parts.items()}
    torch.save(few, tmp_path / "photomaker-v1.bin")  # the release's own form: the nested dict
    from_bin = formats.read(tmp_path / "photomaker-v1.bin")
    assert from_bin.keys() == flat(few).keys() and all(torch.equal(from_bin[k], state[k]) for k in from_bin)
    assert PhotoMakerMethod.sniff(tmp_path / "photomaker-v1.bin", {})
    m = tailor.load(tmp_path / "photomaker-v1.safetensors")
    assert isinstance(m, PhotoMakerMethod) and m.config.image_encoder == "file" and m.config.rank == RANK
    m.config = m.config.replace(merge_start=0.0)  # the ID embedding at every step
    images = refs(2)
    pipe = Pipeline(comps).attach(m, id_images=images)
    seen, handle = capture(comps)
    ours = pipe.generate(PROMPT, n=1, seed=0, steps=2, guidance=3.0).array
    handle.remove()
    want = official_embeds(parts["id_encoder"], comps, images)
    print(f"photomaker: max |tailor - official| prompt embedding {(seen[0][0][1] - want).abs().max():.2e}")
    assert (seen[0][0][1] - want).abs().max() <= 1e-5
    # read -> write is bit-exact: the state and the release file (a release model's save() writes that state)
    back = m.state_dict()
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    m.save_release(tmp_path / "again.safetensors")
    again = load_file(str(tmp_path / "again.safetensors"))
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)
    for big in ("photomaker-v1.safetensors", "again.safetensors"):  # ~150 MB each: keep the temp folder small
        (tmp_path / big).unlink()
    pipe.detach()
    # the official pipeline loads lora_weights with diffusers' load_lora_weights: same image from the same embeddings
    pipe_d = comps.diffusers_pipeline()
    pipe_d.set_progress_bar_config(disable=True)
    pipe_d.scheduler = make_scheduler("ddim", comps.scheduler)
    pipe_d.load_lora_weights(dict(parts["lora_weights"]))
    ctx, pooled = seen[0][0], seen[0][1]["text_embeds"]
    kw = dict(prompt_embeds=ctx[1:], negative_prompt_embeds=ctx[:1], pooled_prompt_embeds=pooled[1:],
              negative_pooled_prompt_embeds=pooled[:1], num_inference_steps=2, guidance_scale=3.0,
              output_type="np")  # fmt: skip
    theirs = pipe_d(generator=[torch.Generator().manual_seed(0)], **kw).images
    print(f"photomaker: max |tailor - diffusers load_lora_weights| image {np.abs(theirs - ours).max():.2e}")
    assert np.abs(theirs - ours).max() <= 1e-4
    pipe_d.unload_lora_weights()
    plain = pipe_d(generator=[torch.Generator().manual_seed(0)], **kw).images
    assert np.abs(plain - ours).max() > 1e-3  # the LoRA does something


def test_tailor_layout_written_in_the_release_layout_gives_the_same_tokens(tmp_path):
    comps = tailor.tiny_components(sdxl=True)
    m = PhotoMakerMethod(image_encoder="tiny", rank=2, lora_alpha=2.0, merge_start=0.0)
    m.patch(comps)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.trainable_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    images = refs(1)
    # the release layout reads pixels with the release's processor (CLIPImageProcessor() at the tower's size)
    m.processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    emb = m._embed(images)
    cls = torch.randn(1, m.id_encoder.layer_norm.normalized_shape[0], generator=g)
    want = m.id_encoder(emb, cls)
    m.save(tmp_path / "train")
    m.unpatch()
    # tailor convert photomaker: the tailor-layout file -> the release layout (the base names the text widths)
    args = ["convert", "photomaker", tmp_path / "train", tmp_path / "release.safetensors", "--base", "tiny-xl"]
    assert main([str(a) for a in args]) == 0
    keys = load_file(str(tmp_path / "release.safetensors"))
    assert keys["id_encoder.visual_projection.weight"].shape == (24, 64)  # the tiny tower is 64 wide
    assert keys["id_encoder.visual_projection_2.weight"].shape == (40, 64)
    assert any(k.endswith(".processor.to_out_lora.up.weight") for k in keys)
    r = tailor.load(tmp_path / "release.safetensors")
    r.patch(tailor.tiny_components(sdxl=True))
    got = r.id_encoder(r._embed(images), cls)
    print(f"photomaker: tailor layout -> release layout, max token difference {(got - want).abs().max():.2e}")
    assert (got - want).abs().max() <= 1e-5 and want.abs().max() > 0.1


def test_bad_release_files_are_refused(tmp_path):
    v2 = {"id_encoder": {"vision_model.embeddings.class_embedding": torch.zeros(64),
                         "qformer_perceiver.latents": torch.zeros(1, 2, 8)}, "lora_weights": {}}  # fmt: skip
    with pytest.raises(FormatError, match="v1"):
        formats.id_from_release(v2["id_encoder"])
    with pytest.raises(FormatError, match="neither"):
        formats.lora_from_release({"unet.x.to_q.weight": torch.zeros(2, 2)})
    torch.save({"id_encoder": {}}, tmp_path / "half.bin")
    with pytest.raises(FormatError, match="not a PhotoMaker checkpoint"):
        formats.read(tmp_path / "half.bin")
    with pytest.raises(ConfigError, match="release file"):
        PhotoMakerMethod(image_encoder="file", rank=4, lora_alpha=4.0).patch(tailor.tiny_components(sdxl=True))
    with pytest.raises(ConfigError, match="lora_alpha must equal rank"):
        PhotoMakerMethod(image_encoder="file", rank=4, lora_alpha=8.0)
