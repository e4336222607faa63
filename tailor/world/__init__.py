"""The procedural world: shapes x colours x patterns x backgrounds x render styles, faces, scenes and subjects.

Every image is a deterministic function of an integer seed and comes with exact ground truth (caption,
attributes, mask, box, edges; per-object masks for scenes; identity and 5 keypoints for faces). Drawing is
numpy + OpenCV, about a millisecond per 64x64 image on one core, so datasets render on the fly.

>>> from tailor.world import render
>>> s = render("a photo of a red striped star on grass", seed=0)
>>> s.image.shape, s.attrs["shape"], s.box  # doctest: +SKIP
"""

from tailor.world.captions import N_TEMPLATES, caption_for, parse_prompt
from tailor.world.dataset import HOLDOUT_COMBOS, WorldDataset
from tailor.world.faces import render_face
from tailor.world.identity import identity_features
from tailor.world.objects import render_object
from tailor.world.render import render
from tailor.world.sample import Sample
from tailor.world.scenes import render_scene
from tailor.world.subjects import SubjectSpec, render_subject, subjects
from tailor.world.vocab import STYLES, vocabulary

__all__ = [
    "HOLDOUT_COMBOS",
    "N_TEMPLATES",
    "STYLES",
    "Sample",
    "SubjectSpec",
    "WorldDataset",
    "caption_for",
    "identity_features",
    "parse_prompt",
    "render",
    "render_face",
    "render_object",
    "render_scene",
    "render_subject",
    "subjects",
    "vocabulary",
]
