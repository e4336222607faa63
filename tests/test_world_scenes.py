"""World v2 ground truth: relation scenes, object pairs, stories, the render-kind CLI, COCO mAP and the relation
checker (issue 20)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tailor.errors import ConfigError, InputError
from tailor.eval.detection import average_precision, box_iou, coco_map
from tailor.eval.relations import relation_scores
from tailor.world.draw import bbox
from tailor.world.kinds import get_kind, kinds, label_map, parse_options
from tailor.world.pairs import describe, instance_attrs, render_pair
from tailor.world.relations import (
    MARGIN,
    RELATIONS,
    check_relations,
    parse_relations,
    relation_caption,
    relation_holds,
    render_relation_prompt,
    render_relation_scene,
)
from tailor.world.stories import render_story
from tailor.world.vocab import STYLES


# ------------------------------------------------------------------------------------------------- relations
@pytest.mark.parametrize("style", list(STYLES))
def test_relation_labels_are_consistent_and_relations_hold(style):
    for seed in range(12):
        s = render_relation_scene(seed, style=style)
        objs, rels = s.objects, s.attrs["relations"]
        assert 2 <= len(objs) <= 3 and rels
        assert len({(o["shape"], o["color"]) for o in objs}) == len(objs)  # each object named unambiguously
        union = np.zeros_like(s.mask)
        for o in objs:
            x0, y0, x1, y1 = o["box"]
            assert o["mask"].sum() > 20 and tuple(o["box"]) == bbox(o["mask"])  # the box is the mask's tight box
            assert not o["mask"][:y0].any() and not o["mask"][y1:].any()
            assert not o["mask"][:, :x0].any() and not o["mask"][:, x1:].any()
            assert not (union & o["mask"]).any()  # visible masks are disjoint
            union |= o["mask"]
        assert (union == s.mask).all()
        for r in rels:
            a, b = objs[r["subject"]]["box"], objs[r["object"]]["box"]
            assert relation_holds(r["relation"], a, b), (seed, s.caption, r)
            axis, sign = RELATIONS[r["relation"]]
            if axis < 2:  # with a margin, on the stated axis more than the other
                d = ((a[axis] + a[axis + 2]) - (b[axis] + b[axis + 2])) / 2 * sign
                assert d > MARGIN * 64 * 0.6, (seed, r, a, b)


def test_relation_caption_reads_back_for_every_template():
    for seed in range(15):
        s = render_relation_scene(seed)
        for t in range(3):
            p = parse_relations(relation_caption(s.attrs, t))
            want = [{k: o[k] for k in ("shape", "color", "pattern")} for o in s.attrs["objects"]]
            assert p["objects"] == want, relation_caption(s.attrs, t)
            assert p["relations"] == [(r["subject"], r["relation"], r["object"]) for r in s.attrs["relations"]]
            assert p["background"] == s.attrs["background"]


def test_relation_prompt_is_honoured():
    for seed in range(10):
        s = render_relation_prompt("a red star left of a blue circle and a green square above the blue circle", seed)
        (a, b, c) = s.objects
        assert (a["shape"], a["color"], b["shape"], b["color"], c["shape"], c["color"]) == (
            "star", "red", "circle", "blue", "square", "green"
        )  # fmt: skip
        assert relation_holds("left of", a["box"], b["box"]) and relation_holds("above", c["box"], b["box"])
    s = render_relation_prompt("a big pink heart bigger than a yellow cross on snow, sketch", 3)
    assert s.attrs["style"] == "sketch" and s.attrs["background"] == "snow"
    assert relation_holds("bigger than", s.objects[0]["box"], s.objects[1]["box"])


@pytest.mark.parametrize(
    "relations",
    [
        [(0, "above", 1), (2, "below", 1)],
        [(0, "left of", 1), (1, "left of", 2)],
        [(0, "bigger than", 1), (1, "bigger than", 2)],
        [(0, "right of", 1), (2, "smaller than", 0)],
    ],
)
def test_three_object_chains_fit(relations):
    for seed in range(4):
        s = render_relation_scene(seed, relations=relations)
        for i, rel, j in relations:
            assert relation_holds(rel, s.objects[i]["box"], s.objects[j]["box"])


def test_impossible_relations_are_refused():
    with pytest.raises(ConfigError, match="cannot be left of itself"):
        check_relations([(0, "left of", 0)], 2)
    with pytest.raises(ConfigError, match="contradict"):
        check_relations([(0, "left of", 1), (0, "right of", 1)], 2)
    with pytest.raises(ConfigError, match="contradict"):
        check_relations([(0, "above", 1), (1, "above", 2), (2, "above", 0)], 3)
    with pytest.raises(ConfigError, match="contradict"):
        check_relations([(0, "bigger than", 1), (1, "bigger than", 0)], 2)
    with pytest.raises(ConfigError, match="valid relations are: left of"):
        check_relations([(0, "behind", 1)], 2)
    with pytest.raises(ConfigError, match="numbered 0 to 1"):
        check_relations([(0, "above", 2)], 2)
    assert check_relations([(0, "to the left of", 1), (1, "under", 0)], 2) == [(0, "left of", 1), (1, "below", 0)]
    with pytest.raises(ConfigError, match="2 to 3 objects"):
        render_relation_scene(0, n_objects=4)
    with pytest.raises(ConfigError, match="2 to 3"):
        render_relation_prompt("a star left of a circle above a heart right of a cross", 0)
    with pytest.raises(ConfigError, match="left of itself"):
        render_relation_prompt("a red star left of the red star", 0)
    with pytest.raises(ConfigError, match="both red stars"):
        render_relation_scene(0, objects=[{"shape": "star", "color": "red"}, {"shape": "star", "color": "red"}])
    with pytest.raises(InputError, match="an object on each side"):
        parse_relations("left of a star")


@pytest.mark.parametrize(
    "render",
    [
        lambda seed: [render_relation_scene(seed, style="watercolor")],
        lambda seed: render_pair(seed, views=3),
        lambda seed: render_story(seed, frames=3),
        lambda seed: render_story(seed, frames=3, subject="face"),
    ],
    ids=["relation", "pair", "story", "face-story"],
)
def test_same_seed_same_bytes_other_seed_differs(render):
    a, b, c = render(5), render(5), render(6)
    assert all(x.image.tobytes() == y.image.tobytes() and x.caption == y.caption for x, y in zip(a, b))
    assert all(json.dumps(x.labels()) == json.dumps(y.labels()) for x, y in zip(a, b))
    assert any(x.image.tobytes() != y.image.tobytes() for x, y in zip(a, c))


# ------------------------------------------------------------------------------------------------- pairs, stories
def test_pair_views_share_the_instance_and_differ_in_everything_else():
    for seed in range(6):
        views = render_pair(seed, views=4)
        inst = {k: views[0].attrs[k] for k in ("instance_id", "shape", "colors", "pattern", "decal")}
        assert inst == instance_attrs(inst["instance_id"])
        for v, s in enumerate(views):
            assert {k: s.attrs[k] for k in inst} == inst and s.attrs["view"] == v
            assert describe(inst) in s.caption
            o = s.objects[0]
            assert tuple(o["box"]) == bbox(o["mask"]) == s.box and o["mask"].sum() > 30
        for key in ("background", "style", "scale", "rotation"):
            assert len({json.dumps(s.attrs[key]) for s in views}) == 4, key
        assert len({s.attrs["light"]["gain"] for s in views}) == 4
        assert views[0].attrs["style"] == "photo"
    assert render_pair(0, instance=77)[0].attrs["instance_id"] == 77
    with pytest.raises(ConfigError, match="--views"):
        render_pair(0, views=1)
    with pytest.raises(ConfigError, match="--instance"):
        render_pair(0, instance=-1)


def test_story_keeps_its_subject_and_follows_each_frame_prompt():
    for seed in range(4):
        frames = render_story(seed, frames=6)
        keys = ("instance_id", "shape", "colors", "pattern", "decal", "style")
        assert len({json.dumps({k: f.attrs[k] for k in keys}) for f in frames}) == 1
        for a, b in zip(frames, frames[1:]):
            assert a.attrs["background"] != b.attrs["background"] and a.attrs["action"] != b.attrs["action"]
        for f in frames:
            assert f.attrs["action"] in f.caption and describe(f.attrs) in f.caption
            side, cy = f.image.shape[0], (f.box[1] + f.box[3]) / 2
            if f.attrs["action"] == "jumping":
                assert cy < side * 0.45
            if f.attrs["action"] == "resting":
                assert cy > side * 0.55
        faces = render_story(seed, frames=5, subject="face", cls="woman")
        assert len({(f.attrs["identity"], f.attrs["cls"], f.attrs["shirt"]) for f in faces}) == 1
        assert all("the woman" in f.caption and f.keypoints.shape == (5, 2) for f in faces)
    with pytest.raises(ConfigError, match="--frames"):
        render_story(0, frames=0)
    with pytest.raises(ConfigError, match="--subject"):
        render_story(0, subject="cat")
    with pytest.raises(ConfigError, match="--subject face"):
        render_story(0, identity=3)


# ------------------------------------------------------------------------------------------------- kinds, CLI
def test_kinds_register_and_parse_their_options():
    assert {"pair", "relation", "story"} <= set(kinds())
    assert parse_options(get_kind("pair"), ["--views", "3", "--instance=5"]) == {
        "views": 3,
        "instance": 5,
        "style": None,
    }
    with pytest.raises(ConfigError, match="--views, --instance, --style"):
        parse_options(get_kind("pair"), ["--frames", "3"])
    with pytest.raises(ConfigError, match="integer"):
        parse_options(get_kind("story"), ["--frames", "x"])
    with pytest.raises(ConfigError, match="valid kinds are: .*pair"):
        get_kind("lite")


def test_world_dataset_reads_render_kinds():
    from tailor.world.dataset import WorldDataset
    from tailor.world.pairs import PairDataset

    for kind in ("relation", "pair", "story"):
        d = WorldDataset(kind=kind, styles="all", length=4)
        item = d[1]
        assert item["pixel_values"].shape == (3, 64, 64) and item["caption"] == d.sample(1).caption
    item = PairDataset(length=3)[0]
    assert item["reference"]["pixel_values"].shape == (3, 64, 64) and item["reference"]["box"].shape == (4,)
    assert item["reference"]["caption"] != item["target"]["caption"]


def _cli(argv):
    from tailor.cli import main

    return main(argv)


def test_render_kinds_write_images_masks_and_labels(tmp_path, capsys):
    out = tmp_path / "rel"
    assert _cli(["world", "render", "--kind", "relation", "-n", "3", "--objects", "3", "--out", str(out)]) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert [r["file"] for r in labels] == ["000.png", "001.png", "002.png"] and (out / "grid.png").is_file()
    for r in labels:
        lm = np.asarray(Image.open(out / r["mask_file"]))
        assert len(r["objects"]) == 3 and lm.max() == 3
        for k, o in enumerate(r["objects"], 1):
            assert list(bbox(lm == k)) == o["box"]
        for rel in r["attrs"]["relations"]:
            assert relation_holds(
                rel["relation"], r["objects"][rel["subject"]]["box"], r["objects"][rel["object"]]["box"]
            )
    out = tmp_path / "pair"
    assert _cli(["world", "render", "--kind", "pair", "--views", "3", "-n", "2", "--out", str(out)]) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert [(r["file"], r["group"], r["view"]) for r in labels][:4] == [
        ("000_0.png", 0, 0), ("000_1.png", 0, 1), ("000_2.png", 0, 2), ("001_0.png", 1, 0)
    ]  # fmt: skip
    assert len({r["attrs"]["instance_id"] for r in labels[:3]}) == 1
    out = tmp_path / "story"
    assert _cli(["world", "render", "--kind", "story", "--frames", "3", "-n", "2", "--out", str(out)]) == 0
    prompts = (out / "001" / "prompts.txt").read_text().splitlines()
    frames = json.loads((out / "001" / "labels.json").read_text())
    assert len(prompts) == 3 and [f["caption"] for f in frames["frames"]] == prompts
    assert (out / "001" / "02.png").is_file() and frames["subject"] == "object"
    assert json.loads((out / "labels.json").read_text())[1]["prompts"] == prompts
    item = label_map(render_pair(0)[0])
    assert item.max() == 1


@pytest.mark.parametrize(
    ("argv", "culprit"),
    [
        (["--kind", "lights"], "--kind"),
        (["--kind", "relation", "--objects", "4"], "--objects 4"),
        (["--kind", "relation", "--relation", "0 left of 0"], "left of itself"),
        (["--kind", "relation", "--relation", "0 left of 1; 1 left of 0"], "contradict"),
        (["--kind", "relation", "--relation", "0 behind 1"], "valid relations are"),
        (["--kind", "relation", "--prompt", "a star left of a circle, a heart above a cross"], "at most 3"),
        (["--kind", "pair", "--views", "0"], "--views"),
        (["--kind", "pair", "--frames", "2"], "--frames"),
        (["--kind", "story", "--subject", "dog"], "--subject"),
        (["--kind", "pair", "--prompt", "a star"], "--prompt"),
        (["--views", "2"], "--views"),
        ([], "--prompt"),
    ],
)
def test_render_kind_bad_input(argv, culprit, tmp_path, capsys):
    out = tmp_path / "out"
    code = _cli(["world", "render", *argv, "-n", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err, err
    assert culprit in err or culprit.replace("at most 3", "2 to 3") in err, err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------- mAP
def _random_case(rng, n_images=12, n_classes=3):
    gts, dets = [], []
    for _ in range(n_images):
        g = []
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 50, 2)
            w, h = rng.uniform(4, 20, 2)
            g.append({"box": [x, y, x + w, y + h], "class": int(rng.integers(n_classes))})
        d = []
        for o in g:
            if rng.random() < 0.8:  # a jittered detection of a real object
                box = np.array(o["box"]) + rng.normal(0, 2.0, 4)
                cls = o["class"] if rng.random() < 0.9 else int(rng.integers(n_classes))
                d.append({"box": box.tolist(), "class": cls, "score": float(rng.random())})
        for _ in range(rng.integers(0, 3)):  # false positives
            x, y = rng.uniform(0, 50, 2)
            d.append(
                {"box": [x, y, x + 10, y + 10], "class": int(rng.integers(n_classes)), "score": float(rng.random())}
            )
        gts.append(g)
        dets.append(d)
    return gts, dets


def _pycocotools_map(gts, dets):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = [{"id": i + 1, "width": 100, "height": 100} for i in range(len(gts))]
    anns, k = [], 0
    for i, g in enumerate(gts):
        for o in g:
            x0, y0, x1, y1 = o["box"]
            k += 1
            anns.append({"id": k, "image_id": i + 1, "category_id": o["class"] + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})  # fmt: skip
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c + 1} for c in range(3)]}
    gt.createIndex()
    res = [
        {"image_id": i + 1, "category_id": o["class"] + 1, "score": o["score"],
         "bbox": [o["box"][0], o["box"][1], o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]]}
        for i, d in enumerate(dets) for o in d
    ]  # fmt: skip
    ev = COCOeval(gt, gt.loadRes(res), "bbox")
    ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
    ev.evaluate()
    ev.accumulate()
    p = ev.eval["precision"][:, :, :, 0, -1]  # T x R x K, area all, maxDets 100
    valid = lambda a: float(np.mean(a[a > -1]))  # noqa: E731
    return valid(p), valid(p[0]), valid(p[5])


@pytest.mark.parametrize("seed", range(6))
def test_map_matches_pycocotools(seed, capsys):
    pytest.importorskip("pycocotools")
    gts, dets = _random_case(np.random.default_rng(seed))
    ours = coco_map(gts, dets)
    ref = _pycocotools_map(gts, dets)
    capsys.readouterr()  # pycocotools prints
    assert ours["map"] == pytest.approx(ref[0], abs=1e-9)
    assert ours["map50"] == pytest.approx(ref[1], abs=1e-9)
    assert ours["map75"] == pytest.approx(ref[2], abs=1e-9)


def test_map_hand_computed_cases():
    box = [10, 10, 30, 30]
    gt = [[{"box": box, "class": "star"}]]
    assert coco_map(gt, [[{"box": box, "class": "star", "score": 0.9}]])["map"] == pytest.approx(1.0)
    # IoU 0.6: a hit at thresholds .50, .55, .60 only -> 3/10
    shifted = [10, 10, 30, 30 * 0.6 + 10 * 0.4]  # height 12 of 20 inside: IoU 12/20
    assert box_iou([shifted], [box])[0, 0] == pytest.approx(0.6)
    assert coco_map(gt, [[{"box": shifted, "class": "star", "score": 0.9}]])["map"] == pytest.approx(0.3)
    # a false positive ranked above the hit: precision 1/2 at recall 1 -> AP 0.5
    fp = {"box": [40, 40, 50, 50], "class": "star", "score": 0.95}
    assert coco_map(gt, [[fp, {"box": box, "class": "star", "score": 0.9}]])["map50"] == pytest.approx(0.5)
    # ranked below: precision 1 at recall 1 -> AP 1
    assert coco_map(gt, [[{**fp, "score": 0.1}, {"box": box, "class": "star", "score": 0.9}]])[
        "map50"
    ] == pytest.approx(1.0)
    # the wrong class finds nothing; a second detection of the same object is a false positive
    assert coco_map(gt, [[{"box": box, "class": "circle", "score": 0.9}]])["map"] == 0.0
    two = [{"box": box, "class": "star", "score": 0.9}, {"box": box, "class": "star", "score": 0.8}]
    assert coco_map(gt, [two])["map"] == pytest.approx(1.0)  # the duplicate comes after recall 1 is reached
    # two objects, one found: recall stops at 0.5 -> 51 of 101 recall points
    gt2 = [[{"box": box, "class": "star"}, {"box": [40, 40, 60, 60], "class": "star"}]]
    assert coco_map(gt2, [[{"box": box, "class": "star", "score": 0.9}]])["map50"] == pytest.approx(51 / 101)
    assert average_precision(np.array([], bool), np.array([]), 3) == 0.0


# ------------------------------------------------------------------------------------------------- relation checker
def test_relation_checker_on_ground_truth_boxes_and_swaps():
    samples = [render_relation_scene(s) for s in range(20)]
    exps = [
        {
            "objects": [{"shape": o["shape"], "color": o["color"]} for o in s.objects],
            "relations": [(r["subject"], r["relation"], r["object"]) for r in s.attrs["relations"]],
        }
        for s in samples
    ]
    perfect = [
        [{"box": o["box"], "class": o["shape"], "color": o["color"], "score": 1.0} for o in s.objects] for s in samples
    ]
    r = relation_scores(exps, perfect)
    assert r["object_accuracy"] == r["relation_accuracy"] == r["relation_accuracy_given_objects"] == 1.0
    swapped = [
        [{**d[1], "box": d[0]["box"]}, {**d[0], "box": d[1]["box"]}, *d[2:]] for d in perfect
    ]  # objects 0 and 1 trade places
    r = relation_scores([{**e, "relations": e["relations"][:1]} for e in exps], swapped)
    assert r["object_accuracy"] == 1.0 and r["relation_accuracy"] == 0.0
    wrong_color = [[{**d, "color": "white" if d["color"] != "white" else "black"} for d in ds] for ds in perfect]
    r = relation_scores(exps, wrong_color)
    assert r["object_accuracy"] == 0.0 and r["relation_accuracy"] == 0.0
    assert r["relation_accuracy_given_objects"] is None  # no relation with both objects found: nothing to judge
    assert relation_holds("left of", [0, 0, 10, 10], [20, 0, 30, 10])
    assert not relation_holds("above", [0, 20, 10, 30], [0, 0, 10, 10]) and relation_holds(
        "below", [0, 20, 10, 30], [0, 0, 10, 10]
    )
    assert relation_holds("bigger than", [0, 0, 20, 20], [0, 0, 10, 10])


# ------------------------------------------------------------------------------------------------- detector oracle
def test_detector_decodes_a_peak_into_its_box():
    import torch

    from tailor.world.zoo.detector import Detector

    det = Detector(["circle", "star"], ["red", "blue", "green"], width=4)
    heat = torch.full((1, 2, 16, 16), -10.0)
    heat[0, 1, 5, 7] = 5.0
    wh, off, col = torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16), torch.zeros(1, 3, 16, 16)
    wh[0, :, 5, 7] = torch.tensor([4.0, 2.0])
    off[0, :, 5, 7] = torch.tensor([0.5, 0.25])
    col[0, 2, 5, 7] = 3.0
    det.forward = lambda x: {"heat": heat, "wh": wh, "offset": off, "color": col}
    (d,) = det.detect(torch.zeros(1, 3, 64, 64))[0]
    assert (
        d["class"] == "star"
        and d["color"] == "green"
        and d["score"] == pytest.approx(float(torch.sigmoid(torch.tensor(5.0))), abs=1e-5)
    )
    assert d["box"] == [22.0, 17.0, 38.0, 25.0]  # centre ((7.5, 5.25) cells) * 4, size (16, 8) pixels
    (d,) = det.detect(torch.zeros(1, 3, 128, 128))[0]
    assert d["box"] == [44.0, 34.0, 76.0, 50.0]  # boxes come back in the input's pixels


def test_detector_targets_put_the_peak_at_the_box_centre():
    zoo_detector = pytest.importorskip("zoo.detector")
    heat, reg = zoo_detector.targets([[{"box": [20, 12, 36, 28], "class": "star", "color": "blue"}]])
    c = zoo_detector.CLASSES.index("star")
    assert heat.shape == (1, 8, 16, 16) and heat[0, c, 5, 7] == 1.0 and heat[0, c].argmax() == 5 * 16 + 7
    assert (heat[0, :c] == 0).all() and reg == [[(5, 7, 4.0, 4.0, 0.0, 0.0, zoo_detector.COLOR_NAMES.index("blue"))]]


def _detector_shipped() -> bool:
    from tailor.world.zoo import WEIGHTS

    return (WEIGHTS / "oracles" / "detector.safetensors").is_file()


@pytest.mark.skipif(not _detector_shipped(), reason="the detector oracle is not shipped in this checkout")
def test_eval_relations_on_fresh_renders_and_prompts(tmp_path, capsys):
    rel = tmp_path / "rel"
    assert _cli(["world", "render", "--kind", "relation", "-n", "24", "--seed", "11", "--out", str(rel)]) == 0
    capsys.readouterr()
    assert _cli(["eval", "relations", "--images", str(rel), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["source"] == "labels.json" and r["images"] == 24
    assert r["object_accuracy"] >= 0.8 and r["relation_accuracy"] >= 0.8 and r["map50"] >= 0.8, r
    prompts = tmp_path / "prompts.txt"  # the same images judged against prompts that swap every relation
    from tailor.world.relations import INVERSE

    rows = json.loads((rel / "labels.json").read_text())
    lines = []
    for row in rows:
        o, t = row["objects"], row["attrs"]["relations"][0]
        a, b = o[t["subject"]], o[t["object"]]
        lines.append(f"a {a['color']} {a['shape']} {INVERSE[t['relation']]} a {b['color']} {b['shape']}")
    prompts.write_text("\n".join(lines) + "\n")
    assert _cli(["eval", "relations", "--images", str(rel), "--prompts", str(prompts), "--json"]) == 0
    swapped = json.loads(capsys.readouterr().out)
    assert swapped["source"] == "prompts" and swapped["object_accuracy"] >= 0.8
    assert swapped["relation_accuracy"] <= 0.2, swapped
    pair = tmp_path / "pair"
    assert _cli(["world", "render", "--kind", "pair", "-n", "1", "--out", str(pair)]) == 0
    capsys.readouterr()
    assert _cli(["eval", "relations", "--images", str(pair)]) == 2
    err = capsys.readouterr().err
    assert "no relation labels" in err and "--prompts" in err
