"""IC-Light fc light words: the light phrase read through trained vectors; the bench's light following."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

import tailor
from tailor.core.prompts import encode_prompts
from tailor.methods.ic_light import IcLightMethod
from tailor.methods.ic_light.light_words import KEYS, light_ids, light_spans

LIT = "a photo of a red star on grass, lit from the left by warm light and from the top right by blue lamplight"
PLAIN = "a photo of a red star on grass"


def _keys(path) -> list[str]:
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def test_light_spans_and_ids():
    tok = tailor.tiny_components().tokenizer
    spans = light_spans(LIT)
    assert [k for *_, k in spans] == [
        "lit", "side.left", "colour.warm", "kind.light", "side.top", "side.right", "colour.blue", "kind.lamplight",
    ]  # fmt: skip
    assert [LIT[a:b] for a, b, _ in spans] == ["lit", "left", "warm", "light", "top", "right", "blue", "lamplight"]
    assert light_spans(PLAIN) == [] and light_spans("a star in soft light") == []  # "red star": not a light colour
    ref = tok(PLAIN, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    ids, where = light_ids(tok, PLAIN)
    assert ids == ref and where == []  # no light phrase: the base's own ids
    short = "a star, lit from the left by warm light"
    ids, where = light_ids(tok, short)
    assert [k for _, k in where] == [KEYS.index(k) for k in ("lit", "side.left", "colour.warm", "kind.light")]
    # one position per light word; the words between them tokenized as the base does
    between = tok("from the", add_special_tokens=False).input_ids
    (p_lit, _), (p_side, _) = where[:2]
    assert ids[p_lit + 1 : p_side] == between and ids[0] == tok.bos_token_id
    assert len(ids) == tok.model_max_length


def test_option_adds_trained_words_and_plain_prompts_are_unchanged():
    comps = tailor.tiny_components()
    base = encode_prompts(comps, [PLAIN, LIT], cfg=True).encoder_hidden_states.clone()
    method = IcLightMethod(mode="fc", unet_rank=4)
    method.patch(comps)
    words = method.light_words
    assert words is not None and words.vectors.shape == (len(KEYS), comps.text_encoder.config.hidden_size)
    emb = comps.text_encoder.get_input_embeddings().weight
    left = tok_ids = comps.tokenizer("left", add_special_tokens=False).input_ids
    assert torch.allclose(words.vectors[KEYS.index("side.left")], emb[left].mean(0))  # init: the word's tokens' mean
    with torch.no_grad():
        words.vectors.add_(torch.randn_like(words.vectors))
    cond = method.encode(encode_prompts(comps, [PLAIN, LIT], cfg=True), {})
    got = cond.encoder_hidden_states
    assert torch.equal(got[:3], base[:3])  # the unconditional half and the prompt without light words: as they came
    assert not torch.allclose(got[3], base[3], atol=1e-3)  # the light prompt reads through the vectors
    assert tok_ids and method.text_context == "edits"
    assert IcLightMethod(mode="fbc").text_context == "" and IcLightMethod(light_words=False).text_context == ""
    fbc = IcLightMethod(mode="fbc")
    fbc.patch(tailor.tiny_components())
    assert fbc.light_words is None  # fbc: the background carries the light


def test_light_words_train_and_get_their_learning_rate():
    from tailor.core.training import TrainConfig
    from tailor.core.training.data import collate
    from tailor.core.training.objective import Objective
    from tailor.world.dataset import WorldDataset

    comps = tailor.tiny_components()
    comps.freeze()
    method = IcLightMethod(mode="fc", unet_rank=4, light_words_lr_scale=7.0)
    torch.manual_seed(0)
    method.patch(comps)
    params = method.trainable_parameters()
    groups = method.param_groups(1e-4)
    assert groups[-1]["lr"] == pytest.approx(7e-4) and groups[-1]["params"] == [method.light_words.vectors]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in params}
    cfg = TrainConfig(base="tiny", out="unused", resolution=32)
    obj = Objective(comps, method, cfg, 32)
    ds = method.wrap_dataset(WorldDataset(kind="light", size=32, seed=0, length=4), cfg)
    batch = collate([ds[0], ds[1]])
    a, b = "a star, lit from the left by warm light", "a star, lit from the right by blue lamplight"
    batch["caption"] = [[a, b, f"{a} and from the right by blue lamplight"]] * 2  # rows A, B, AB; short: the tiny
    # tokenizer spells words letter by letter
    loss, _ = obj.loss(batch, [(0, 0), (0, 1)], [0, 1], 0, 0, 1, dropout=False)
    loss.backward()
    grad = method.light_words.vectors.grad
    used = [KEYS.index(k) for k in ("lit", "side.left", "colour.warm", "kind.light", "side.right", "colour.blue")]
    assert all(grad[i].abs().sum() > 0 for i in used)
    assert grad[KEYS.index("colour.purple")].abs().sum() == 0  # a word no caption holds gets no gradient
    assert all(p.grad is None for p in comps.text_encoder.parameters())  # the text encoder stays frozen


def test_save_load_roundtrip_official_file_and_old_files(tmp_path):
    comps = tailor.tiny_components()
    method = IcLightMethod(mode="fc", unet_rank=4)
    method.patch(comps)
    method.trainable_parameters()  # the compact delta injected, as training does
    with torch.no_grad():
        method.light_words.vectors.add_(torch.randn_like(method.light_words.vectors))
        for p in method._delta.parameters():
            p.add_(0.01 * torch.randn_like(p))
    method.save(tmp_path)
    saved = method.light_words.vectors.detach().clone()
    keys = _keys(tmp_path / "ic_light.safetensors")
    assert sorted(k for k in keys if ".light_words." in k) == sorted(f"ic_light.light_words.{k}" for k in KEYS)
    # the official offsets: the widened UNet's keys only (no light words), the offsets the model holds
    from tailor.core.io import load_tensors

    official = load_tensors(tmp_path / "iclight_fc.safetensors")
    plain = method.state_dict_plain()
    assert set(official) == set(method._base) == set(plain)
    assert all(torch.equal(official[k], plain[k].to(official[k].dtype)) for k in official)

    fresh = tailor.tiny_components()
    loaded = tailor.load(tmp_path / "ic_light.safetensors")
    assert loaded.config.light_words
    loaded.patch(fresh)
    assert torch.equal(loaded.light_words.vectors.detach(), saved)
    a = method.encode(encode_prompts(comps, [LIT], cfg=False), {}).encoder_hidden_states
    b = loaded.encode(encode_prompts(fresh, [LIT], cfg=False), {}).encoder_hidden_states
    assert torch.allclose(a, b, atol=1e-6)

    # a file without light words (every file saved before them, the shipped ic-light-fc) reads prompts as before
    old = IcLightMethod(mode="fc", unet_rank=4, light_words=False)
    old.patch(tailor.tiny_components())
    old.trainable_parameters()
    old.save(tmp_path / "old")
    again = tailor.load(tmp_path / "old" / "ic_light.safetensors")
    assert not again.config.light_words
    again.patch(tailor.tiny_components())
    assert again.light_words is None
    official_file = tailor.load(tmp_path / "iclight_fc.safetensors")
    assert not official_file.config.light_words


def test_light_following_metric():
    from tailor.bench.relight import light_gap, light_hit, score

    rng = np.random.default_rng(0)
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    a, b = (rng.integers(0, 256, (8, 8, 3)).astype(np.uint8) for _ in range(2))
    assert light_hit(a, b, a, b, mask) == 1.0  # perfect
    assert light_hit(b, a, a, b, mask) == 0.0  # swapped
    assert light_hit(a, a, a, b, mask) == 0.5  # the same image for both lights: a tie
    c = a.copy()
    c[~mask] = b[~mask]  # outside the object: not scored
    assert light_hit(c, b, a, b, mask) == 1.0
    x, y = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    y[2:4, 2:6] = 40  # half the object 40 levels apart
    assert light_gap(x, y, mask) == pytest.approx(20.0)

    class R:
        def __init__(self, image):
            self.image = image

    scenes = [{"renders": {"A": R(a), "B": R(b), "AB": R(a)}, "mask": mask, "shading": {"AB": np.ones((8, 8, 3))},
               "albedo": np.full((8, 8, 3), 0.5)}] * 2  # fmt: skip
    outs = [{"A": a, "B": b, "AB": a}, {"A": b, "B": a, "AB": a}]  # one right, one swapped
    got = score(outs, scenes)
    assert got["light_follow"] == pytest.approx(0.5)
    assert got["light_gap"] == pytest.approx(light_gap(a, b, mask))
