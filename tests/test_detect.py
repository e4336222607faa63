"""``tailor detect``: COCO folders (checks, round trip), CenterNet targets, training that learns, resume, eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tailor.cli import main
from tailor.detect import DetectTrainConfig, evaluate_detector, read_coco, train_detector, write_coco
from tailor.detect.loss import centernet_targets, focal_loss
from tailor.errors import InputError

COLORS = {"square": (230, 40, 40), "bar": (40, 80, 230)}


def make_set(folder, n=24, size=32, seed=0):
    """Images with 1-2 filled rectangles: red squares and blue horizontal bars, on grey."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images, objects = [], []
    for i in range(n):
        img = np.full((size, size, 3), 110, np.uint8)
        objs = []
        for cls in rng.permutation(list(COLORS))[: 1 + int(rng.integers(2))]:
            w, h = (8, 8) if cls == "square" else (14, 5)
            for _ in range(20):
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                if all(x >= o["box"][2] or x + w <= o["box"][0] or y >= o["box"][3] or y + h <= o["box"][1]
                       for o in objs):  # fmt: skip
                    break
            img[y : y + h, x : x + w] = COLORS[cls]
            objs.append({"box": [x, y, x + w, y + h], "class": str(cls)})
        Image.fromarray(img).save(folder / f"{i:03d}.png")
        images.append({"file_name": f"{i:03d}.png", "width": size, "height": size})
        objects.append(objs)
    write_coco(folder / "annotations.json", images, objects, list(COLORS))
    return objects


def test_coco_round_trip(tmp_path):
    objects = make_set(tmp_path / "d", n=4)
    data = read_coco(tmp_path / "d")
    assert data.classes == list(COLORS)
    assert data.objects == [[{"box": [float(v) for v in o["box"]], "class": o["class"]} for o in objs]
                            for objs in objects]  # fmt: skip
    raw = json.loads((tmp_path / "d" / "annotations.json").read_text())
    a = raw["annotations"][0]
    x0, y0, x1, y1 = objects[0][0]["box"]
    assert a["bbox"] == [x0, y0, x1 - x0, y1 - y0] and a["area"] == (x1 - x0) * (y1 - y0)


def _break(path, how):
    raw = json.loads(path.read_text())
    if how == "not json":
        path.write_text(json.dumps(raw)[:-5])
        return "is not valid JSON"
    if how == "zero area":
        raw["annotations"][0]["bbox"][2] = 0
        msg = "zero-area box"
    elif how == "outside":
        raw["annotations"][0]["bbox"][0] = 30
        msg = "outside its 32x32 image"
    elif how == "unknown class":
        raw["annotations"][0]["category_id"] = 9
        msg = "unknown category_id 9"
    else:  # missing image
        raw["images"][0]["file_name"] = "nope.png"
        msg = "'nope.png' does not exist"
    path.write_text(json.dumps(raw))
    return msg


@pytest.mark.parametrize("how", ["not json", "zero area", "outside", "unknown class", "missing image"])
def test_bad_coco_is_one_sentence_exit_2_nothing_written(tmp_path, capsys, how):
    make_set(tmp_path / "d", n=3)
    msg = _break(tmp_path / "d" / "annotations.json", how)
    with pytest.raises(InputError, match=msg):
        read_coco(tmp_path / "d")
    out = tmp_path / "run"
    code = main(["detect", "train", "--data", str(tmp_path / "d"), "--out", str(out), "--steps", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and msg.split()[0] in err and len(err.splitlines()) <= 2 and "Traceback" not in err
    assert not out.exists()


def test_targets_peak_at_the_box_centre():
    heat, rows = centernet_targets([[{"box": [8, 12, 24, 20], "class": "b"}]], ["a", "b"], grid=8, stride=4)
    assert heat[0, 0].max() == 0 and heat[0, 1, 4, 4] == 1  # centre (16, 16) px -> cell (4, 4)
    assert rows.tolist() == [[0, 4, 4, 4.0, 2.0, 0.0, 0.0]]  # w 16 px = 4 cells, h 8 px = 2 cells
    # focal loss: a confident right peak costs ~0, a confident wrong map much more
    good = torch.where(heat > 0.99, 10.0, -10.0)
    assert focal_loss(good, heat) < 1e-3 < focal_loss(-good, heat)


def test_detector_learns_and_eval_reports_map(tmp_path, capsys):
    make_set(tmp_path / "train", n=32, seed=0)
    make_set(tmp_path / "test", n=16, seed=1)
    cfg = DetectTrainConfig(steps=120, batch_size=8, lr=3e-3, warmup_steps=10, width=8, size=32, seed=0)
    train_detector([tmp_path / "train"], tmp_path / "run", cfg, log=lambda *_: None)
    trained = evaluate_detector(tmp_path / "run", tmp_path / "test")
    assert trained["map50"] > 0.6, trained
    code = main(["detect", "eval", "--model", str(tmp_path / "run"), "--data", str(tmp_path / "test"), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["map"] == pytest.approx(trained["map"]) and printed["map50"] >= printed["map"]
    # an untrained detector of the same classes scores far lower
    from tailor.detect import build_detector, save_detector

    torch.manual_seed(0)
    save_detector(build_detector(list(COLORS), width=8, size=32), tmp_path / "raw.safetensors")
    assert evaluate_detector(tmp_path / "raw.safetensors", tmp_path / "test")["map50"] < trained["map50"] - 0.4


def test_eval_refuses_unknown_classes(tmp_path, capsys):
    make_set(tmp_path / "d", n=4)
    cfg = DetectTrainConfig(steps=2, batch_size=2, width=8, size=32)
    train_detector([tmp_path / "d"], tmp_path / "run", cfg, log=lambda *_: None)
    raw = json.loads((tmp_path / "d" / "annotations.json").read_text())
    raw["categories"][0]["name"] = "kite"
    (tmp_path / "d" / "annotations.json").write_text(json.dumps(raw))
    code = main(["detect", "eval", "--model", str(tmp_path / "run"), "--data", str(tmp_path / "d")])
    assert code == 2 and "'kite'" in capsys.readouterr().err


def test_resume_continues_the_same_run(tmp_path, monkeypatch):
    import tailor.detect.train as T

    make_set(tmp_path / "d", n=8)
    cfg = DetectTrainConfig(steps=12, batch_size=4, width=8, size=32, checkpoint_every=5, warmup_steps=2)
    train_detector([tmp_path / "d"], tmp_path / "a", cfg, log=lambda *_: None)
    real = T.batch_at

    def dying(images, objects, c, step):
        if step == 7:
            raise KeyboardInterrupt
        return real(images, objects, c, step)

    monkeypatch.setattr(T, "batch_at", dying)
    with pytest.raises(KeyboardInterrupt):
        train_detector([tmp_path / "d"], tmp_path / "b", cfg, log=lambda *_: None)
    assert (tmp_path / "b" / T.CHECKPOINT).is_file() and not (tmp_path / "b" / "detector.safetensors").exists()
    monkeypatch.setattr(T, "batch_at", real)
    train_detector([tmp_path / "d"], tmp_path / "b", cfg, resume=True, log=lambda *_: None)
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "a" / "detector.safetensors"), load_file(tmp_path / "b" / "detector.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
