"""tailor bench twosubjects: leakage scoring on renders with known leakage, the declared rows, the costs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tailor.errors import InputError


def swapped(j: int, attrs: tuple[str, ...]):
    """Case ``j``'s reference rendered again (same layout) with ``attrs`` swapped between the two objects."""
    from tailor.bench import twosubjects as B
    from tailor.world.relations import render_relation_scene

    objs = B.case_objects(j)
    for k in attrs:
        objs[0][k], objs[1][k] = objs[1][k], objs[0][k]
    return Image.fromarray(render_relation_scene(B.TWO_SEED + j, objects=objs, n_objects=2, size=64).image)


def test_leakage_counts_own_and_other():
    from tailor.bench import twosubjects as B

    truth = [{"shape": "star", "color": "red", "pattern": "plain"}, {"shape": "heart", "color": "blue",
                                                                     "pattern": "dotted"}]  # fmt: skip
    reads = [
        [{"color": "red", "pattern": "plain"}, {"color": "blue", "pattern": "dotted"}],  # both own
        [{"color": "blue", "pattern": "plain"}, None],  # star wears the heart's colour; heart missing
        [{"color": "green", "pattern": "dotted"}, {"color": "red", "pattern": "striped"}],  # 1 pattern, 1 colour leak
    ]
    out = B.leakage(reads, [truth] * 3)
    assert out["found"] == pytest.approx(5 / 6)
    assert out["color_own"] == pytest.approx(2 / 5) and out["color_leak"] == pytest.approx(2 / 5)
    assert out["pattern_own"] == pytest.approx(3 / 5) and out["pattern_leak"] == pytest.approx(1 / 5)
    assert out["any_leak"] == pytest.approx(3 / 5) and out["both_own"] == pytest.approx(1 / 3)


def test_leakage_scoring_sees_swapped_colours_and_patterns():
    """The oracles read each object's own colour / pattern on the references, and the other object's when the two
    are swapped in the same layout."""
    from tailor.bench import twosubjects as B

    cases = range(8)
    truths = [B.subjects_of(B.held_out_case(j, 64)[0]) for j in cases]
    shapes = [[t["shape"] for t in tr] for tr in truths]
    scores = {}
    for name, attrs in (("none", ()), ("color", ("color",)), ("pattern", ("pattern",))):
        images = [swapped(j, attrs) for j in cases]
        scores[name] = B.leakage(B.read_subjects(images, shapes), truths)
    clean, col, pat = scores["none"], scores["color"], scores["pattern"]
    assert clean["found"] >= 0.9 and clean["color_leak"] == 0.0 and clean["color_own"] >= 0.9
    assert clean["pattern_own"] >= 0.8 and clean["pattern_leak"] <= 0.1
    assert col["found"] >= 0.9 and col["color_leak"] >= 0.8 and col["color_own"] <= 0.1
    assert col["pattern_own"] >= 0.7  # only the colours moved
    assert pat["pattern_leak"] >= 0.6 and pat["color_own"] >= 0.9 and pat["color_leak"] == 0.0
    assert col["any_leak"] > clean["any_leak"] + 0.5 and clean["both_own"] > col["both_own"]


def test_twosubjects_bench_quick(tmp_path):
    from tailor.bench import twosubjects as B

    s = B.Settings(out=tmp_path, rows=("ip-adapter", "character-adapter", "character-adapter-seg-old"), **B.QUICK)
    result = B.run(s)
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == ["none", "ip-adapter", "character-adapter", "character-adapter-seg-old", "reference"]
    # the first segmenter cuts neither reference: the row is refused on both, as the CLI refuses them
    old = rows["character-adapter-seg-old"]
    assert old["refs_cut"] == 0.0 and old["found"] is None and old.get("step_seconds") is None
    assert rows["character-adapter"]["refs_cut"] == 1.0 and "refs_cut" not in rows["ip-adapter"]
    assert not (tmp_path / "images" / "character-adapter-seg-old").exists()
    assert rows["reference"]["found"] == 1.0 and rows["reference"]["color_leak"] == 0.0
    assert rows["none"]["step_cost"] == 1.0 and rows["character-adapter"]["step_cost"] > 0
    ip = np.asarray(Image.open(tmp_path / "images" / "ip-adapter" / "case_00" / "img_000.png"))
    ca = np.asarray(Image.open(tmp_path / "images" / "character-adapter" / "case_00" / "img_000.png"))
    assert not np.array_equal(ip, ca)  # region tokens gated by words, not the whole image's tokens
    acc = result["segmenter_pixel_accuracy_on_references"]
    assert set(acc) == {"segmenter", "segmenter_scenes"} and acc["segmenter_scenes"] > 0.5 > acc["segmenter"]
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "grid.png").is_file() and len(result["cases"]) == 2


def test_segmenter_rows_cut_regions_as_the_method_does():
    """A row naming a segmenter gets the method's own regions for the two shape words; other Character-Adapter rows
    the exact masks; a reference the segmenter cannot cut is refused (empty)."""
    from tailor.bench import twosubjects as B

    declared = B.twosubject_rows()
    sample, _ = B.held_out_case(0, 64)
    s = B.Settings()
    methods = {k: B.load_row(k, *declared[k], s) for k in ("character-adapter", "character-adapter-seg",
                                                             "character-adapter-seg-old", "ip-adapter")}  # fmt: skip
    exact = B.cut_regions(methods["character-adapter"], declared["character-adapter"][1], sample)
    assert all((exact[o["shape"]] == o["mask"]).all() for o in sample.objects)
    cut = B.cut_regions(methods["character-adapter-seg"], declared["character-adapter-seg"][1], sample)
    assert set(cut) == {o["shape"] for o in sample.objects}
    for o in sample.objects:
        assert (cut[o["shape"]] & o["mask"]).sum() / (cut[o["shape"]] | o["mask"]).sum() > 0.5
    assert B.cut_regions(methods["character-adapter-seg-old"], declared["character-adapter-seg-old"][1], sample) == {}
    assert B.cut_regions(methods["ip-adapter"], declared["ip-adapter"][1], sample) is None


def test_twosubjects_bench_refuses_undeclared_rows(tmp_path):
    from tailor.bench import twosubjects as B

    with pytest.raises(InputError, match="not declared"):
        B.run(B.Settings(out=tmp_path, rows=("nope",)))
    with pytest.raises(InputError, match="--weight"):
        B.run(B.Settings(out=tmp_path, weight=0.0))
    with pytest.raises(InputError, match="--phrasing"):
        B.run(B.Settings(out=tmp_path, phrasing="or"))


def test_prompts_name_the_shapes_only():
    from tailor.bench import twosubjects as B
    from tailor.world.captions import parse_prompt

    for j in range(4):
        sample, prompt = B.held_out_case(j, 64, "relation")
        rel = sample.attrs["relations"][0]
        assert rel["relation"] in prompt and all(o["shape"] in prompt for o in sample.objects)
        assert not any(o[k] in prompt.split() for o in sample.objects for k in ("color", "pattern"))
        assert parse_prompt(B.held_out_case(j, 64)[1])["background"] == sample.attrs["background"]
