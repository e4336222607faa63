"""The world Infinite-ID weights (issue #22): the zoo recipe (face data without the held-out identities; train,
resume, export float16), ``--infinite-id world`` / ``--infinite-id infinite-id`` resolving to the shipped folder (a
user path named ``world`` wins), the shipped weights generating on the world base (both streams, the identity changing
the image), and the identity bench's declared rows applying their options to the shipped weights. Tests that need the
shipped weights skip when they are missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
import tailor.world as world
from tailor.cli import main
from tailor.world.cli import write_samples
from tailor.world.zoo import ADAPTERS, WEIGHTS, shipped_adapters

NAME = "infinite-id"
PROMPT = "a sketch of a woman on snow"
needs_shipped = pytest.mark.skipif(
    NAME not in shipped_adapters() or not (WEIGHTS / "base" / "model_index.json").is_file(),
    reason="the world Infinite-ID weights are not trained yet (python -m zoo.infinite_id train RUNS)",
)


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_recipe_trains_on_held_in_faces_and_is_a_zoo_adapter():
    from zoo.adapters import FACE_DATA, RECIPES
    from zoo.infinite_id import OPTIONS

    r = RECIPES[NAME]
    assert ADAPTERS[NAME] == ("infinite_id", None) and r.method == "infinite_id"
    assert r.data == FACE_DATA and FACE_DATA.endswith("ids=1000-")  # never the bench's identities 800-999
    assert r.options == OPTIONS and r.options["resampler_depth"] < 4  # sized for the zoo's budget


def test_recipe_trains_resumes_and_exports_float16(tmp_path):
    from tailor.core.io import load_tensors, read_metadata
    from zoo import adapters

    runs, weights = tmp_path / "runs", tmp_path / "weights"
    kw = dict(
        batch_size=2, base="tiny"
    )  # the recipe's options (world CLIP tower, world face embedder) on the tiny UNet
    assert adapters.train_adapter(runs, NAME, steps=1, **kw).steps == 1
    assert adapters.train_adapter(runs, NAME, steps=2, **kw).steps == 2  # resumes from the step-1 checkpoint
    folder = adapters.export_adapter(runs, NAME, weights)
    assert folder == weights / "adapters" / NAME
    assert sorted(p.name for p in folder.iterdir()) == ["infinite_id.safetensors", "tailor.json"]
    f = folder / "infinite_id.safetensors"
    tensors = load_tensors(f)
    assert {v.dtype for v in tensors.values() if v.is_floating_point()} == {torch.float16}
    assert read_metadata(f)["method"] == "infinite_id" and read_metadata(f)["base"] == "world"
    assert any(k.startswith("infinite_id.0.") for k in tensors) and any(".to_k_ip." in k for k in tensors)
    assert tailor.load(folder).name == "infinite_id"


def test_world_name_resolves_through_the_method_provider(tmp_path, monkeypatch):
    from tailor.core.resources import resolve

    if NAME in shipped_adapters():
        assert resolve("artifact:infinite_id", "world") == WEIGHTS / "adapters" / NAME
    assert resolve("artifact:infinite_id", "other") is None
    # a user folder named `world` wins over the shipped weights
    m = tailor.get_spec("infinite_id").method(**tailor.get_spec("infinite_id").test_options)
    m.patch(tailor.tiny_components())
    m.save(tmp_path / "world")
    monkeypatch.chdir(tmp_path)
    from tailor.compose import load_kind

    loaded = load_kind("world", "infinite_id")
    assert loaded.name == "infinite_id" and loaded.config.image_encoder == "tiny"


@needs_shipped
def test_shipped_weights_are_small_float16_and_load_by_both_names():
    from tailor.compose import load_kind
    from tailor.core.io import load_tensors

    folder = WEIGHTS / "adapters" / NAME
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 1_000_000  # the lead's budget for this method
    (f,) = folder.glob("*.safetensors")
    assert {v.dtype for v in load_tensors(f).values() if v.is_floating_point()} == {torch.float16}
    a, b = load_kind("world", "infinite_id"), load_kind(NAME, "infinite_id")
    assert a.name == b.name == "infinite_id" and a.config == b.config
    assert a.config.image_encoder == "world" and a.config.resampler_depth == 1
    assert (a.config.style_fidelity, a.config.adain_mean) == (1.0, False)  # zoo/infinite_id.py INFERENCE


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refs")
    write_samples(folder, [world.render_face(s, identity=960) for s in range(2)])
    return folder


@needs_shipped
@pytest.mark.parametrize("name", ["world", NAME])
def test_generate_with_the_shipped_weights(capsys, tmp_path, refs, name):
    common = ["generate", "--base", "world", "--prompt", PROMPT, "-n", "1", "--steps", "3", "--seed", "1"]
    code, _, err = run(capsys, *common, "--infinite-id", name, "--face", refs / "000.png", "--out", tmp_path / "id")
    assert code == 0, err
    assert run(capsys, *common, "--out", tmp_path / "plain")[0] == 0
    a, b = (np.asarray(Image.open(next((tmp_path / k).glob("0*.png"))), np.float32) for k in ("id", "plain"))
    assert np.isfinite(a).all() and np.abs(a - b).mean() > 1.0  # the ID stream changes the text stream's image


@needs_shipped
def test_identity_bench_rows_apply_their_options_to_the_shipped_weights(tmp_path):
    from tailor.bench import identity as B

    specs = B.identity_specs()
    assert {"infinite_id", "infinite_id-adain", "infinite_id-plain"} <= set(specs)
    assert "infinite_id" in B.DEFAULT_MODELS and "infinite_id-adain" not in B.DEFAULT_MODELS
    keys = ("infinite_id", "infinite_id-adain", "infinite_id-plain")
    s = B.Settings(out=tmp_path, models=dict.fromkeys(keys, "world"), ip_adapter=None, dreambooth=None)
    models = B.load_models(s)
    assert [models[k].config.adain_mean for k in ("infinite_id", "infinite_id-adain")] == [False, True]
    assert models["infinite_id-plain"].config.mixed is False and models["infinite_id"].config.mixed is True
