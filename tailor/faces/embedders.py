"""Face embedders of the identity methods (InstantID, Wang et al. 2024; PuLID, Guo et al. 2024): one object that
serves training items, world renders and real photos alike, and declares its embedding width.

Two kinds, chosen by the ``face_embedder`` option / ``--face-embedder``:

- ``world`` (the default) or a world face-model ``.safetensors`` file: the conditioning embedder of
  :mod:`tailor.faces.models`, a torch module over the whole face image in [0, 1]; differentiable (PuLID's ID loss
  back-propagates through it). On a real photo the shipped world embedder means nothing, so real photos keep dlib's
  128-d descriptor there (:mod:`tailor.faces.dlib_backend`).
- an ``.onnx`` face-recognition model of the ArcFace kind that InstantID and PuLID read (InsightFace antelopev2's
  ``glintr100.onnx``, 512-d), run through onnxruntime (``pip install 'tailor-diffusion[onnx]'``): the face is
  warped by the similarity transform that takes its 5 keypoints (image-left eye, image-right eye, nose tip, mouth
  corners) onto the standard ArcFace 112x112 template (InsightFace's ``norm_crop``), normalised to
  ``(x - 127.5) / 127.5`` RGB NCHW, and the output is L2-normalised. It serves world renders (keypoints from their
  labels or the world detector), real photos (keypoints from dlib) and training items alike, so what a model is
  trained with is what it reads at sampling. No gradients: PuLID's ID loss needs a world embedder.

Nothing here downloads: a file is a file the user has.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tailor.errors import ConfigError, FormatError, InputError

INSTALL_ONNX = "pip install 'tailor-diffusion[onnx]' (onnxruntime)"
#: InsightFace's ``arcface_dst``: where the 5 keypoints of an aligned 112x112 ArcFace crop lie
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], np.float32
)
ARCFACE_SIZE = 112


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (2, 3) least-squares similarity (rotation, uniform scale, translation) taking ``src`` points onto ``dst``
    (Umeyama 1991, the estimate InsightFace's ``estimate_norm`` makes with scikit-image)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (s**2).sum() / len(src)
    scale = (sig * sign).sum() / var if var > 0 else 1.0
    out = np.zeros((2, 3))
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


def align_face(image: np.ndarray, keypoints: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` ArcFace crop of an HxWx3 image (0-255) whose 5 keypoints are ``keypoints`` (pixels),
    float32 0-255 (bilinear, black outside the image, as ``cv2.warpAffine`` in ``norm_crop``)."""
    import cv2

    m = similarity_transform(keypoints, ARCFACE_TEMPLATE * (size / ARCFACE_SIZE))
    src = np.ascontiguousarray(np.asarray(image, np.float32)[..., :3])
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)


def arcface_input(crops: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) crops in 0-255 -> (N, 3, H, W) float32 ``(x - 127.5) / 127.5``."""
    return ((np.asarray(crops, np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2).copy()


class FaceEmbedder:
    """Face images -> (N, ``dim``) unit embeddings. ``aligned``: reads keypoint-aligned crops (keypoints needed);
    ``differentiable``: a torch module gradients go through; ``real_photos``: meaningful on real photos."""

    name: str = ""
    dim: int = 0
    aligned = False
    differentiable = False
    real_photos = False

    def embed(self, images: torch.Tensor, keypoints: np.ndarray | None = None) -> torch.Tensor:
        """(N, 3, H, W) images in [0, 1] and their (N, 5, 2) keypoints (pixels of those images) -> (N, dim)."""
        raise NotImplementedError

    def embed_pixels(self, rgb: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """One HxWx3 uint8 image and its (5, 2) keypoints (pixels) -> (D,) float32 unit embedding."""
        x = torch.from_numpy(np.asarray(rgb, np.float32)[None, ..., :3] / 255.0).permute(0, 3, 1, 2)
        with torch.no_grad():
            return self.embed(x, np.asarray(keypoints, np.float32)[None])[0].numpy().astype(np.float32)


class WorldFaceEmbedder(FaceEmbedder):
    """The world conditioning embedder (a torch module over the whole image)."""

    differentiable = True

    def __init__(self, module: torch.nn.Module, name: str):
        self.module, self.name = module, name
        self.dim = int(module.config["dim"])

    def embed(self, images: torch.Tensor, keypoints: np.ndarray | None = None) -> torch.Tensor:
        return self.module(images.float())


class OnnxFaceEmbedder(FaceEmbedder):
    """An ArcFace-kind ``.onnx`` face-recognition model run by onnxruntime (see the module docstring)."""

    aligned = True
    real_photos = True

    def __init__(self, path: str | Path):
        path = Path(path)
        if importlib.util.find_spec("onnxruntime") is None:
            raise ConfigError(f"the face embedder {path} is an ONNX model; {INSTALL_ONNX}.")
        import onnxruntime as ort

        try:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
            providers = [p for p in wanted if p in ort.get_available_providers()]
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise FormatError(f"cannot read the ONNX face embedder {path} ({e}); pass a valid .onnx model.") from e
        self.name = str(path)
        inp = self.session.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] != 3:
            raise FormatError(f"the ONNX face embedder {path} takes input {shape}, not (N, 3, H, W) images; pass an "
                              "ArcFace-style face-recognition model.")  # fmt: skip
        h, w = shape[2], shape[3]
        side = h if isinstance(h, int) else ARCFACE_SIZE
        if (isinstance(w, int) and w != side) or side % ARCFACE_SIZE:
            raise FormatError(f"the ONNX face embedder {path} takes {w}x{h} images; tailor aligns faces for "
                              f"square ArcFace inputs of 112 (or a multiple); pass such a model.")  # fmt: skip
        self.size, self.input_name = side, inp.name
        out = self.session.get_outputs()[0].shape
        if out and isinstance(out[-1], int):
            self.dim = int(out[-1])
        else:  # a dynamic output width: ask the model once
            self.dim = int(self.run(np.zeros((1, side, side, 3), np.float32)).shape[-1])
        if self.dim < 1 or len(out) not in (0, 2):
            raise FormatError(f"the ONNX face embedder {path} outputs {out}, not (N, D) embeddings; pass an "
                              "ArcFace-style face-recognition model.")  # fmt: skip

    def run(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) aligned crops in 0-255 -> (N, D) raw model outputs."""
        out = self.session.run(None, {self.input_name: arcface_input(crops)})[0]
        return np.asarray(out, np.float32).reshape(len(crops), -1)

    def embed_crops(self, crops: np.ndarray) -> torch.Tensor:
        return F.normalize(torch.from_numpy(self.run(crops)), dim=-1)

    def embed(self, images: torch.Tensor, keypoints: np.ndarray | None = None) -> torch.Tensor:
        if keypoints is None:
            raise InputError(f"the face embedder {self.name} reads aligned faces and needs their 5 keypoints.")
        pixels = (images.detach().float().cpu().clamp(0, 1) * 255).permute(0, 2, 3, 1).numpy()
        kps = np.asarray(keypoints, np.float32).reshape(len(pixels), 5, 2)
        return self.embed_crops(np.stack([align_face(p, k, self.size) for p, k in zip(pixels, kps)]))


def is_world(spec: str | Path | None) -> bool:
    return spec is None or str(spec) in ("", "world")


@cache
def _load(spec: str) -> FaceEmbedder:
    from tailor.faces.models import EMBEDDER_FILE, conditioning_embedder, weights_path

    if spec == "world":
        return WorldFaceEmbedder(conditioning_embedder(), str(weights_path(EMBEDDER_FILE)))
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"the face embedder {spec} does not exist; pass 'world' (shipped), a world face-model "
                         ".safetensors file or an ArcFace-style .onnx model.")  # fmt: skip
    if path.suffix.lower() == ".onnx":
        return OnnxFaceEmbedder(path)
    return WorldFaceEmbedder(conditioning_embedder(path), str(path))


def face_embedder(spec: str | Path | None = None) -> FaceEmbedder:
    """The face embedder ``spec`` names (None / ``world``: the shipped one; a ``.onnx`` file; a world face-model
    file), cached."""
    return _load("world" if is_world(spec) else str(Path(spec).expanduser()))


def check_embedder_width(embedder: FaceEmbedder, expected: int, what: str) -> None:
    """One sentence when ``embedder`` gives another width than the model reads."""
    if expected and embedder.dim != expected:
        raise ConfigError(
            f"the face embedder {embedder.name} gives {embedder.dim}-d embeddings but {what} reads {expected}-d ones; "
            "pass the face embedder it was trained with (--face-embedder)."
        )
