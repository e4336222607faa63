"""World identity weights (issue #7): face training data that leaves the held-out identities out, the zoo recipes of
InstantID / PhotoMaker / PuLID (train, resume, export float16), ``--instantid world`` / ``--photomaker world`` /
``--pulid world`` resolving to them (a user path named ``world`` wins), and the shipped weights generating on the
world base alone and composed with LoRA, ControlNet and IP-Adapter. Tests that need the shipped weights skip when
they are missing."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
import tailor.world as world
from tailor.cli import main
from tailor.errors import ConfigError, InputError
from tailor.world.cli import write_samples
from tailor.world.zoo import IDENTITY_ADAPTERS, WEIGHTS, identity_adapter, shipped_adapters

KINDS = tuple(IDENTITY_ADAPTERS)
SHIPPED = set(shipped_adapters())
PROMPT = "a sketch of a woman on snow"
PM_PROMPT = "a sketch of a woman img on snow"  # PhotoMaker's trigger word follows the class word


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------- data
def test_face_data_identity_range_and_errors():
    from tailor.core.training.data import build_datasets
    from tailor.world.dataset import IDENTITY_LIMIT
    from zoo.adapters import FACE_DATA, FIRST_TRAIN_IDENTITY

    data, _ = build_datasets("world:faces:all:ids=1000-1010", 32, 0)
    ids = [data.sample(i).attrs["identity"] for i in range(40)]
    assert all(1000 <= i < 1010 for i in ids) and len(set(ids)) > 5
    assert [data.sample(i).attrs["identity"] for i in range(40)] == ids  # a pure function of (seed, i)
    plain, _ = build_datasets("world:faces:all", 32, 0)
    a, b = data.sample(3).attrs, plain.sample(3).attrs
    assert (a["style"], a["background"], a["yaw"]) == (b["style"], b["background"], b["yaw"])  # only the identity
    shipped, _ = build_datasets(FACE_DATA, 32, 0)
    assert shipped.identities == (FIRST_TRAIN_IDENTITY, IDENTITY_LIMIT) and FIRST_TRAIN_IDENTITY >= 1000
    assert min(shipped.sample(i).attrs["identity"] for i in range(200)) >= 1000  # never 800-999 (held out)
    with pytest.raises(InputError, match="FIRST-STOP"):
        build_datasets("world:faces:all:ids=a-b", 32, 0)
    with pytest.raises(ConfigError, match="first < stop"):
        build_datasets("world:faces:ids=10-5", 32, 0)
    with pytest.raises(ConfigError, match="apply to faces"):
        build_datasets("world:objects:all:ids=0-10", 32, 0)
    with pytest.raises(InputError, match="extra field"):
        build_datasets("world:faces:all:photo", 32, 0)


# --------------------------------------------------------------------- recipes
def test_identity_recipes_use_face_data_without_held_out_identities():
    from zoo.adapters import FACE_DATA, IDENTITY_RECIPES, RECIPES

    assert set(IDENTITY_RECIPES) == set(KINDS) and all(RECIPES[k].method == k for k in KINDS)
    assert all(r.data == FACE_DATA for r in IDENTITY_RECIPES.values())
    assert IDENTITY_RECIPES["instantid"].options["resampler_depth"] < 4  # sized for the zoo's budget


def test_recipe_trains_on_a_given_base_and_exports_float16(tmp_path):
    from tailor.core.io import load_tensors, read_metadata
    from zoo import adapters

    runs, weights = tmp_path / "runs", tmp_path / "weights"
    result = adapters.train_adapter(runs, "instantid", steps=1, batch_size=1, base="tiny")
    assert result.steps == 1
    folder = adapters.export_adapter(runs, "instantid", weights)
    assert folder == weights / "adapters" / "instantid"
    assert sorted(p.name for p in folder.iterdir()) == ["instantid.safetensors", "tailor.json"]  # one copy
    info = json.loads((folder / "tailor.json").read_text())["zoo"]
    assert info["base"] == "tiny" and info["recipe"]["data"].endswith("ids=1000-")
    assert read_metadata(folder / "instantid.safetensors")["base"] == "world"
    assert {v.dtype for v in load_tensors(folder / "instantid.safetensors").values()} == {torch.float16}
    method = tailor.load(folder)
    assert method.name == "instantid" and method.config.resampler_depth == 1


def test_train_zoo_cli_takes_the_identity_adapters_and_a_base(capsys, tmp_path):
    code, _, err = run(capsys, "world", "train-zoo", "--only", "adapters", "--adapters", "pulid,nope", "--runs",
                       tmp_path, "--base", "tiny")  # fmt: skip
    assert code == 2 and "nope" in err and all(k in err for k in KINDS)


# --------------------------------------------------------------------- resolution of `world`
def _tiny_identity_weights(root):
    """Untrained tiny-base identity methods saved as the zoo ships them (``adapters/<kind>/`` + ``tailor.json``)."""
    from tailor.core.method import get_spec

    for kind in KINDS:
        spec = get_spec(kind)
        m = spec.method(**spec.test_options)
        m.patch(tailor.tiny_components())
        folder = root / "adapters" / kind
        file = m.save(folder)
        (folder / "tailor.json").write_text(json.dumps({"artifact": file.name}))
    return root


def test_world_names_the_methods_shipped_weights(capsys, tmp_path, monkeypatch):
    import tailor.world.zoo as zoo

    monkeypatch.setattr(zoo, "WEIGHTS", _tiny_identity_weights(tmp_path / "weights"))
    assert identity_adapter("pulid") == tmp_path / "weights" / "adapters" / "pulid"
    with pytest.raises(InputError, match="instantid, photomaker, pulid"):
        identity_adapter("ip_adapter")
    write_samples(tmp_path / "refs", [world.render_face(s, identity=950) for s in range(2)])
    face = tmp_path / "refs" / "000.png"
    common = ["generate", "--base", "tiny", "-n", "1", "--steps", "2", "--prompt", PM_PROMPT]
    code, _, err = run(capsys, *common, "--instantid", "world", "--pulid", "world:0.5", "--face", face,
                       "--photomaker", "world", "--id-images", tmp_path / "refs", "--out", tmp_path / "o")  # fmt: skip
    assert code == 0, err
    methods = json.loads((tmp_path / "o" / "generation.json").read_text())["settings"]["methods"]
    assert [m["method"] for m in methods] == ["instantid", "pulid", "photomaker"]
    # a folder named `world` in the working directory wins over the shipped weights
    from tailor.methods.pulid import PuLIDMethod

    mine = PuLIDMethod(num_tokens=3, id_steps=1)
    mine.patch(tailor.tiny_components())
    mine.save(tmp_path / "world")
    monkeypatch.chdir(tmp_path)
    from tailor.compose import load_kind

    assert load_kind("world", "pulid").config.num_tokens == 3
    code, _, err = run(capsys, *common, "--instantid", "world", "--face", face, "--out", tmp_path / "o2")
    assert code == 2 and "pulid file, not a instantid file" in err


def test_world_without_shipped_weights_says_how_to_get_them(capsys, tmp_path, monkeypatch):
    import tailor.world.zoo as zoo

    monkeypatch.setattr(zoo, "WEIGHTS", tmp_path / "empty")
    write_samples(tmp_path / "refs", [world.render_face(1, identity=951)])
    face = tmp_path / "refs" / "000.png"
    code, _, err = run(capsys, "generate", "--base", "tiny", "-n", "1", "--steps", "2", "--prompt", PROMPT,
                       "--pulid", "world", "--face", face, "--out", tmp_path / "o")  # fmt: skip
    assert code == 2 and "train-zoo" in err and "pulid" in err


# --------------------------------------------------------------------- bad input through the CLI
def test_reference_without_a_face_is_named(capsys, tmp_path, monkeypatch):
    import tailor.world.zoo as zoo

    monkeypatch.setattr(zoo, "WEIGHTS", _tiny_identity_weights(tmp_path / "weights"))
    world.render_object(4).pil().save(tmp_path / "vase.png")
    for flag in ("--instantid", "--pulid"):
        code, _, err = run(capsys, "generate", "--base", "tiny", "-n", "1", "--steps", "2", "--prompt", PROMPT,
                           flag, "world", "--face", tmp_path / "vase.png", "--out", tmp_path / "o")  # fmt: skip
        assert code == 2 and "no face found" in err and "vase.png" in err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_several_faces_take_the_largest_and_say_so(monkeypatch):
    import tailor.faces.analysis as A

    big = A.Face((0, 0, 40, 40), np.zeros((5, 2), np.float32), source="test")
    small = A.Face((50, 50, 60, 60), np.ones((5, 2), np.float32), source="test")
    big.embedding, small.embedding = np.ones(64, np.float32), -np.ones(64, np.float32)
    monkeypatch.setattr(A, "analyze", lambda *a, **k: [big, small])
    from tailor.faces.inputs import reference_faces

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb, kps, _ = reference_faces(world.render_face(0).pil(), "world", None, 64)
    assert any("2 faces found" in str(w.message) and "largest" in str(w.message) for w in caught)
    assert torch.equal(emb, torch.ones(1, 64)) and np.array_equal(kps, big.keypoints)


# --------------------------------------------------------------------- the shipped weights
def needs_shipped():
    missing = [k for k in KINDS if k not in SHIPPED]
    return pytest.mark.skipif(bool(missing) or not (WEIGHTS / "base" / "model_index.json").is_file(),
                              reason=f"world identity weights not trained yet ({', '.join(missing)})")  # fmt: skip


@needs_shipped()
def test_shipped_identity_weights_are_small_float16_and_load_by_name():
    from tailor.core.io import load_tensors

    total = 0
    for kind in KINDS:
        method = tailor.load(kind)
        assert method.name == kind
        for f in identity_adapter(kind).rglob("*"):
            total += f.stat().st_size
            if f.suffix == ".safetensors":
                assert {v.dtype for v in load_tensors(f).values() if v.is_floating_point()} == {torch.float16}
    assert total <= 6.5e6  # IdentityNet (a ControlNet of the world UNet) alone is 3.96 MB


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refs")
    write_samples(folder, [world.render_face(s, identity=960) for s in range(3)])
    return folder


@needs_shipped()
@pytest.mark.parametrize(
    "flags, prompt",
    [
        (["--instantid", "world", "--face", "{face}"], PROMPT),
        (["--photomaker", "world", "--id-images", "{dir}"], PM_PROMPT),
        (["--pulid", "world", "--face", "{face}"], PROMPT),
    ],  # fmt: skip
    ids=list(KINDS),
)
def test_generate_with_the_shipped_weights(capsys, tmp_path, refs, flags, prompt):
    flags = [f.format(face=refs / "000.png", dir=refs) for f in flags]
    common = ["generate", "--base", "world", "--prompt", prompt, "-n", "1", "--steps", "2"]
    code, _, err = run(capsys, *common, *flags, "--out", tmp_path / "id")
    assert code == 0, err
    assert run(capsys, *common[:3], "--prompt", PROMPT, *common[5:], "--out", tmp_path / "plain")[0] == 0
    a, b = (np.asarray(Image.open(next((tmp_path / k).glob("0*.png"))), np.float32) for k in ("id", "plain"))
    assert np.isfinite(a).all() and np.abs(a - b).max() > 0  # the identity changes the image


@needs_shipped()
def test_shipped_identity_weights_compose_with_lora_control_and_ip_adapter(capsys, tmp_path, refs):
    if not {"canny", "world"} <= SHIPPED:
        pytest.skip("shipped canny ControlNet / world IP-Adapter missing")
    from tailor.conditions import from_truth
    from tailor.methods.lora import LoRAMethod

    lora = LoRAMethod(rank=2)
    lora.patch(tailor.load_components("world"))
    with torch.no_grad():  # a LoRA that does something
        for p in lora.trainable_parameters():
            p.normal_(0, 0.05)
    lora.save(tmp_path / "lora")
    render = world.render_face(5, identity=961)
    Image.fromarray(from_truth("canny", render)).save(tmp_path / "edges.png")
    code, _, err = run(capsys, "generate", "--base", "world", "--prompt", PM_PROMPT, "-n", "1", "--steps", "2",
                       "--instantid", f"world={refs / '000.png'}:0.8", "--pulid", "world:0.5",
                       "--face", refs / "001.png", "--photomaker", "world", "--id-images", refs,
                       "--lora", f"{tmp_path / 'lora'}:0.5", "--control", f"canny:{tmp_path / 'edges.png'}",
                       "--ip-adapter", "world", "--ip-image", refs / "002.png", "--out", tmp_path / "all")  # fmt: skip
    assert code == 0, err
    methods = json.loads((tmp_path / "all" / "generation.json").read_text())["settings"]["methods"]
    assert {"lora", "controlnet", "ip_adapter", "instantid", "photomaker", "pulid"} <= {m["method"] for m in methods}
