"""Faces for the identity methods (InstantID, Wang et al. 2024; PhotoMaker, Li et al. 2023; PuLID, Guo et al.
2024): analysis (boxes, InstantID's 5 keypoints, identity embeddings; world and real-photo paths), the world's
conditioning face embedder and keypoint detector (their training recipe: ``python -m zoo faces`` in a source
checkout).

Keypoint images in InstantID's style are :func:`tailor.conditions.keypoints_image`.
"""

from tailor.faces.analysis import BACKENDS, Face, analyze, one_face

__all__ = ["BACKENDS", "Face", "analyze", "one_face"]
