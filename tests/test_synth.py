"""``tailor synth``: box statistics and layouts, the foreground filter, the COCO output, resume, bad input, and the
2-process ``accelerate launch`` run whose merged output equals a one-process run's byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tailor.cli import main
from tailor.synth.stats import fit_stats

from helpers import accelerate_launch

FAST = ["--steps", "2", "--filter-steps", "5", "--base", "tiny"]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth") / "real"
    assert main(["world", "render", "--kind", "relation", "--style", "cartoon", "-n", "24", "--seed", "3",
                 "--out", str(folder)]) == 0  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    """A layout ControlNet for the tiny base (random weights: the plumbing, not the pictures, is under test)."""
    import tailor
    from tailor.methods.controlnet import ControlNetMethod

    method = ControlNetMethod(condition="layout")
    tailor.Pipeline(tailor.tiny_components(seed=0)).attach(method)
    out = tmp_path_factory.mktemp("cn")
    method.save(out)
    return out


def test_layouts_follow_the_real_statistics(real):
    from tailor.world.relations import parse_relations, relation_holds
    from tailor.world.vocab import make_rng

    stats = fit_stats(real)
    labels = json.loads((real / "labels.json").read_text())
    objs = [o for r in labels for o in r["objects"]]
    assert len(stats.rows) == len(objs) and set(stats.styles) == {"cartoon"}
    assert set(stats.classes) == {o["shape"] for o in objs}
    layouts = [stats.sample(make_rng(1, i)) for i in range(300)]
    assert stats.sample(make_rng(1, 5)) == layouts[5]  # a function of the rng's seed
    for lay in layouts[:60]:
        boxes = [o["box"] for o in lay.objects]
        assert all(0 <= b[0] < b[2] <= 64 and 0 <= b[1] < b[3] <= 64 for b in boxes)
        assert not any(min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])
                       for k, a in enumerate(boxes) for b in boxes[k + 1:])  # fmt: skip
        parsed = parse_relations(lay.caption)  # the caption names the layout's objects and true relations
        assert [o["shape"] for o in parsed["objects"]] == [o["class"] for o in lay.objects]
        for i, rel, j in parsed["relations"]:
            assert relation_holds(rel, boxes[i], boxes[j])
    # the sampled counts and box areas match the real ones (means within 15%)
    real_counts = np.mean([len(r["objects"]) for r in labels])
    assert np.mean([len(lay.objects) for lay in layouts]) == pytest.approx(real_counts, rel=0.15)
    real_area = np.mean([(o["box"][2] - o["box"][0]) * (o["box"][3] - o["box"][1]) for o in objs])
    area = np.mean([(b[2] - b[0]) * (b[3] - b[1]) for lay in layouts for b in [o["box"] for o in lay.objects]])
    assert area == pytest.approx(real_area, rel=0.15)


def test_filter_passes_objects_and_fails_background(real):
    from tailor.synth.filter import box_scores, train_classifier
    from tailor.synth.run import _real_set

    images, objects = _real_set(real)
    classes = sorted({o["class"] for objs in objects for o in objs})
    model = train_classifier(images, objects, classes, steps=150)
    good = [s for img, objs in zip(images, objects) for s in box_scores(model, img, objs)]
    # the same boxes on an empty background image of the set: nothing of the class is there
    blank = np.full_like(images[0], 0) + np.median(images[0].reshape(-1, 3), 0).astype(np.uint8)
    bad = [s for objs in objects for s in box_scores(model, blank, objs)]
    assert np.mean(np.array(good) >= 0.5) > 0.7 and np.mean(np.array(bad) >= 0.5) < 0.2


def _files(folder: Path) -> dict[str, bytes]:
    skip = {"tailor.json", "filter.safetensors"}  # the settings name the folder; the filter is checked by scores
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in skip and not p.name.startswith(".")}  # fmt: skip


def test_synth_writes_coco_and_resumes(real, control, tmp_path):
    from tailor.detect import read_coco

    out = tmp_path / "syn"
    args = ["synth", "--real", str(real), "--n", "5", "--out", str(out), "--control", str(control), *FAST]
    assert main([*args, "--threshold", "0"]) == 0
    coco = read_coco(out)
    assert len(coco) == 5 and sum(map(len, coco.objects)) == json.loads((out / "summary.json").read_text())["objects"]
    first = _files(out)
    for name in ("records/000003.json", "images/000003.png", "annotations.json"):
        (out / name).unlink()
    assert main([*args, "--threshold", "0"]) == 0  # only candidate 3 is made again
    assert _files(out) == first
    # another setting in the same folder is refused: one sentence, exit 2, nothing changed
    assert main([*args, "--threshold", "0", "--seed", "1"]) == 2
    assert _files(out) == first


@pytest.mark.parametrize(
    "change,message",
    [
        ({"--real": "labels-less"}, "has no labels.json"),
        ({"--n": "0"}, "--n must be at least 1"),
        ({"--control": "canny"}, "is not a layout ControlNet"),
        ({"--threshold": "1.5"}, "--threshold must lie in"),
    ],
)
def test_bad_input(real, control, tmp_path, capsys, change, message):
    opts = {"--real": str(real), "--n": "2", "--out": str(tmp_path / "o"), "--control": str(control)}
    if change.get("--real") == "labels-less":
        (tmp_path / "empty").mkdir()
        change = {"--real": str(tmp_path / "empty")}
    opts |= change
    code = main(["synth", *[x for kv in opts.items() for x in kv], "--steps", "2", "--filter-steps", "5"])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o" / "annotations.json").exists()


def test_two_processes_merge_to_the_one_process_output(real, control, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    args = ["synth", "--real", str(real), "--n", "5", "--control", str(control), *FAST, "--threshold", "0.2"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*args, "--out", str(one)]) == 0
    launch = accelerate_launch(2)
    proc = subprocess.run([*launch, "-m", "tailor", *args, "--out", str(two)], env=env, capture_output=True,
                          text=True, timeout=400)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "process 1/2" in proc.stdout + proc.stderr  # the work really was split
    a, b = _files(one), _files(two)
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a)
