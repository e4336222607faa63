"""ONNX face embedders (issue 19): an ArcFace-kind ``.onnx`` face-recognition model run by onnxruntime serves world
renders, real photos and training items alike. The ONNX files are exported here from the world conditioning embedder
(``torch.onnx.export``, nothing downloaded): a 64-d one (the world embedder behind the ArcFace input convention) and a
512-d variant (the same with a fixed projection to 512, as antelopev2's ``glintr100.onnx`` outputs)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import tailor  # noqa: E402
import tailor.world as world  # noqa: E402
from tailor.core.pipeline import Pipeline  # noqa: E402
from tailor.errors import ConfigError, FormatError, InputError  # noqa: E402
from tailor.faces import one_face  # noqa: E402
from tailor.faces.embedders import (  # noqa: E402
    ARCFACE_TEMPLATE,
    align_face,
    arcface_input,
    face_embedder,
    similarity_transform,
)
from tailor.faces.models import conditioning_embedder  # noqa: E402


class ArcFaceConvention(nn.Module):
    """The world embedder behind ArcFace's input convention: (N, 3, 112, 112) RGB in [-1, 1]. Its antialiased resize
    to 64 px is written as two fixed matrices (the legacy ONNX exporter has no antialiased resize); ``dim`` > the
    embedder's adds a fixed random projection (un-normalised output, as ArcFace's)."""

    def __init__(self, embedder: nn.Module, dim: int = 0):
        super().__init__()
        self.embedder, n, m = embedder, 112, embedder.config["size"]
        eye = torch.eye(n).reshape(n, 1, n, 1).expand(n, 1, n, 4).contiguous()
        a = F.interpolate(eye, size=(m, 4), mode="bilinear", align_corners=False, antialias=True)[..., 0]
        self.register_buffer("a", a.reshape(n, m).T.contiguous())
        g = torch.Generator().manual_seed(5)
        self.proj = nn.Linear(embedder.config["dim"], dim) if dim else None
        if self.proj is not None:
            self.proj.weight.data = torch.randn(dim, embedder.config["dim"], generator=g) * 3
            self.proj.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a @ ((x + 1) / 2) @ self.a.T  # 112 -> 64, the embedder's own resize
        emb = self.embedder(x)
        return self.proj(emb) if self.proj is not None else emb


def export(module: nn.Module, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = {"input.1": {0: "None"}, "embedding": {0: "None"}}
        torch.onnx.export(module.eval(), (torch.zeros(1, 3, 112, 112),), str(path), input_names=["input.1"],
                          output_names=["embedding"], dynamic_axes=axes, opset_version=17, dynamo=False)  # fmt: skip


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    world_emb = conditioning_embedder()
    torch.manual_seed(0)
    export(ArcFaceConvention(world_emb), folder / "world64.onnx")
    wide = ArcFaceConvention(world_emb, 512)
    export(wide, folder / "world512.onnx")
    return folder / "world64.onnx", folder / "world512.onnx", wide


def faces(n: int = 3, size: int = 96):
    samples = [world.render_face(10 + i, identity=900 + i, size=size) for i in range(n)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 for s in samples])
    return samples, images, np.stack([np.asarray(s.keypoints, np.float32) for s in samples])


def test_similarity_transform_is_umeyamas_least_squares():
    rng = np.random.default_rng(0)
    ang, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    src = ARCFACE_TEMPLATE.astype(np.float64)
    dst = scale * src @ rot.T + shift
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], scale * rot, atol=1e-9) and np.allclose(m[:, 2], shift, atol=1e-9)
    # noisy points: no other similarity fits better (least squares), checked against perturbed parameters
    noisy = dst + rng.normal(0, 0.5, dst.shape)
    m = similarity_transform(src, noisy)

    def err(mat):
        return ((src @ mat[:, :2].T + mat[:, 2] - noisy) ** 2).sum()

    a, b = m[0, 0], m[1, 0]
    for da, db, dx in [(1e-3, 0, 0), (-1e-3, 0, 0), (0, 1e-3, 0), (0, -1e-3, 0), (0, 0, 0.01)]:
        p = np.array([[a + da, -(b + db), m[0, 2] + dx], [b + db, a + da, m[1, 2]]])
        assert err(p) > err(m)


def test_aligned_crop_puts_the_keypoints_on_the_arcface_template():
    sample = world.render_face(4, identity=907, size=128)
    kps = np.asarray(sample.keypoints, np.float32)
    crop = align_face(sample.image, kps)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.float32
    m = similarity_transform(kps, ARCFACE_TEMPLATE)
    moved = kps @ m[:, :2].T + m[:, 2]
    assert np.abs(moved - ARCFACE_TEMPLATE).max() < 8.0  # a frontal world face fits the template within pixels
    # each crop pixel is the image sampled (bilinear) where the inverse transform sends it
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    img = sample.image.astype(np.float64)
    for u, v in np.random.default_rng(1).integers(20, 92, (20, 2)):
        x, y = inv @ np.array([u, v, 1.0])
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        want = (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x0 + 1] * fx * (1 - fy)
                + img[y0 + 1, x0] * (1 - fx) * fy + img[y0 + 1, x0 + 1] * fx * fy)  # fmt: skip
        assert np.abs(crop[v, u] - want).max() < 3.0
    x = arcface_input(crop[None])
    assert x.shape == (1, 3, 112, 112) and -1 <= x.min() and x.max() <= 1


def test_onnx_embeddings_equal_the_torch_embedders(onnx_files):
    """The ONNX path (align by the 5 keypoints, (x - 127.5) / 127.5, onnxruntime, L2 norm) gives the torch
    embedder's embeddings of the same crops to 1e-5, at both widths; the embedder declares its width."""
    path64, path512, wide = onnx_files
    _, images, kps = faces()
    crops = np.stack([align_face(img.permute(1, 2, 0).numpy() * 255, k) for img, k in zip(images, kps)])
    x = torch.from_numpy(arcface_input(crops))
    with torch.no_grad():
        want64 = conditioning_embedder()((x + 1) / 2)  # the world embedder itself, its own antialiased resize
        want512 = F.normalize(wide(x), dim=-1)
    e64, e512 = face_embedder(path64), face_embedder(path512)
    assert (e64.dim, e512.dim) == (64, 512) and e64.aligned and not e64.differentiable
    got64, got512 = e64.embed(images, kps), e512.embed(images, kps)
    assert got64.shape == (3, 64) and got512.shape == (3, 512)
    assert (got64 - want64).abs().max() <= 1e-5 and (got512 - want512).abs().max() <= 1e-5
    assert torch.allclose(got512.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert float(got64[0] @ got64[1]) < 0.999  # different identities, different embeddings


def test_world_render_analysis_uses_the_onnx_embedder(onnx_files, tmp_path):
    path64, path512, _ = onnx_files
    sample = world.render_face(6, identity=905, size=96)
    face = one_face(sample.pil(), backend="world", embedder=str(path512))
    assert face.embedding.shape == (512,)
    img = torch.from_numpy(sample.image).permute(2, 0, 1)[None].float() / 255
    want = face_embedder(path512).embed(img, face.keypoints[None])[0].numpy()
    assert np.abs(face.embedding - want).max() <= 1e-6


def test_faces_analyze_cli_with_the_onnx_embedder(onnx_files, tmp_path, capsys):
    import json

    from tailor.cli import main
    from tailor.world.cli import write_samples

    write_samples(tmp_path / "faces", [world.render_face(1, identity=905)])
    image = next((tmp_path / "faces").glob("*.png"))
    assert main(["faces", "analyze", str(image), "--json", "--embedder", str(onnx_files[1])]) == 0
    face = json.loads(capsys.readouterr().out)["faces"][0]
    assert face["embedding_dim"] == 512 and face["source"] == "world-labels"


def test_bad_onnx_files_are_one_sentence(onnx_files, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(FormatError, match="cannot read the ONNX face embedder"):
        face_embedder(bad)
    with pytest.raises(InputError, match="does not exist"):
        face_embedder(tmp_path / "missing.onnx")
    export(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(2)), tmp_path / "maps.onnx")
    with pytest.raises(FormatError, match="not \\(N, D\\) embeddings"):
        face_embedder(tmp_path / "maps.onnx")


def test_instantid_trains_and_samples_with_one_onnx_embedder(onnx_files, tmp_path):
    """Training items and the reference face go through the same ONNX embedder; a model trained on it refuses an
    embedder of another width in one sentence, at generation and on the command line (exit 2)."""
    from tailor.core.training import TrainConfig, train
    from tailor.faces.inputs import FaceDataset
    from tailor.methods.instantid import InstantIDMethod
    from tailor.world.dataset import WorldDataset

    path64, path512, _ = onnx_files
    data = FaceDataset(WorldDataset("faces", size=32, length=2), str(path64))
    item = data[0]
    x = (item["pixel_values"][None] + 1) / 2
    want = face_embedder(path64).embed(x, item["face_keypoints"][None].numpy())[0]
    assert item["face_embedding"].shape == (64,) and torch.equal(item["face_embedding"], want)

    method = InstantIDMethod(num_tokens=4, face_embedder=str(path64))
    cfg = TrainConfig(base="tiny", out=str(tmp_path / "run"), steps=1, batch_size=1, resolution=32, lr=1e-3,
                      data="world:faces")  # fmt: skip
    train(method, cfg, components=tailor.tiny_components())
    reloaded = tailor.load(tmp_path / "run")
    assert reloaded.config.face_embedder == str(path64)
    ref = world.render_face(3, identity=901, size=64).pil()
    pipe = Pipeline(tailor.tiny_components()).attach(reloaded, face=ref)
    out = pipe.generate("a photo of a face", n=1, seed=0, steps=2, guidance=3.0).array
    assert np.isfinite(out).all()
    pipe.detach()
    pipe = Pipeline(tailor.tiny_components()).attach(reloaded, face=ref, face_embedder=str(path512))
    with pytest.raises(ConfigError, match="gives 512-d embeddings but this model reads 64-d ones") as e:
        pipe.generate("a photo of a face", n=1, seed=0, steps=2, guidance=3.0)
    assert str(e.value).count(". ") == 0


def test_generate_flag_face_embedder(onnx_files, tmp_path, capsys):
    from tailor.cli import main
    from tailor.core.training import TrainConfig, train
    from tailor.methods.pulid import PuLIDMethod

    path64, path512, _ = onnx_files
    with pytest.raises(ConfigError, match="pulid's ID loss back-propagates through the face embedder"):
        train(PuLIDMethod(num_tokens=4, id_steps=2, face_embedder=str(path64)),
              TrainConfig(base="tiny", out=str(tmp_path / "bad"), steps=1, batch_size=1, resolution=32,
                          data="world:faces"), components=tailor.tiny_components())  # fmt: skip
    method = PuLIDMethod(num_tokens=4, id_steps=2, id_loss=0.0, face_embedder=str(path64))
    cfg = TrainConfig(base="tiny", out=str(tmp_path / "run"), steps=1, batch_size=1, resolution=32, lr=1e-3,
                      data="world:faces")  # fmt: skip
    train(method, cfg, components=tailor.tiny_components())
    face = tmp_path / "face.png"
    world.render_face(3, identity=901, size=64).pil().save(face)
    base = ["generate", "--base", "tiny", "--prompt", "a face", "--steps", "2", "-n", "1"]
    run = ["--pulid", str(tmp_path / "run"), "--face", str(face)]
    assert main([*base, "--out", str(tmp_path / "o1"), *run, "--face-embedder", str(path512)]) == 2
    assert "gives 512-d embeddings but this model reads 64-d ones" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "o2"), *run, "--face-embedder", str(path64)]) == 0
    assert (tmp_path / "o2" / "000.png").is_file()
    assert main([*base, "--out", str(tmp_path / "o3"), "--face-embedder", str(path64)]) == 2
    assert "--face-embedder is given but nothing reads it" in capsys.readouterr().err
