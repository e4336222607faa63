"""Every ordered pair of registered methods composes through the one pipeline or is refused in one sentence.

attach A -> attach B (each with its spec's example inputs) -> two sampling steps with guidance on the tiny base:
either a finite image, or a ``TailorError`` before sampling whose message says why (issues #21.4 and #22.8: "every
method composes with the others through the pipeline, or says precisely why not"). The refused pairs are listed
here with the reason, so a new crash fails and a new refusal has to be declared. ``docs/composition.md`` says what
each refusal means for a user.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tailor
from tailor.core.method import registry
from tailor.core.pipeline import Pipeline
from tailor.errors import TailorError

METHODS = sorted(registry())
WIDENS = ("ic_light", "inpaint", "ref_unet")  # each widens conv_in with a layout of its own
EDITS_TEXT = ("anytext", "character_adapter", "elite", "photomaker", "photoverse", "textual_inversion")
REFUSED = {
    **{(a, b): "widen the UNet's input" for a in WIDENS for b in WIDENS if a != b},
    **{(a, b): "has nothing to act on" for m in EDITS_TEXT for a, b in (("anydoor", m), (m, "anydoor"))},
    ("infinite_id", "reference_only"): "give one of them reference_pass=cond",
    ("reference_only", "infinite_id"): "give one of them reference_pass=cond",
}


def _attach(pipe: Pipeline, name: str, comps, **options):
    spec = registry()[name]
    inputs = spec.example_inputs(comps) if spec.example_inputs else {}
    return pipe.attach(spec.method(**{**spec.test_options, **options}), **inputs)


@pytest.mark.parametrize("first", METHODS)
def test_every_pair_composes_or_is_refused_in_one_sentence(first):
    unexpected = []
    for second in METHODS:
        if second == first:
            continue
        comps = tailor.tiny_components()
        pipe = Pipeline(comps)
        _attach(pipe, first, comps)
        try:
            _attach(pipe, second, comps)
            out = pipe.generate("a photo of a red star", n=1, seed=0, steps=2, guidance=3.0).array
        except TailorError as e:
            said = str(e)
            reason = REFUSED.get((first, second))
            if reason is None or reason not in said or "\n" in said.strip():
                unexpected.append(f"{first} + {second} refused: {said}")
            continue
        except Exception as e:  # noqa: BLE001 - the point: a crash is a bug, reported with the pair
            unexpected.append(f"{first} + {second} crashed: {type(e).__name__}: {e}"[:400])
            continue
        if (first, second) in REFUSED:
            unexpected.append(f"{first} + {second} ran but is listed as refused")
        elif not np.isfinite(out).all():
            unexpected.append(f"{first} + {second} gave a non-finite image")
    assert not unexpected, "\n".join(unexpected)


@pytest.mark.parametrize("pass_", ["fused", "cond"])
def test_controlnext_beside_a_reference_pass_controls_the_sampling_rows_only(pass_):
    """ControlNeXt adds its control to the sampling rows, not to reference rows fused in front of them, and a separate
    reference pass does not consume it: the fused run equals the separate-pass run, and the control still acts."""
    from tailor.core.control import example_control_inputs

    def run(with_control: bool, reference_pass: str):
        comps = tailor.tiny_components()
        pipe = Pipeline(comps)
        if with_control:
            spec = registry()["controlnext"]
            method = spec.method(**spec.test_options)
            pipe.attach(method, **example_control_inputs(comps))
            gen = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in method.model.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        _attach(pipe, "reference_only", comps, reference_pass=reference_pass)
        return pipe.generate("a photo of a red star", n=2, seed=0, steps=3, guidance=3.0).array

    controlled = run(True, pass_)
    assert np.abs(controlled - run(False, pass_)).max() > 1e-3  # the control acts
    if pass_ == "fused":
        assert np.abs(controlled - run(True, "cond")).max() <= 1e-5
