"""The attention-map store: diffusers' own attention probabilities, per layer and call; reference passes skipped;
per-word heatmaps; ``tailor generate --save-attention``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor

import tailor
from tailor.core.attention_store import AttentionStore, colorize, word_tokens
from tailor.core.pipeline import Pipeline
from tailor.errors import InputError

PROMPT = "a photo of a red star"


def test_maps_equal_diffusers_attention_probabilities(tiny):
    """The stored maps are the probabilities diffusers' ``AttnProcessor`` multiplies the values by (head mean)."""
    unet = tiny.unet
    seen = {}
    originals = {}
    for name, m in unet.named_modules():
        if name.endswith("attn2"):
            originals[name] = m.processor
            m.set_processor(AttnProcessor())
            orig = m.get_attention_scores

            def capture(q, k, mask=None, _orig=orig, _name=name, _m=m):
                p = _orig(q, k, mask)
                seen[_name] = p.view(-1, _m.heads, *p.shape[1:]).mean(1)
                return p

            m.get_attention_scores = capture
    store = AttentionStore().attach(unet)
    try:
        x, hidden = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 64)
        with torch.no_grad():
            unet(x, 300, encoder_hidden_states=hidden)
    finally:
        store.detach()
        for name, m in unet.named_modules():
            if name in originals:
                del m.get_attention_scores
                m.set_processor(originals[name])
    assert set(store.current) == set(seen) == set(store.layers) and seen
    for name, probs in seen.items():
        assert store.current[name].shape == probs.shape
        assert torch.allclose(store.current[name], probs, atol=1e-6)
        assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)


def test_counts_sampling_calls_not_reference_passes(tiny):
    from tailor.methods.reference_only import ReferenceOnlyMethod

    pipe = Pipeline(tiny).attach(ReferenceOnlyMethod(), reference=np.full((32, 32, 3), 128, np.uint8))
    store = AttentionStore(keep_history=True).attach(tiny.unet)
    pipe.generate(PROMPT, n=2, seed=0, steps=3, guidance=3.0)
    store.finish()
    store.detach()
    pipe.detach()
    assert store.step == 2 and len(store.history) == 3  # 3 sampling calls; the 3 reference passes are not recorded
    assert all(m.shape[0] == 4 for m in store.history[0].values())  # [uncond x2, cond x2]
    assert all(store.counts[k] == 3 for k in store.layers)
    ids = word_tokens(tiny.tokenizer, PROMPT, "star")
    maps = store.heatmaps([ids], (32, 32), images=2)
    assert maps.shape == (2, 1, 32, 32) and torch.isfinite(maps).all() and maps.min() >= 0
    everything = store.heatmaps([list(range(77))], (32, 32), images=2)
    assert torch.allclose(everything, torch.ones(()), atol=1e-4)  # probabilities over all tokens sum to 1


def test_word_tokens_and_colorize(tiny):
    tok = tiny.tokenizer
    ids = tok(PROMPT).input_ids
    pos = word_tokens(tok, PROMPT, "red")
    assert [ids[i] for i in pos] == tok("red", add_special_tokens=False).input_ids and pos[0] > 0
    with pytest.raises(InputError, match="'tree' is not in the prompt"):
        word_tokens(tok, PROMPT, "tree")
    img = colorize(np.arange(16.0).reshape(4, 4), np.zeros((4, 4, 3)))
    assert img.shape == (4, 4, 3) and img.dtype == np.uint8 and img[0, 0, 2] > img[0, 0, 0]


def test_generate_save_attention(tmp_path, capsys):
    from PIL import Image

    from tailor.cli import main

    out = tmp_path / "out"
    code = main(["generate", "--base", "tiny", "-p", PROMPT, "-n", "2", "--steps", "2", "--out", str(out),
                 "--save-attention", "red,star"])  # fmt: skip
    assert code == 0, capsys.readouterr()
    for i in range(2):
        for w in ("red", "star"):
            img = Image.open(out / f"{i:03d}_attn_{w}.png")
            assert img.size == (32, 32)
    code = main(["generate", "--base", "tiny", "-p", PROMPT, "--out", str(tmp_path / "o2"), "--save-attention",
                 "tree"])  # fmt: skip
    assert code == 2 and "not in the prompt" in capsys.readouterr().err
    assert not list((tmp_path / "o2").glob("*.png"))
    assert tailor  # the package imports from this tree
