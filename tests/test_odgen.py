"""ODGEN (Zhu et al. 2024): the image-list canvases (exact pixels), the foreground-box loss weights (numerics), the
stem's identity start, the text list reaching the ControlNet, tiny train / save / reload / generate, ``tailor synth
--method odgen`` writing valid COCO, and bad inputs (one sentence, exit 2, nothing written)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tailor
from tailor.core.conditioning import StepState
from tailor.core.pipeline import Pipeline
from tailor.methods.odgen.method import ODGENMethod
from tailor.methods.odgen.modules import ImageListEncoder, box_mask, build_canvases, foreground_weights, paste_box

LAYOUT = {"size": 32, "objects": [{"name": "star", "color": "red", "box": [2, 8, 14, 24]},
                                  {"name": "circle", "color": "blue", "box": [18, 8, 30, 24]}],
          "relations": []}  # fmt: skip
IMAGES = [np.full((8, 8, 3), (200, 30, 30), np.uint8), np.full((8, 8, 3), (30, 30, 200), np.uint8)]


# --------------------------------------------------------------------- canvases
def test_canvases_hold_each_object_in_its_box_on_its_own_canvas():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (10, 8, 3), dtype=np.uint8)  # exactly the box's size: pasted unchanged
    b = np.full((3, 5, 3), 77, np.uint8)  # resized: a flat image stays flat
    canvases, mask = build_canvases([a, b], [[4, 10, 12, 20], [20.4, 3.6, 30.2, 9.5]], 32, 3)
    assert canvases.shape == (3, 3, 32, 32) and mask.tolist() == [1, 1, 0]
    want = torch.zeros(3, 3, 32, 32)
    want[0, :, 10:20, 4:12] = torch.from_numpy(a).permute(2, 0, 1).float() / 255
    want[1, :, 4:10, 20:30] = 77 / 255  # [20.4, 3.6, 30.2, 9.5] -> pixels x 20..29, y 4..9
    assert torch.equal(canvases, want)
    assert paste_box([-3, 5, 40, 5.2], 32) == (0, 5, 32, 6)  # clipped, at least one pixel


def test_stem_starts_as_the_sum_of_the_valid_canvases():
    canvases, mask = build_canvases(IMAGES, [o["box"] for o in LAYOUT["objects"]], 32, 3)
    canvases[2] = 0.5  # a padded slot's pixels are ignored through the mask
    enc = ImageListEncoder(8)
    hint = enc(canvases[None], mask[None])
    assert torch.equal(hint[0], canvases[0] + canvases[1])
    with torch.no_grad():
        enc.conv_out.weight.normal_(0, 0.1)
    moved = enc(canvases[None], mask[None])
    assert (moved - hint).abs().max() > 1e-3
    mask2 = mask.clone()
    mask2[1] = 0
    one = enc(canvases[None, :1], mask[None, :1])[0]  # a masked canvas adds nothing (conv batch sizes differ: 1e-6)
    assert torch.allclose(enc(canvases[None], mask2[None])[0], one, atol=1e-6, rtol=0)


# --------------------------------------------------------------------- the foreground-weighted loss
def test_box_mask_and_weights_on_the_latent_grid():
    boxes = torch.tensor([[[4.0, 10, 12, 20], [0, 0, 0, 0]]])
    m = box_mask(boxes, torch.tensor([[1.0, 0]]), 64, 8)
    want = torch.zeros(1, 1, 8, 8)
    want[0, 0, 1:3, 0:2] = 1  # x 4..12 -> cells 0, 1 (8 px each); y 10..20 -> cells 1, 2
    assert torch.equal(m, want)
    w = foreground_weights(boxes, torch.tensor([[1.0, 0]]), 64, 8, 3.0)
    assert torch.equal(w, 1 + 2 * want)


def test_loss_weights_the_error_inside_the_boxes():
    m, comps = _method(fg_weight=4.0)
    f = comps.vae_scale_factor
    grid = 32 // f
    boxes = torch.tensor([[[0.0, 0, 32 / grid, 32 / grid], [0, 0, 0, 0], [0, 0, 0, 0]],
                          [[0.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])  # fmt: skip
    mask = torch.tensor([[1.0, 0, 0], [0, 0, 0]])
    pred = torch.zeros(2, 4, grid, grid)
    target = torch.zeros(2, 4, grid, grid)
    target[:, :, 0, 0] = 2.0  # error 4 in the boxed cell only (sample 0), the same cell unboxed (sample 1)
    state = StepState(latents=pred, timestep=torch.zeros(2), cond=None, training=True,
                      inputs={"odgen_boxes": boxes, "odgen_mask": mask})  # fmt: skip
    loss, logs = m.loss(pred, target, state, None)
    cells = 4 * grid * grid
    # error 4 on 4 channels of one cell: sample 0 weighs it 4 (its box), sample 1 weighs it 1 (no box)
    expect = (4 * 4 * 4.0 / cells + 4 * 4 * 1.0 / cells) / 2
    assert abs(float(loss) - expect) < 1e-7 and abs(logs["mse"] - 2 * 4 * 4 / (2 * cells)) < 1e-7
    loss2, _ = m.loss(pred, target, state, torch.tensor([1.0, 0.0]))  # the trainer's per-sample weights on top
    assert abs(float(loss2) - 4 * 4 * 4.0 / cells / 2) < 1e-7


# --------------------------------------------------------------------- the method
def _method(**kw):
    comps = tailor.tiny_components()
    m = ODGENMethod(**kw)
    torch.manual_seed(0)
    m.patch(comps)
    return m, comps


def _generate(comps, method, prompt="a red star and a blue circle", **inputs):
    pipe = Pipeline(comps).attach(method, **inputs)
    out = pipe.generate(prompt, n=1, seed=0, steps=2, guidance=3.0).array
    pipe.detach()
    return out


def test_text_list_and_image_list_reach_the_controlnet():
    m, comps = _method()
    with torch.no_grad():
        cn = m.control  # open ControlNet's zero convs (the hint's and the residuals')
        for z in [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]:
            z.weight.normal_(0, 0.1)
    star, circle = m.text_tokens([["a star"]]), m.text_tokens([["a circle"]])
    assert (star[0, 0] - circle[0, 0]).abs().max() > 1e-4
    assert torch.equal(star[0, 1], star[0, 2]) and torch.equal(star[0, 1:], circle[0, 1:])  # padding: null tokens
    base = _generate(comps, m, layout=LAYOUT, object_images=IMAGES)
    other = _generate(comps, m, layout=LAYOUT, object_images=IMAGES[::-1])
    plain = Pipeline(comps).generate("a red star and a blue circle", n=1, seed=0, steps=2, guidance=3.0).array
    assert np.abs(base - plain).max() > 1e-3 and np.abs(base - other).max() > 1e-3


def test_tiny_train_save_reload_and_generated_objects(tmp_path):
    from tailor.core.training import TrainConfig

    m = ODGENMethod()
    cfg = TrainConfig(base="tiny", out=str(tmp_path / "run"), data="world:relation:photo", steps=2, batch_size=2,
                      lr=1e-3, seed=0, log_every=1)  # fmt: skip
    tailor.train(m, cfg)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log and all(r["weighted"] >= r["mse"] for r in log)  # fg_weight 2 >= 1
    again = tailor.load(tmp_path / "run")
    assert isinstance(again, ODGENMethod)
    a = _generate(tailor.tiny_components(), again, layout=LAYOUT, object_images=IMAGES)
    b = _generate(tailor.tiny_components(), tailor.load(tmp_path / "run"), layout=LAYOUT, object_images=IMAGES)
    assert np.abs(a - b).max() == 0
    fresh, _ = _method()
    trained = again.state_dict()
    for group in ("image_list", "text_list", "control"):
        assert any(not torch.equal(trained[k], v) for k, v in fresh.state_dict().items() if f".{group}." in k)
    # without object images the base generates them (seeded): the same seed gives the same picture
    c = _generate(tailor.tiny_components(), again, layout=LAYOUT, object_seed=3)
    d = _generate(tailor.tiny_components(), again, layout=LAYOUT, object_seed=3)
    assert np.abs(c - d).max() == 0 and np.abs(c - a).max() > 0


# --------------------------------------------------------------------- CLI: generate and synth
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m, _ = _method()
    out = tmp_path_factory.mktemp("odgen") / "w"
    m.save(out)
    return out


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    from tailor.cli import main

    folder = tmp_path_factory.mktemp("odgen_real") / "real"
    assert main(["world", "render", "--kind", "relation", "--style", "cartoon", "-n", "12", "--seed", "3",
                 "--out", str(folder)]) == 0  # fmt: skip
    return folder


def test_generate_cli_and_bad_layouts(model, tmp_path, capsys):
    from tailor.cli import main

    args = ["generate", "--base", "tiny", "--steps", "2", "-n", "1", "--odgen", str(model), "-p", "x"]
    lay = tmp_path / "l.json"
    lay.write_text(json.dumps(LAYOUT))
    assert main([*args, "--layout", str(lay), "--out", str(tmp_path / "gen")]) == 0
    cases = [
        ({"box": [0, 0, 0, 10]}, "zero area"),
        ({"box": [10, 10, 50, 20]}, "outside"),
        ({"name": "dragon"}, "unknown class"),
    ]
    for k, (change, needle) in enumerate(cases):
        bad = json.loads(json.dumps(LAYOUT))
        bad["objects"][0].update(change)
        lay.write_text(json.dumps(bad))
        code = main([*args, "--layout", str(lay), "--out", str(tmp_path / f"bad{k}")])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and "Traceback" not in err and not (tmp_path / f"bad{k}").exists()
    many = json.loads(json.dumps(LAYOUT))
    many["objects"] = [{"name": "star", "box": [2 + 7 * i, 2, 7 + 7 * i, 7]} for i in range(4)]
    lay.write_text(json.dumps(many))
    code = main([*args, "--layout", str(lay), "--out", str(tmp_path / "many")])
    err = capsys.readouterr().err
    assert code == 2 and "4 objects" in err and not (tmp_path / "many").exists()


def test_synth_odgen_writes_valid_coco(real, model, tmp_path):
    from tailor.cli import main
    from tailor.detect import read_coco

    out = tmp_path / "syn"
    args = ["synth", "--method", "odgen", "--real", str(real), "--n", "3", "--out", str(out), "--control",
            str(model), "--steps", "2", "--filter-steps", "5", "--base", "tiny", "--threshold", "0"]  # fmt: skip
    assert main(args) == 0
    coco = read_coco(out)
    recs = [json.loads((out / "records" / f"{i:06d}.json").read_text()) for i in range(3)]
    assert len(coco) == 3 and [len(o) for o in coco.objects] == [len(r["objects"]) for r in recs]
    assert json.loads((out / "tailor.json").read_text())["settings"]["method"] == "odgen"


def _relabel(real, tmp_path, edit):
    import shutil

    folder = tmp_path / "real2"
    shutil.copytree(real, folder)
    labels = json.loads((folder / "labels.json").read_text())
    edit(labels)
    (folder / "labels.json").write_text(json.dumps(labels))
    return folder


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda L: L[0]["objects"].extend([dict(L[0]["objects"][0]) for _ in range(3)]), "at most 3 per image"),
        (lambda L: L[0]["objects"][0].update(shape="dragon"), "cannot draw (dragon)"),
        (lambda L: L[0]["objects"][0].update(box=[5, 5, 5, 9]), "zero-area box"),
        (lambda L: L[0]["objects"][0].update(box=[50, 5, 70, 9]), "outside its 64x64 image"),
    ],
)
def test_synth_odgen_bad_real_sets(real, model, tmp_path, capsys, edit, message):
    from tailor.cli import main

    folder = _relabel(real, tmp_path, edit)
    out = tmp_path / "o"
    code = main(["synth", "--method", "odgen", "--real", str(folder), "--n", "2", "--out", str(out), "--control",
                 str(model), "--steps", "2", "--filter-steps", "5", "--base", "tiny"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and not out.exists()


def test_shipped_world_weights_load_by_name_within_budget():
    from tailor.core.resources import resolve
    from tailor.methods.odgen.shipped import folder

    if not (folder() / "tailor.json").is_file():
        pytest.skip("odgen world weights not shipped in this checkout")
    tailor.get_spec("odgen")
    path = resolve("artifact:odgen", "odgen")
    assert path == folder() and resolve("artifact:odgen", "world") == folder()
    m = tailor.load(path)
    assert isinstance(m, ODGENMethod) and m.config.init == "none" and m.config.max_objects == 3
    assert sum(p.stat().st_size for p in folder().iterdir()) <= 4.5e6  # the budget
    assert all(v.dtype == torch.float16 for v in m.state_dict().values() if v.is_floating_point())


def test_init_layout_starts_from_the_shipped_layout_controlnet():
    """``init=layout`` (the zoo recipe's start) finds the shipped ControlNet through core's resource registry."""
    import torch

    from tailor.core.components import load_components
    from tailor.core.io import load_tensors
    from tailor.core.method import get_spec
    from tailor.world.zoo import WEIGHTS

    cls = get_spec("odgen").method
    method = cls(cls.config_cls(init="layout"))
    method.patch(load_components("world"))
    ref = load_tensors(WEIGHTS / "adapters" / "layout" / "controlnet" / "diffusion_pytorch_model.safetensors")
    own = method.control.state_dict()
    assert set(own) == set(ref) and all(torch.equal(own[k].float(), ref[k].float()) for k in own)
