"""tailor.world: determinism, vocabulary, ground-truth consistency, captions <-> parser, subjects, faces, scenes,
datasets and the world CLI."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from tailor.errors import ConfigError
from tailor.world import (
    HOLDOUT_COMBOS,
    N_TEMPLATES,
    STYLES,
    Sample,
    SubjectSpec,
    WorldDataset,
    caption_for,
    parse_prompt,
    render,
    render_face,
    render_object,
    render_scene,
    render_subject,
    subjects,
    vocabulary,
)
from tailor.world.draw import bbox
from tailor.world.vocab import COLORS

RENDERERS = {
    "object": lambda seed, **kw: render_object(seed, **kw),
    "subject": lambda seed, **kw: render_subject("checker_star", seed, **kw),
    "face": lambda seed, **kw: render_face(seed, **kw),
    "scene": lambda seed, **kw: render_scene(seed, **kw),
}


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour (inside the image) outside the mask."""
    p = np.pad(mask, 1, mode="edge")
    out = ~p[:-2, 1:-1] | ~p[2:, 1:-1] | ~p[1:-1, :-2] | ~p[1:-1, 2:]
    return mask & out


def dilate(mask: np.ndarray, r: int = 1) -> np.ndarray:
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


# ---------------------------------------------------------------- determinism and vocabulary


@pytest.mark.parametrize("kind", list(RENDERERS))
def test_same_seed_same_bytes_different_seed_differs(kind):
    fn = RENDERERS[kind]
    a, b, c = fn(3), fn(3), fn(4)
    assert a.image.dtype == np.uint8 and a.image.shape == (64, 64, 3)
    assert a.image.tobytes() == b.image.tobytes() and a.caption == b.caption and a.attrs == b.attrs
    assert np.array_equal(a.mask, b.mask) and np.array_equal(a.edges, b.edges)
    assert a.image.tobytes() != c.image.tobytes()
    json.dumps(a.labels())  # labels are JSON-able


def test_vocabulary_sizes():
    v = vocabulary()
    assert len(v["shapes"]) >= 6 and len(v["colors"]) >= 8 and len(v["patterns"]) >= 4 and len(v["backgrounds"]) >= 6
    assert set(v["styles"]) == set(STYLES) and len(STYLES) >= 4
    assert all(STYLES[s].startswith("a ") and STYLES[s].endswith(" of") for s in STYLES)


def test_fixing_one_attribute_keeps_the_others():
    free, fixed = render_object(11), render_object(11, color="green")
    assert fixed.attrs["color"] == "green"
    for k in ("shape", "pattern", "background", "center", "scale", "rotation"):
        assert free.attrs[k] == fixed.attrs[k]


def test_bad_names_and_seeds_raise_config_error():
    with pytest.raises(ConfigError, match="valid shapes are: circle"):
        render_object(0, shape="blob")
    with pytest.raises(ConfigError, match="seed"):
        render_object(-1)
    with pytest.raises(ConfigError, match="style"):
        render_face(0, style="oil")


def test_any_size():
    s = render_object(5, size=128, shape="circle")
    assert s.image.shape == (128, 128, 3) and s.mask.shape == (128, 128)
    assert s.box == bbox(s.mask) and s.mask.sum() > 4 * render_object(5, shape="circle").mask.sum() * 0.8


# ---------------------------------------------------------------- ground truth


@pytest.mark.parametrize("style", list(STYLES))
def test_object_ground_truth_agrees_with_drawing(style):
    for seed in range(12):
        s = render_object(seed, style=style)
        m = s.mask
        assert m.dtype == bool and m.any() and s.box == bbox(m)
        x0, y0, x1, y1 = s.box
        assert m[y0:y1, x0:x1].sum() == m.sum() and 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        e = s.edges > 0
        assert s.edges.dtype == np.uint8 and set(np.unique(s.edges)) <= {0, 255}
        assert not (e & ~m).any()  # edges lie on the object
        assert not (inner_boundary(m) & ~e).any()  # the whole outline is an edge
        if s.attrs["pattern"] == "plain":
            assert np.array_equal(e, inner_boundary(m))  # a plain object's edges are exactly its outline


def test_photo_colour_inside_mask_is_the_named_colour_and_differs_from_background():
    for i, color in enumerate(COLORS):
        for seed in (i, i + 20):
            s = render_object(seed, color=color, pattern="plain", style="photo")
            core = s.mask & ~dilate(~s.mask, 2)
            med = np.median(s.image[core].astype(float), axis=0)
            assert np.abs(med - np.array(COLORS[color])).max() < 40, (color, med)
            ring = dilate(s.mask, 4) & ~dilate(s.mask, 2)
            diff = np.abs(s.image[core].astype(float).mean(0) - s.image[ring].astype(float).mean(0)).sum()
            outline = np.abs(s.image[inner_boundary(s.mask)].astype(float).mean(0) - s.image[ring].mean(0)).sum()
            assert max(diff, outline) > 30, (color, s.attrs["background"], diff, outline)


def test_pattern_is_visible_inside_the_object():
    plain = render_object(7, pattern="plain")
    striped = render_object(7, pattern="striped")
    assert np.array_equal(plain.mask, striped.mask)
    core = plain.mask & ~dilate(~plain.mask, 2)
    assert striped.image[core].astype(float).std(0).mean() > 3 * plain.image[core].astype(float).std(0).mean()
    assert (striped.edges > 0).sum() > (plain.edges > 0).sum()


# ---------------------------------------------------------------- captions and parser


def test_parse_prompt_reads_every_template_back():
    for seed in range(40):
        style = list(STYLES)[seed % len(STYLES)]
        for t in range(N_TEMPLATES):
            o = render_object(seed, style=style, template=t)
            p = parse_prompt(o.caption)
            assert p["kind"] == "object", o.caption
            for k in ("shape", "color", "pattern", "background", "style"):
                assert p[k] == o.attrs[k], (o.caption, k, p)
            f = render_face(seed, style=style, template=t)
            p = parse_prompt(f.caption)
            assert (p["kind"], p["cls"], p["background"], p["style"]) == (
                "face",
                f.attrs["cls"],
                f.attrs["background"],
                style,
            )
            sc = render_scene(seed, style=style, template=t)
            p = parse_prompt(sc.caption)
            assert p["kind"] == ("scene" if sc.attrs["n_objects"] > 1 else "object"), sc.caption
            got = [(o["shape"], o["color"], o["pattern"]) for o in p["objects"]]
            assert got == [(o["shape"], o["color"], o["pattern"]) for o in sc.attrs["objects"]], sc.caption
            sub = render_subject("zebra_heart", seed, style=style, template=t)
            p = parse_prompt(sub.caption)
            assert (p["shape"], p["color"], p["pattern"], p["background"]) == (
                "heart",
                None,
                None,
                sub.attrs["background"],
            )


def test_parse_user_prompts():
    p = parse_prompt("a photo of a red striped star on grass")
    assert (p["shape"], p["color"], p["pattern"], p["background"], p["style"]) == (
        "star",
        "red",
        "striped",
        "grass",
        "photo",
    )
    p = parse_prompt("A Watercolour painting of a blue heart with polka dots, in the snow")
    assert (p["shape"], p["color"], p["pattern"], p["background"], p["style"]) == (
        "heart",
        "blue",
        "dotted",
        "snow",
        "watercolor",
    )
    p = parse_prompt("red star")
    assert (p["shape"], p["color"], p["pattern"], p["background"], p["style"]) == ("star", "red", None, None, None)
    p = parse_prompt("pixel art of a smiling man at the beach")
    assert (p["kind"], p["cls"], p["background"], p["style"]) == ("face", "man", "sand", "pixel")
    p = parse_prompt("a sketch of a green square next to a checkered purple circle on bricks")
    assert [(o["shape"], o["color"], o["pattern"]) for o in p["objects"]] == [
        ("square", "green", None),
        ("circle", "purple", "checkered"),
    ]


def test_caption_templates_differ_and_token():
    attrs = render_object(2).attrs
    caps = {caption_for(attrs, t) for t in range(N_TEMPLATES)}
    assert len(caps) == N_TEMPLATES
    sub = render_subject("checker_star", 0, template=0)
    assert sub.caption.startswith("a photo of a star ") and "orange" not in sub.caption
    assert caption_for(sub.attrs, 0, token="sks").startswith("a photo of a sks star ")


def test_render_prompt_honours_it():
    s = render("a cartoon of a yellow dotted triangle on water", seed=3)
    a = s.attrs
    assert (a["shape"], a["color"], a["pattern"], a["background"], a["style"]) == (
        "triangle",
        "yellow",
        "dotted",
        "water",
        "cartoon",
    )
    assert render("a photo of a woman in the snow", 1).attrs["cls"] == "woman"
    sc = render("a red star and a blue striped circle on sand", 2)
    assert [(o["shape"], o["color"]) for o in sc.attrs["objects"]] == [("star", "red"), ("circle", "blue")]
    assert sc.attrs["objects"][1]["pattern"] == "striped"


# ---------------------------------------------------------------- subjects


def test_subject_spec_parse_and_errors():
    sp = SubjectSpec.parse("shape=star,pattern=checker,colors=orange+white")
    assert (sp.shape, sp.pattern, sp.colors, sp.decal) == ("star", "checkered", ("orange", "white"), None)
    assert SubjectSpec.parse(str(sp)) == sp
    assert SubjectSpec.parse("shape=heart, pattern=rings, colors=blue+yellow, decal=ring").decal == "ring"
    assert SubjectSpec.parse("checker_star") == subjects()["checker_star"]
    for bad, words in [
        ("shape=blob,pattern=striped,colors=red+blue", ["shape", "blob", "circle"]),
        ("shape=star,pattern=plaid,colors=red+blue", ["pattern", "plaid", "checkered"]),
        ("shape=star,pattern=striped,colors=red", ["two colours"]),
        ("shape=star,pattern=striped,colors=red+red", ["differ"]),
        ("shape=star,pattern=striped,colors=red+mauve", ["mauve", "purple"]),
        ("shape=star,pattern=striped,colors=red+blue,decal=moon", ["decal", "moon", "ring"]),
        ("shape=star,pattern=striped,colours=red+blue", ["key", "colours", "colors"]),
        ("shape=star,colors=red+blue", ["pattern"]),
        ("star", ["key=value"]),
    ]:
        with pytest.raises(ConfigError) as e:
            SubjectSpec.parse(bad)
        assert all(w in str(e.value) for w in words), (bad, str(e.value))


def test_builtin_subjects_render_in_two_colours_with_varied_poses():
    subs = subjects()
    assert len(subs) >= 6
    for name, sp in subs.items():
        a, b = render_subject(sp, 0), render_subject(name, 1)
        assert a.attrs["shape"] == sp.shape and a.attrs["colors"] == list(sp.colors)
        assert a.attrs["center"] != b.attrs["center"] and a.box == bbox(a.mask)
        core = a.mask & ~dilate(~a.mask, 1)
        pix = a.image[core].astype(float)
        for c in sp.colors:  # both colours are present
            assert (np.abs(pix - np.array(COLORS[c])).max(1) < 60).mean() > 0.08, (name, c)


# ---------------------------------------------------------------- faces


def test_faces_keypoints_box_and_identity():
    for seed in range(30):
        f = render_face(seed)
        k = f.keypoints
        assert k.shape == (5, 2) and k.dtype == np.float32
        x0, y0, x1, y1 = f.box
        assert f.box == bbox(f.mask)
        assert ((k[:, 0] >= x0) & (k[:, 0] < x1) & (k[:, 1] >= y0) & (k[:, 1] < y1)).all()
        assert k[0, 0] < k[1, 0] and k[3, 0] < k[4, 0]  # left = smaller x
        assert max(k[0, 1], k[1, 1]) < k[2, 1] < min(k[3, 1], k[4, 1])  # eyes above nose above mouth
        assert f.mask[int(k[2, 1]), int(k[2, 0])]
        assert f.attrs["cls"] in ("man", "woman", "child") and f.labels()["keypoints"] is not None
    a, b = render_face(1, identity=42), render_face(2, identity=42)
    assert a.attrs["features"] == b.attrs["features"] and a.attrs["center"] != b.attrs["center"]
    assert render_face(1, identity=43).attrs["features"] != a.attrs["features"]
    kid = render_face(1, identity=42, cls="child")
    assert kid.attrs["cls"] == "child" and kid.attrs["features"]["skin"] == a.attrs["features"]["skin"]
    assert "identity" not in kid.caption and kid.attrs["cls"] in kid.caption


# ---------------------------------------------------------------- scenes


def test_scene_objects_boxes_and_masks():
    counts = set()
    for seed in range(30):
        s = render_scene(seed)
        n = s.attrs["n_objects"]
        counts.add(n)
        assert len(s.objects) == n == len(s.attrs["objects"])
        union = np.zeros_like(s.mask)
        for o in s.objects:
            assert o["mask"].any() and o["box"] == bbox(o["mask"])
            assert not (union & o["mask"]).any()  # visible masks are disjoint
            union |= o["mask"]
        assert np.array_equal(union, s.mask) and s.box == bbox(s.mask)
        assert "mask" not in json.dumps(s.labels()["objects"])
    assert counts == {1, 2, 3}
    assert len(render_scene(0, n_objects=3).objects) == 3


# ---------------------------------------------------------------- datasets


def test_dataset_items_are_deterministic_and_in_range():
    for kind in ("objects", "faces", "scenes", "mixed"):
        ds = WorldDataset(kind=kind, seed=5, length=50, styles="all")
        a, b = ds[7], ds[7]
        x = a["pixel_values"]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
        assert torch.equal(x, b["pixel_values"]) and a["caption"] == b["caption"]
        assert a["mask"].shape == (1, 64, 64) and set(a["mask"].unique().tolist()) <= {0.0, 1.0}
        assert not torch.equal(x, ds[8]["pixel_values"]) and len(ds) == 50
    batch = WorldDataset.collate([ds[0], ds[1]])
    assert batch["pixel_values"].shape == (2, 3, 64, 64) and len(batch["attrs"]) == 2
    sub = WorldDataset(kind="subject", subject="zebra_heart", length=4)
    assert sub[0]["attrs"]["shape"] == "heart"
    with pytest.raises(ConfigError):
        WorldDataset(kind="subject")
    with pytest.raises(ConfigError):
        WorldDataset(kind="cats")


def test_holdout_combos_never_sampled():
    assert len(HOLDOUT_COMBOS) >= 3
    ds = WorldDataset(kind="objects", length=400, holdout=HOLDOUT_COMBOS)
    seen = {(a["shape"], a["color"]) for a in (ds.sample(i).attrs for i in range(0, 400, 2))}
    assert not seen & HOLDOUT_COMBOS
    free = {(a["shape"], a["color"]) for a in (render_object(i).attrs for i in range(400))}
    assert free & HOLDOUT_COMBOS  # without a holdout they do occur
    scenes = WorldDataset(kind="scenes", length=60, holdout=HOLDOUT_COMBOS)
    for i in range(60):
        assert not {(o["shape"], o["color"]) for o in scenes.sample(i).attrs["objects"]} & HOLDOUT_COMBOS
    red = WorldDataset(kind="objects", length=40, holdout=lambda a: a["color"] == "red")
    assert all(red.sample(i).attrs["color"] != "red" for i in range(40))


# ---------------------------------------------------------------- CLI and speed


def test_world_cli_writes_images_and_labels(tmp_path):
    from typer.testing import CliRunner

    from tailor.world.cli import world_app

    runner = CliRunner()
    out = tmp_path / "r"
    res = runner.invoke(
        world_app, ["render", "--prompt", "a photo of a red striped star on grass", "-n", "3", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    labels = json.loads((out / "labels.json").read_text())
    assert [x["file"] for x in labels] == ["000.png", "001.png", "002.png"] and (out / "grid.png").exists()
    assert all(x["attrs"]["shape"] == "star" and x["attrs"]["color"] == "red" for x in labels)
    res = runner.invoke(world_app, ["subject", "--name", "checker_star", "-n", "2", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0 and (tmp_path / "s" / "001.png").exists()
    res = runner.invoke(
        world_app, ["subject", "--spec", "shape=star,pattern=plaid,colors=red+blue", "--out", str(tmp_path / "x")]
    )
    assert isinstance(res.exception, ConfigError)  # left for the main CLI to print (exit 2)
    res = runner.invoke(world_app, ["subjects"])
    assert res.exit_code == 0 and "checker_star" in res.output


def test_speed_smoke(capsys):
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for kind, fn in RENDERERS.items():
            fn(0)
            t = time.perf_counter()
            for i in range(30):
                s = fn(i)
            ms = (time.perf_counter() - t) / 30 * 1000
            assert isinstance(s, Sample)
            with capsys.disabled():
                print(f"\nworld {kind}: {ms:.2f} ms / 64x64 image")
    finally:
        cv2.setNumThreads(threads)
