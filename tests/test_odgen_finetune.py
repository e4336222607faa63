"""ODGEN's first stage (tiny base): the scenes-and-crops dataset of a real folder (``coco:DIR``: exact crop pixels,
captions from world labels or class names), the LoRA fine-tune of ``tailor synth --finetune`` (it changes the
generated objects; ``--lora`` with its file gives the same images; done work is reused), the settings of a run
without the flags, and bad input (one sentence, exit 2, nothing written)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

import tailor
from tailor.core.images import to_tensor
from tailor.detect.coco import write_coco
from tailor.methods.odgen.method import ODGENMethod
from tailor.synth.real_data import CROP_FILL, RealScenesAndCrops, square_crop


# --------------------------------------------------------------------- crops
def test_square_crop_centres_the_box_at_its_fill_and_repeats_the_edge():
    image = np.arange(20 * 20 * 3, dtype=np.uint8).reshape(20, 20, 3)
    crop = square_crop(image, [6, 8, 12, 11])  # 6 x 3 box, centre (9, 9.5): side 6 / 0.6 = 10
    assert crop.shape == (10, 10, 3)
    assert np.array_equal(crop, image[4:14, 4:14])  # left = round(9 - 5) = 4, top = round(9.5 - 5) = 4 (to even)
    edge = square_crop(image, [0, 0, 6, 6])  # side 10 around (3, 3): rows/columns -2..7, two of each repeated
    assert edge.shape == (10, 10, 3)
    assert np.array_equal(edge[2:, 2:], image[:8, :8])
    assert np.array_equal(edge[0], edge[2]) and np.array_equal(edge[:, 0], edge[:, 2])
    assert CROP_FILL == 0.6


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    from tailor.cli import main

    folder = tmp_path_factory.mktemp("odgen_ft_real") / "real"
    assert main(["world", "render", "--kind", "relation", "--style", "cartoon", "-n", "6", "--seed", "3",
                 "--out", str(folder)]) == 0  # fmt: skip
    return folder


def test_world_folder_gives_scenes_then_crops_in_the_synthesis_caption(real):
    from PIL import Image

    from tailor.synth.plan import caption

    labels = json.loads((real / "labels.json").read_text())
    ds = RealScenesAndCrops(real, 32)
    n_objects = sum(len(r["objects"]) for r in labels)
    assert ds.world and ds.counts == (6, n_objects) and len(ds) == 6 + n_objects
    assert [ds[i]["caption"] for i in range(6)] == [r["caption"] for r in labels]
    image = np.asarray(Image.open(real / labels[0]["file"]).convert("RGB"))
    assert torch.equal(ds[0]["pixel_values"], to_tensor(image, 32))
    o = labels[0]["objects"][0]
    crop = ds[6]
    assert torch.equal(crop["pixel_values"], to_tensor(square_crop(image, o["box"]), 32))
    program = {"objects": [{"name": o["shape"], "color": o["color"], "pattern": o["pattern"]}], "relations": [],
               "background": labels[0]["attrs"]["background"], "style": "cartoon"}  # fmt: skip
    assert crop["caption"] == caption(program)
    assert crop["caption"].startswith("a cartoon of ") and o["shape"] in crop["caption"]
    # through the trainer's data resolver
    train, val = tailor.core.training.data.build_datasets(f"coco:{real}", 32, 0)
    assert val is None and len(train) == len(ds) and train[3]["caption"] == ds[3]["caption"]


def _coco_folder(tmp_path, boxes):
    from PIL import Image

    folder = tmp_path / "coco"
    (folder / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, objects = [], []
    for k, objs in enumerate(boxes):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "img" / f"{k}.png")
        images.append({"file_name": f"img/{k}.png", "width": 40, "height": 40})
        objects.append([{"box": b, "class": c} for c, b in objs])
    write_coco(folder / "annotations.json", images, objects, ["star", "circle"])
    return folder


def test_plain_coco_folder_gives_class_captions(tmp_path):
    folder = _coco_folder(
        tmp_path, [[("star", [2, 2, 12, 14]), ("circle", [20, 20, 38, 30])], [("circle", [5, 5, 9, 9])]]
    )
    ds = RealScenesAndCrops(folder, 16)
    assert not ds.world and ds.counts == (2, 3)
    assert [ds[i]["caption"] for i in range(len(ds))] == [
        "a scene with a star and a circle", "a scene with a circle", "a star", "a circle", "a circle"]  # fmt: skip
    assert all(ds[i]["pixel_values"].shape == (3, 16, 16) for i in range(len(ds)))


def test_coco_without_boxes_is_refused(tmp_path, capsys):
    from tailor.cli import main

    folder = _coco_folder(tmp_path, [[], []])
    out = tmp_path / "lora"
    code = main(["train", "lora", "--base", "tiny", "--data", f"coco:{folder}", "--steps", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert (
        code == 2 and "has no annotated boxes" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    )
    assert not out.exists()


# --------------------------------------------------------------------- synth --finetune / --lora
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = ODGENMethod()
    torch.manual_seed(0)
    m.patch(tailor.tiny_components())
    out = tmp_path_factory.mktemp("odgen_ft") / "w"
    m.save(out)
    return out


def _synth(real, model, out, *extra):
    from tailor.cli import main

    args = ["synth", "--method", "odgen", "--real", str(real), "--n", "2", "--out", str(out), "--control", str(model),
            "--steps", "2", "--filter-steps", "5", "--base", "tiny", "--threshold", "0"]  # fmt: skip
    return main([*args, *extra])


def _images(out):
    return [(out / "images" / f"{i:06d}.png").read_bytes() for i in range(2)]


@pytest.fixture(scope="module")
def runs(real, model, tmp_path_factory):
    root = tmp_path_factory.mktemp("odgen_ft_runs")
    assert _synth(real, model, root / "plain") == 0
    assert _synth(real, model, root / "ft", "--finetune", "3") == 0
    return root


def test_finetune_trains_a_lora_and_changes_the_images(runs):
    plain, ft = runs / "plain", runs / "ft"
    assert json.loads((ft / "finetune" / "tailor.json").read_text())["steps"] == 3
    assert (ft / "finetune" / "lora.safetensors").is_file()
    assert json.loads((ft / "tailor.json").read_text())["settings"]["finetune"] == "3"
    # the layouts are the same, the images are not
    recs = [json.loads((d / "records" / "000000.json").read_text()) for d in (plain, ft)]
    assert recs[0]["objects"] == recs[1]["objects"]
    assert all(a != b for a, b in zip(_images(plain), _images(ft)))


def test_finetune_changes_the_object_images_of_the_list(runs, model):
    from tailor.synth.methods import ODGEN

    synth = ODGEN(base="tiny", steps=2, control=str(model))
    synth.setup()
    program = {"size": 32, "objects": [{"name": "star", "color": "red", "box": [2, 8, 14, 24]}], "relations": [],
               "background": "grass", "style": "cartoon"}  # fmt: skip
    before = synth.method.object_images(program, 5)[0]
    synth.fine_tune(runs / "ft" / "finetune")
    after = synth.method.object_images(program, 5)[0]
    assert before.shape == after.shape and np.abs(before.astype(int) - after.astype(int)).max() > 0


def test_lora_flag_with_the_trained_file_gives_the_same_images_and_done_work_is_reused(runs, real, model):
    from tailor.methods.odgen.finetune import finetune

    ft = runs / "ft"
    assert _synth(real, model, runs / "lora", "--lora", str(ft / "finetune" / "lora.safetensors")) == 0
    assert _images(runs / "lora") == _images(ft)
    lora = ft / "finetune" / "lora.safetensors"
    stamp = hashlib.sha256(lora.read_bytes()).hexdigest(), lora.stat().st_mtime_ns
    assert finetune(real, ft / "finetune", 3, base="tiny") == ft / "finetune"  # done: nothing retrained
    assert (hashlib.sha256(lora.read_bytes()).hexdigest(), lora.stat().st_mtime_ns) == stamp


def test_without_the_flags_the_settings_are_the_old_ones(runs):
    settings = json.loads((runs / "plain" / "tailor.json").read_text())["settings"]
    assert sorted(settings) == ["base", "control", "filter_steps", "guidance", "method", "n", "real", "scale", "seed",
                                "steps", "threshold"]  # fmt: skip
    assert not (runs / "plain" / "finetune").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--finetune", "0"], "--finetune must be a number of training steps, at least 1; got 0."),
        (["--finetune", "-4"], "got -4."),
        (["--finetune", "2", "--lora", "x.safetensors"], "not both"),
        (["--lora", "missing.safetensors"], "missing.safetensors"),
    ],
)
def test_bad_finetune_and_lora_flags(real, model, tmp_path, capsys, extra, message):
    out = tmp_path / "o"
    code = _synth(real, model, out, *extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_objects_scope_fine_tunes_the_list_objects_only(runs, model):
    from tailor.synth.methods import ODGEN

    program = {"size": 32, "objects": [{"name": "star", "color": "red", "box": [2, 8, 14, 24]}], "relations": [],
               "background": "grass", "style": "cartoon"}  # fmt: skip
    plain = ODGEN(base="tiny", steps=2, control=str(model))
    plain.setup()
    synth = ODGEN(base="tiny", steps=2, control=str(model), finetune_scope="objects")
    synth.setup()
    synth.fine_tune(runs / "ft" / "finetune")
    unet = dict(synth.components.unet.state_dict())
    assert all(torch.equal(v, unet[k]) for k, v in plain.components.unet.state_dict().items())  # main UNet: plain
    a, b = plain.method.object_images(program, 5)[0], synth.method.object_images(program, 5)[0]
    assert np.abs(a.astype(int) - b.astype(int)).max() > 0


def test_objects_scope_needs_odgen_and_a_fine_tune(real, model, tmp_path, capsys):
    out = tmp_path / "o"
    code = _synth(real, model, out, "--finetune-scope", "objects")
    err = capsys.readouterr().err
    assert code == 2 and "--finetune-scope applies to --method odgen with --finetune or --lora" in err
    assert not out.exists()
