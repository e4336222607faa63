"""character_adapter (Ma et al. 2024): region-level IP-Adapter tokens gated by their words' attention maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tailor.core.attention import DecoupledAttnProcessor
from tailor.core.attention_store import word_tokens
from tailor.core.pipeline import Pipeline
from tailor.errors import InputError
from tailor.methods.character_adapter import SPEC, CharacterAdapterMethod
from tailor.methods.character_adapter.method import region_crop

PROMPT = "a photo of a red star"


def method(**kw):
    return CharacterAdapterMethod(ip_adapter="untrained:tiny", **kw)


def test_regions_get_own_tokens_and_gates(tiny):
    inputs = SPEC.example_inputs(tiny)
    m = method()
    pipe = Pipeline(tiny).attach(m, **inputs)
    out = pipe.generate(PROMPT, n=2, seed=0, steps=2, guidance=3.0).array
    branch = m.inner.branch
    assert branch.tokens is None and len(branch.regions) == 2  # one token set per region ("red", "star")
    tok_red, tok_star = branch.regions[0][0], branch.regions[1][0]
    assert tok_red.shape == tok_star.shape and tok_red.shape[0] == 4 and not torch.equal(tok_red, tok_star)
    # the gates: each region word's map in the layer's call, max-normalised, one region per pixel (exclusive)
    layer = next(iter(m.store.current))
    masks = m._masks(layer)
    assert masks.shape[:2] == (2, 4) and masks.max() <= 1 + 1e-6 and masks.min() >= 0
    assert ((masks > 0).sum(0) <= 1).all()  # exclusive
    assert torch.equal(masks[:, :2], masks[:, 2:])  # unconditional rows take the conditional rows' masks
    probs = m.store.current[layer][2:]  # the conditional rows' maps: check "star"'s mask by hand
    star, red = word_tokens(tiny.tokenizer, PROMPT, "star"), word_tokens(tiny.tokenizer, PROMPT, "red")
    a_star, a_red = probs[:, :, star].sum(-1), probs[:, :, red].sum(-1)
    n_star, n_red = a_star / a_star.amax(1, keepdim=True), a_red / a_red.amax(1, keepdim=True)
    assert torch.allclose(masks[1, 2:], n_star * (n_star >= n_red), atol=1e-6)
    pipe.detach()
    assert not any(isinstance(p, DecoupledAttnProcessor) for p in tiny.unet.attn_processors.values())
    assert np.isfinite(out).all()


def test_gates_change_the_output_against_ungated(tiny):
    inputs = SPEC.example_inputs(tiny)
    gated = method()
    pipe = Pipeline(tiny).attach(gated, **inputs)
    a = pipe.generate(PROMPT, n=1, seed=0, steps=2, guidance=3.0).array
    pipe.detach()
    loose = method(exclusive=False)
    pipe = Pipeline(tiny).attach(loose, **inputs)
    b = pipe.generate(PROMPT, n=1, seed=0, steps=2, guidance=3.0).array
    pipe.detach()
    assert np.abs(a - b).max() > 1e-5


def test_bad_inputs(tiny):
    inputs = SPEC.example_inputs(tiny)
    pipe = Pipeline(tiny).attach(method(), **inputs)
    with pytest.raises(InputError, match="'star' is not in the prompt"):
        pipe.generate("a photo of a red circle", n=1, steps=1)
    pipe.detach()
    pipe = Pipeline(tiny).attach(method())
    with pytest.raises(InputError, match="needs a reference image"):
        pipe.generate(PROMPT, n=1, steps=1)
    pipe.detach()


def test_world_segmenter_regions():
    """Regions from the world segmenter on a two-object scene (they lie on the objects); a region word it does not
    find, or that is no segmenter class, is one sentence."""
    from PIL import Image

    from tailor.world.scenes import render_scene

    scene = render_scene(3, objects=[{"shape": "star", "color": "red"}, {"shape": "heart", "color": "blue"}],
                         background="grass", size=64)  # fmt: skip
    image = Image.fromarray(scene.image)
    found = CharacterAdapterMethod().regions(image, {})
    assert found and "background" not in found
    objects = np.logical_or.reduce([o["mask"] for o in scene.objects])
    for word, mask in found.items():
        assert (mask & objects).sum() / mask.sum() > 0.6, word  # the regions are on the objects
    word = max(found, key=lambda w: found[w].sum())
    assert set(CharacterAdapterMethod(regions=[word]).regions(image, {})) == {word}
    crop = region_crop(image, found[word])
    assert crop.size[0] == crop.size[1] and np.asarray(crop).min() < 200
    absent = next(c for c in ("hexagon", "triangle", "heart", "star") if c not in found)
    with pytest.raises(InputError, match=f"no region '{absent}'"):
        CharacterAdapterMethod(regions=[absent]).regions(image, {})
    with pytest.raises(InputError, match="not a segmenter class"):
        CharacterAdapterMethod(regions=["dog"]).regions(image, {})


def test_scene_segmenter_cuts_both_objects_of_two_object_scenes():
    """The default segmenter (segmenter_scenes, trained on relation scenes too) cuts both named objects of the
    twosubjects references, on them; the first one (segmenter, one-object renders only) finds neither pair."""
    from PIL import Image

    from tailor.bench.twosubjects import held_out_case

    cut = old = 0
    for j in range(8):
        sample, _ = held_out_case(j, 64)
        image, words = Image.fromarray(sample.image), [o["shape"] for o in sample.objects]
        try:
            found = CharacterAdapterMethod(regions=words).regions(image, {})
        except InputError:
            continue
        cut += 1
        for o in sample.objects:
            mask = found[o["shape"]]
            assert (mask & o["mask"]).sum() / mask.sum() > 0.6, (j, o["shape"])  # the region lies on its object
        try:
            CharacterAdapterMethod(regions=words, segmenter="segmenter").regions(image, {})
            old += 1
        except InputError:
            pass
    assert cut >= 6 and old == 0, (cut, old)


def test_segmenter_option_refuses_what_is_no_segmenter(tmp_path):
    from PIL import Image

    image = Image.new("RGB", (64, 64), "white")
    with pytest.raises(InputError, match="does not exist"):
        CharacterAdapterMethod(segmenter=str(tmp_path / "missing.safetensors")).regions(image, {})
    with pytest.raises(InputError, match="not a segmenter"):
        CharacterAdapterMethod(segmenter="attributes").regions(image, {})
    try:  # min_area 0 still never gives an empty region (a class no pixel carries)
        found = CharacterAdapterMethod(min_area=0.0).regions(image, {})
    except InputError:
        found = {}
    assert all(m.any() for m in found.values())


def test_generate_cli(tmp_path, capsys):
    import json

    from PIL import Image

    from tailor.cli import main
    from tailor.world.scenes import render_scene

    scene = render_scene(3, n_objects=2, background="grass", size=64)
    image = Image.fromarray(scene.image)
    word = max((found := CharacterAdapterMethod().regions(image, {})), key=lambda w: found[w].sum())
    image.save(tmp_path / "scene.png")
    out = tmp_path / "out"
    code = main(["generate", "--base", "tiny", "-p", f"a photo of a {word} on grass", "-n", "1", "--steps", "2",
                 "--out", str(out), "--character-adapter", f"{tmp_path / 'scene.png'}:0.7",
                 "--character-adapter-regions", word, "--character-adapter-ip-adapter", "untrained:tiny"])  # fmt: skip
    assert code == 0, capsys.readouterr()
    methods = json.loads((out / "generation.json").read_text())["settings"]["methods"]
    assert methods == [dict(method="character_adapter", weight=0.7, start=0.0, end=1.0)]
    capsys.readouterr()
    code = main(["generate", "--base", "tiny", "-p", "a photo", "--out", str(tmp_path / "o2"), "--character-adapter",
                 str(tmp_path / "scene.png"), "--character-adapter-regions", word,
                 "--character-adapter-ip-adapter", "untrained:tiny"])  # fmt: skip
    assert code == 2 and "is not in the prompt" in capsys.readouterr().err
