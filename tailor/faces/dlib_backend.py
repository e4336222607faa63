"""Real-photo face analysis (optional extra ``tailor-diffusion[faces]``): dlib's HOG face detector, its 68-point
landmarks reduced to InstantID's 5 points (eye centres = means of points 36-41 / 42-47, nose tip 30, mouth corners
48 / 54), and dlib's 128-d ResNet face descriptor (the face_recognition models).

The weights come from the ``face_recognition_models`` package, located on disk directly: its ``__init__`` imports
``pkg_resources`` (gone from recent setuptools) and nothing here may download.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np

from tailor.errors import ConfigError

INSTALL = "pip install 'tailor-diffusion[faces]' (dlib-bin, face-recognition-models)"
#: detections scoring below this are dropped: on scikit-image's astronaut the face scores 1.16 and a false detection
#: on the suit 0.12 (upsample 1)
MIN_SCORE = 0.5


def available() -> bool:
    return importlib.util.find_spec("dlib") is not None and _models_dir(required=False) is not None


def _models_dir(required: bool = True) -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    folder = None
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    if folder is None or not (folder / "shape_predictor_68_face_landmarks.dat").is_file():
        if required:
            raise ConfigError(f"real-photo face analysis needs the face_recognition models; {INSTALL}.")
        return None
    return folder


@cache
def _models():
    try:
        import dlib
    except ImportError as e:
        raise ConfigError(f"real-photo face analysis needs dlib; {INSTALL}.") from e
    folder = _models_dir()
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(folder / "shape_predictor_68_face_landmarks.dat")),
        dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")),
    )


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """InstantID's 5 points from the 68-point (iBUG 300-W) layout, image-left eye first."""
    p = np.asarray(landmarks68, np.float32)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]).astype(np.float32)


def dlib_faces(rgb: np.ndarray, what: str = "the image", embed: bool = True, upsample: int = 1) -> list:
    from tailor.faces.analysis import Face

    detector, predictor, recognizer = _models()
    rgb = np.ascontiguousarray(rgb[..., :3].astype(np.uint8))
    faces = []
    rects, scores, _ = detector.run(rgb, upsample, MIN_SCORE)
    for rect, score in zip(rects, scores):
        shape = predictor(rgb, rect)
        pts68 = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float32)
        emb = None
        if embed:
            emb = np.asarray(recognizer.compute_face_descriptor(rgb, shape), np.float32)
            emb = emb / max(1e-8, float(np.linalg.norm(emb)))
        box = (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))
        faces.append(Face(box, five_points(pts68), emb, "dlib", {"score": round(float(score), 3)}))
    return faces
