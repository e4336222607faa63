"""PhotoMaker (Li et al. 2023): trigger-word prompt surgery against the tokenizer, the fuse MLP against a written-out
formula, the stacked ID embedding in place of the class word, the start-merge step seen at the UNet, files and bad
inputs — on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tailor
import tailor.world as world
from tailor.core.pipeline import Pipeline
from tailor.core.prompts import encode_prompts
from tailor.errors import InputError
from tailor.methods.photomaker import PhotoMakerMethod
from tailor.methods.photomaker.modules import IDEncoder, id_prompt, with_trigger

OPTS = {"image_encoder": "tiny", "rank": 4, "lora_alpha": 4.0}


def refs(n=2, identity=901):
    return [world.render_face(s, identity=identity).pil() for s in range(n)]


def test_prompt_surgery_matches_the_tokenizer():
    tok = tailor.tiny_components().tokenizer
    ids, pos, plain = id_prompt(tok, "a photo of a man img on grass", "img", 3)
    pad = [tok.pad_token_id] * tok.model_max_length
    want_plain = tok("a photo of a man on grass").input_ids
    assert plain == (want_plain + pad)[: tok.model_max_length]
    cls = tok("a photo of a man").input_ids[-2]  # the last token of the class word
    assert [ids[p] for p in pos] == [cls] * 3 and len(ids) == tok.model_max_length
    assert (
        ids[: pos[0]] + ids[pos[-1] + 1 : pos[-1] + 1 + 4]
        == want_plain[: pos[0]] + want_plain[pos[0] + 1 : pos[0] + 5]
    )
    assert with_trigger("a man, on wood, photo", "man", "img") == "a man img, on wood, photo"
    assert with_trigger("a red star", "man", "img") is None
    with pytest.raises(InputError, match="trigger word 'img'"):
        id_prompt(tok, "a photo of a man", "img", 1)


def test_fuse_module_is_the_papers_formula():
    torch.manual_seed(0)
    enc = IDEncoder(12, 16)
    for p in enc.parameters():
        p.data.normal_(0, 0.3)
    img, cls = torch.randn(3, 12), torch.randn(3, 16)

    def mlp(m, x):
        return m.fc2(F.gelu(m.fc1(F.layer_norm(x, (x.shape[-1],), m.norm.weight, m.norm.bias))))

    ids = img @ enc.visual_projection.weight.t()
    x = mlp(enc.mlp1, torch.cat([cls, ids], -1)) + cls
    x = x + mlp(enc.mlp2, x)
    want = F.layer_norm(x, (16,), enc.layer_norm.weight, enc.layer_norm.bias)
    assert torch.allclose(enc(img, cls), want, atol=1e-6)


def _unet_contexts(comps):
    seen = []
    handle = comps.unet.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()), with_kwargs=True
    )
    return seen, handle


def test_stacked_id_tokens_and_start_merge():
    comps = tailor.tiny_components()
    m = PhotoMakerMethod(merge_start=0.5, **OPTS)
    pipe = Pipeline(comps).attach(m, id_images=refs(3))
    seen, handle = _unet_contexts(comps)
    pipe.generate("a photo of a man img", n=1, seed=0, steps=4, guidance=3.0)
    handle.remove()
    tok, te = comps.tokenizer, comps.text_encoder
    ids, pos, plain = id_prompt(tok, "a photo of a man img", "img", 3)
    with torch.no_grad():
        text_id, text_only = te(torch.tensor([ids, plain]))[0]
    uncond = encode_prompts(comps, ["x"], None, cfg=True).encoder_hidden_states[0]
    assert len(seen) == 4
    for step, ctx in enumerate(seen):
        assert torch.allclose(ctx[0], uncond, atol=1e-6)  # the negative half is untouched
        if step < 2:  # text-only before the merge step
            assert torch.allclose(ctx[1], text_only, atol=1e-6)
        else:  # the ID prompt: 3 stacked ID tokens at the class positions, the text encoder's output elsewhere
            keep = [i for i in range(len(ids)) if i not in pos]
            assert torch.allclose(ctx[1][keep], text_id[keep], atol=1e-6)
            assert (ctx[1][pos] - text_id[pos]).abs().amax() > 1e-2
            assert (ctx[1][pos[0]] - ctx[1][pos[1]]).abs().amax() > 1e-3  # one token per reference image
    pipe.detach()


def test_training_uses_another_view_and_files_reload(tmp_path):
    from tailor.core.training import TrainConfig, train
    from tailor.faces.inputs import SameIdentityDataset

    data = SameIdentityDataset(world.WorldDataset(kind="faces", size=32, seed=0, length=4))
    item = data[0]
    assert item["id_pixel_values"].shape == item["pixel_values"].shape
    assert (item["id_pixel_values"] - item["pixel_values"]).abs().amax() > 0.1
    comps = tailor.tiny_components()
    m = PhotoMakerMethod(**OPTS)
    cfg = TrainConfig(
        base="tiny", data="world:faces", out=str(tmp_path), steps=2, batch_size=2, resolution=32, lr=1e-3
    )
    train(m, cfg, components=comps)
    state = m.state_dict()
    assert {k.split(".")[0] for k in state} == {"id_encoder", "lora_weights"}
    assert any(v.abs().sum() > 0 for k, v in state.items() if k.endswith("lora_B.weight"))
    kw = dict(n=1, seed=1, steps=3, guidance=3.0)
    want = Pipeline(comps).attach(m, id_images=refs()).generate("a photo of a woman img", **kw).array
    again = tailor.load(tmp_path)
    got = Pipeline(tailor.tiny_components()).attach(again, id_images=refs()).generate("a photo of a woman img", **kw)
    assert np.abs(got.array - want).max() == 0


def test_bad_inputs():
    comps = tailor.tiny_components()
    kw = dict(n=1, seed=0, steps=2, guidance=3.0)
    with pytest.raises(InputError, match="at least 1 reference"):
        Pipeline(comps).attach(PhotoMakerMethod(**OPTS)).generate("a man img", **kw)
    with pytest.raises(InputError, match="at least 3 reference image.*got 2"):
        Pipeline(tailor.tiny_components()).attach(PhotoMakerMethod(min_images=3, **OPTS), id_images=refs(2)).generate(
            "a man img", **kw
        )
    with pytest.raises(InputError, match="lacks the trigger word"):
        Pipeline(tailor.tiny_components()).attach(PhotoMakerMethod(**OPTS), id_images=refs(1)).generate(
            "a photo of a man", **kw
        )


def test_sdxl_layout_switches_states_and_pooled_embeds_at_the_merge_step():
    comps = tailor.tiny_components(sdxl=True)
    # the tiny config's eos id (515) is not the tokenizer's, so its pooled output would be the BOS state for every
    # prompt; pool at the real EOS so the text-only and ID prompts differ
    comps.text_encoder_2.text_model.eos_token_id = comps.tokenizer_2.eos_token_id
    m = PhotoMakerMethod(merge_start=0.5, **OPTS)
    pipe = Pipeline(comps).attach(m, id_images=refs(2))
    seen = []
    handle = comps.unet.register_forward_pre_hook(
        lambda mod, args, kw: seen.append((kw["encoder_hidden_states"], kw["added_cond_kwargs"]["text_embeds"])),
        with_kwargs=True,
    )
    pipe.generate("a photo of a man img", n=1, seed=0, steps=4, guidance=3.0)
    handle.remove()
    pipe.detach()
    rows = []
    for tok, te in ((comps.tokenizer, comps.text_encoder), (comps.tokenizer_2, comps.text_encoder_2)):
        ids, pos, plain = id_prompt(tok, "a photo of a man img", "img", 2)
        with torch.no_grad():
            rows.append(te(torch.tensor([ids, plain]), output_hidden_states=True))
    states = torch.cat([r.hidden_states[-2] for r in rows], dim=-1)  # (2, L, 24 + 40)
    pooled = rows[1][0]
    assert m.id_encoder.layer_norm.normalized_shape == (states.shape[-1],)
    keep = [i for i in range(states.shape[1]) if i not in pos]
    for step, (ctx, text_embeds) in enumerate(seen):
        if step < 2:
            assert torch.allclose(ctx[1], states[1], atol=1e-6) and torch.allclose(
                text_embeds[1], pooled[1], atol=1e-6
            )
        else:
            assert torch.allclose(ctx[1][keep], states[0][keep], atol=1e-6)
            assert (ctx[1][pos] - states[0][pos]).abs().amax() > 1e-2
            assert torch.allclose(text_embeds[1], pooled[0], atol=1e-6)
    assert (pooled[0] - pooled[1]).abs().amax() > 1e-4  # the switch is visible in the pooled embedding too
