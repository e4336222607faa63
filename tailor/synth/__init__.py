"""Synthetic detection data (issue 24; the dataset pipeline of ODGEN, Zhu et al. 2024): fit box statistics of a few
real renders of one domain, sample layouts, generate them with a pluggable method (``layout``: a layout ControlNet),
drop failures with a foreground classifier and write a COCO folder (``tailor synth``; :mod:`tailor.synth.run`).
"""

from tailor.synth.methods import SYNTH_METHODS, LayoutControlNet, SynthMethod, get_synth_method
from tailor.synth.run import synthesize
from tailor.synth.stats import BoxStats, Layout, fit_stats

__all__ = [
    "SYNTH_METHODS",
    "BoxStats",
    "Layout",
    "LayoutControlNet",
    "SynthMethod",
    "fit_stats",
    "get_synth_method",
    "synthesize",
]
