"""World v2 renderers: lit renders (linear light transport) and glyph renders (the world font), their CLI, dataset
kinds and the OCR oracle."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tailor.cli import main
from tailor.errors import ConfigError
from tailor.world.font import CHARSET, GLYPH_H, check_text, glyph_bitmap, text_bitmap
from tailor.world.glyphs import MIN_CELL_PX, SURFACES, max_chars, render_glyph
from tailor.world.light import (
    LIGHT_COLORS,
    Light,
    LitScene,
    ambient,
    directional,
    linear_to_srgb,
    parse_lights,
    point,
    render_lit,
    srgb_to_linear,
)


# ---------------------------------------------------------------- light
def _scene(seed: int = 3) -> LitScene:
    s = render_lit(seed, subject="scene")
    return LitScene.from_parts(s.extras["albedo"], [o["mask"] for o in s.objects])


def test_two_lights_add_exactly_in_linear_space():
    scene = _scene()
    a = directional("left", "warm", 1.3, elevation=30)
    b = point("top right", "blue", 1.1, height=0.3)
    both = scene.linear([a, b])
    assert np.array_equal(scene.linear([a]) + scene.linear([b]), both)  # bit-exact, not approximately
    c = ambient("cool", 0.2)
    np.testing.assert_allclose(scene.linear([a, b, c]), scene.linear([a, c]) + scene.linear([b]), rtol=1e-12)
    assert not np.allclose(scene.linear([a]), scene.linear([b]))  # the lights differ, so the test can fail
    # ... and the display transform is not additive: adding must happen before it
    assert not np.allclose(linear_to_srgb(scene.linear([a])) + linear_to_srgb(scene.linear([b])), linear_to_srgb(both))


def test_lambert_and_shadows_follow_the_light():
    s = render_lit(5, subject="object")
    scene = LitScene.from_parts(s.extras["albedo"], [s.mask])
    flat = ~scene.fg
    lam = directional("left", "white", 1.0, elevation=30)
    # the flat ground receives albedo * sin(elevation) where no shadow falls (a few pixels off the object's rim)
    far = (cv2.dilate(scene.fg.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0) & (scene._shadow(lam) == 1.0)
    np.testing.assert_allclose(scene.linear([lam])[far], scene.albedo[far] * np.sin(np.radians(30)), rtol=1e-5)
    # an object lit from the left is brighter on its left half than on its right half (normals of the dome)
    ys, xs = np.nonzero(s.mask)
    cx = xs.mean()
    shade = scene.linear([lam]).sum(-1) / np.maximum(scene.albedo.sum(-1), 1e-6)
    assert shade[ys[xs < cx - 2], xs[xs < cx - 2]].mean() > shade[ys[xs > cx + 2], xs[xs > cx + 2]].mean() + 0.1
    # its shadow falls on the right: darker ground right of the object than left of it
    vis = scene._shadow(lam)
    assert vis[:, int(cx) :][flat[:, int(cx) :]].min() < 0.7 and vis[:, : int(cx) - 10].min() > 0.95


def test_srgb_round_trip():
    x = np.linspace(0, 1, 101)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-12)


def test_lit_labels_masks_and_extras_agree():
    for seed, subject in [(0, "object"), (1, "face"), (2, "scene")]:
        s = render_lit(seed, subject=subject)
        assert s.attrs["subject"] == subject and s.attrs["lights"][0]["kind"] == "ambient"
        lights = [Light.from_dict(d) for d in s.attrs["lights"]]
        assert [lt.to_dict() for lt in lights] == s.attrs["lights"]  # the labels rebuild the lights
        assert np.array_equal(s.extras["mask"] > 0, s.mask) and s.mask.any()
        if subject != "face":  # (a face's head and body are two domes the labels do not split)
            assert np.array_equal(np.any([o["mask"] for o in s.objects], axis=0), s.mask)
            # the image is the display transform of albedo x lights (up to the photo's sensor noise)
            scene = LitScene.from_parts(s.extras["albedo"], [o["mask"] for o in s.objects])
            clean = linear_to_srgb(scene.linear(lights)) * 255
            assert np.abs(s.image.astype(float) - clean).mean() < 3.0
        # the foreground input is the albedo inside the mask and grey outside; the background has no subject
        fg = s.extras["foreground"]
        assert np.array_equal(fg[s.mask], s.extras["albedo"][s.mask]) and (fg[~s.mask] == 127).all()
        assert s.extras["background"].shape == s.image.shape
        assert "lit from the" in s.caption


def test_light_determinism_and_prompt_lights():
    a, b = render_lit(11), render_lit(11)
    assert np.array_equal(a.image, b.image) and a.attrs == b.attrs and a.caption == b.caption
    assert not np.array_equal(a.image, render_lit(12).image)
    lights = parse_lights("a red star on grass, lit from the left by warm light and from the top by blue lamplight")
    assert [(lt.kind, lt.side, lt.name) for lt in lights[1:]] == [
        ("directional", "left", "warm"),
        ("point", "top", "blue"),
    ]
    s = render_lit(0, subject="object", lights=lights, shape="star")
    assert "lit from the left by warm light and from the top by blue lamplight" in s.caption
    assert parse_lights("a red star on grass") is None
    # the same seed under other lights is the same scene relit (IC-Light's pairs): same albedo, mask, caption subject
    other = render_lit(0, subject="object", lights=[ambient("white"), directional("right", "cool")], shape="star")
    assert np.array_equal(other.extras["albedo"], s.extras["albedo"]) and np.array_equal(other.mask, s.mask)
    assert not np.array_equal(other.image, s.image) and "from the right by cool light" in other.caption
    with pytest.raises(ConfigError, match="light colour"):
        parse_lights("lit from the left by plaid light")
    with pytest.raises(ConfigError, match="subject"):
        render_lit(0, subject="car")
    assert set(LIGHT_COLORS) >= {"warm", "cool", "white"}


# ---------------------------------------------------------------- glyphs
def test_font_has_every_glyph_and_they_differ():
    maps = {c: glyph_bitmap(c).tobytes() for c in CHARSET}
    assert len(CHARSET) == 36 and len(set(maps.values())) == 36
    assert text_bitmap("HI").shape == (GLYPH_H, 11)
    assert check_text("cat") == "CAT"
    with pytest.raises(ConfigError, match="--text 'c@t' has characters the world font lacks"):
        check_text("c@t")


def test_glyph_polygons_contain_the_glyph_pixels():
    for seed in range(24):
        s = render_glyph(seed)
        (line,) = s.attrs["lines"]
        assert line["text"] == s.attrs["text"] and f'"{s.attrs["text"]}"' in s.caption
        inside = np.zeros(s.mask.shape, np.uint8)
        cv2.fillPoly(inside, [np.round(np.array(line["polygon"]) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
        ink = s.extras["glyphs"] >= 128
        assert ink.sum() > 20 and (inside[ink] == 1).all()
        assert (s.extras["glyphs"][inside == 0] < 60).all()  # at most anti-aliasing spill outside the line
        assert ink[s.mask].sum() == ink.sum()  # the text lies on its surface
        assert s.attrs["cell"] >= MIN_CELL_PX - 1e-9
        x0, y0, x1, y1 = s.box
        assert s.mask[y0:y1, x0:x1].sum() == s.mask.sum()


def test_glyph_determinism_and_fixed_choices():
    a, b = render_glyph(7), render_glyph(7)
    assert np.array_equal(a.image, b.image) and a.attrs == b.attrs
    s = render_glyph(7, text="go", surface="plate", background="brick")
    assert s.attrs["text"] == "GO" and s.attrs["surface"] == "plate" and "on brick" in s.caption
    assert max_chars(64) == 3 and max_chars(128) >= 6
    with pytest.raises(ConfigError, match="holds at most 3"):
        render_glyph(0, text="CATS", surface="sign")
    with pytest.raises(ConfigError, match="valid surfaces are: " + ", ".join(SURFACES)):
        render_glyph(0, surface="wall")


# ---------------------------------------------------------------- CLI and datasets
def test_world_render_kinds_cli(tmp_path, capsys):
    out = tmp_path / "lit"
    assert main(["world", "render", "--kind", "light", "-n", "2", "--out", str(out)]) == 0
    labels = json.loads((out / "labels.json").read_text())
    for rec in labels:
        assert set(rec["files"]) == {"albedo", "foreground", "background", "mask"}
        assert all(f.startswith("extras/") for f in rec["files"].values())
        assert all((out / f).is_file() for f in rec["files"].values()) and rec["attrs"]["lights"]
    out = tmp_path / "glyph"
    assert main(["world", "render", "--kind", "glyph", "--text", "sun", "-n", "2", "--out", str(out)]) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert [r["attrs"]["text"] for r in labels] == ["SUN", "SUN"] and labels[0]["files"] == {
        "glyphs": "extras/000_glyphs.png"
    }
    capsys.readouterr()
    bad = [
        (["--kind", "neon"], "unknown render kind 'neon' (--kind); valid kinds are: glyph, light, pair"),
        (["--kind", "glyph", "--text", "hé"], "--text 'hé' has characters the world font lacks"),
        (["--kind", "glyph", "--text", "ZEBRA"], "--text 'ZEBRA' has 5 characters"),
        (["--kind", "glyph", "--surface", "wall"], "valid surfaces are: sign, plate, object"),
        (["--kind", "light", "--subject", "car"], "valid subjects are: object, face, scene"),
        (["--kind", "light", "--text", "HI"], "--kind light has no option '--text'"),
        (["--text", "HI"], "options of a --kind need --kind"),
    ]
    for args, msg in bad:
        bad_out = tmp_path / "bad"
        assert main(["world", "render", *args, "--out", str(bad_out)]) == 2, args
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
        assert not bad_out.exists()  # nothing half-written


def test_dataset_kinds_light_and_glyphs():
    from tailor.world.dataset import WorldDataset

    lit = WorldDataset("light", length=3)
    item = lit[0]
    assert {"albedo", "foreground", "background"} <= set(item) and item["albedo"].shape == (3, 64, 64)
    assert float(item["albedo"].min()) >= -1 and float(item["albedo"].max()) <= 1
    g = WorldDataset("glyph", length=3)
    batch = WorldDataset.collate([g[i] for i in range(3)])
    assert batch["glyphs"].shape == (3, 1, 64, 64) and all('says "' in c or 'word "' in c for c in batch["caption"])
    assert np.array_equal(g[1]["pixel_values"].numpy(), g[1]["pixel_values"].numpy())


# ---------------------------------------------------------------- OCR oracle
def test_ocr_scores_and_decoding():
    import torch

    from tailor.world.zoo.ocr import OCRNet, edit_distance, ocr_scores

    assert edit_distance("CAT", "CAR") == 1 and edit_distance("", "AB") == 2
    s = ocr_scores(["CAT", "CAR", ""], ["CAT", "CAT", "GO"])
    assert s["sen_acc"] == pytest.approx(1 / 3) and s["ned"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    m = OCRNet()
    logp = torch.full((6, 1, 37), -10.0)
    for t, k in enumerate([3, 3, 0, 3, 1, 0]):  # C C - C A -
        logp[t, 0, k] = 0.0
    assert m.decode(logp) == ["CCA"]
    targets, lengths = m.encode_targets(["CAT", "GO"])
    assert lengths.tolist() == [3, 2] and targets.tolist()[:3] == [3, 1, 20]


def test_ocr_recipe_widening_keeps_the_reader_and_batches_are_fresh():
    import torch

    from tailor.world.zoo.ocr import OCRNet
    from zoo.ocr import glyph_batch, widen

    torch.manual_seed(0)
    narrow = OCRNet(seq_kernel=3).eval()
    wide = widen(narrow, 5).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(wide(x), narrow(x), rtol=1e-5, atol=1e-5)
    assert wide.config["seq_kernel"] == 5 and wide.seq[0].weight.shape[-1] == 5
    a, ta = glyph_batch(6, 1, 0, uniform=1.0)
    b, tb = glyph_batch(6, 1, 0, uniform=1.0)
    assert ta == tb and all(np.array_equal(p, q) for p, q in zip(a, b))
    assert glyph_batch(6, 1, 1, uniform=1.0)[1] != ta and all(1 <= len(t) <= 3 for t in ta if t)


def _ocr():
    from tailor.world.zoo.ocr import OCR_DIR, OCR_FILE, load_ocr

    if not (OCR_DIR / OCR_FILE).is_file():
        pytest.skip("the OCR oracle is not shipped in this checkout")
    return load_ocr()


def test_shipped_ocr_reads_fresh_glyph_renders():
    from tailor.world.zoo.ocr import ocr_scores
    from tailor.world.zoo.oracles import to_unit

    model = _ocr()
    samples = [render_glyph(50_000 + i) for i in range(100)]
    scores = ocr_scores(model.read(to_unit([s.image for s in samples])), [s.attrs["text"] for s in samples])
    assert scores["sen_acc"] >= 0.95 and scores["ned"] >= 0.97, scores


def test_eval_ocr_cli(tmp_path, capsys):
    _ocr()
    out = tmp_path / "g"
    assert main(["world", "render", "--kind", "glyph", "-n", "8", "--seed", "5", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", "ocr", "--images", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 8 and res["sen_acc"] >= 0.75 and res["ned"] >= 0.85
    (tmp_path / "plain").mkdir()
    (out / "000.png").rename(tmp_path / "plain" / "a.png")
    assert main(["eval", "ocr", "--images", str(tmp_path / "plain")]) == 2
    assert "labels.json" in capsys.readouterr().err
