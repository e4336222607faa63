"""Every registered method runs through the same checks (DESIGN.md "conformance mixin").

attach -> one sampling run -> one training step -> save -> ``tailor.load`` -> identical output; plus the
registry's own rules (folder name == SPEC.name == Method.name, config is a Config, no flag collides with a
training flag).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import tailor
from tailor.core.config import Config
from tailor.core.method import registry
from tailor.core.pipeline import Pipeline

METHODS = sorted(registry())


def test_every_method_folder_registers():
    folders = sorted(
        p.name
        for p in (Path(tailor.__file__).parent / "methods").iterdir()
        if p.is_dir() and not p.name.startswith("_") and (p / "__init__.py").exists()
    )
    assert folders == METHODS and METHODS


@pytest.mark.parametrize("name", METHODS)
def test_spec_is_consistent(name):
    from tailor.core.training import TrainConfig

    spec = registry()[name]
    assert issubclass(spec.config, Config) and spec.summary
    assert spec.method.name == name and spec.method.config_cls is spec.config
    method_flags = {f.name for f in dataclasses.fields(spec.config)}
    clash = method_flags & {f.name for f in dataclasses.fields(TrainConfig)}
    assert not clash, f"{name} options clash with training options: {clash}"
    assert (Path(tailor.__file__).parent / "methods" / name / "README.md").is_file()


def _generate(method, comps, inputs):
    pipe = Pipeline(comps).attach(method, **inputs)
    out = pipe.generate("a photo of a red star", n=1, seed=0, steps=2, guidance=3.0).array
    pipe.detach()
    return out


@pytest.mark.parametrize("name", METHODS)
def test_attach_sample_train_save_reload(name, tmp_path):
    check_conformance(registry()[name], tmp_path)


def check_conformance(spec, tmp_path) -> None:
    """attach -> sample -> train one step -> save -> reload: identical output (any registered method's spec); a
    training-free method: attach -> sample (changed, reproducible) -> detach restores the base -> training refused."""
    from tailor.core.training import TrainConfig, train

    if spec.method.training_free:
        check_training_free(spec, tmp_path)
        return
    inputs = spec.example_inputs(tailor.tiny_components()) if spec.example_inputs else {}

    # attach + one sampling run on a fresh base
    fresh = tailor.tiny_components()
    before = _generate(spec.method(**spec.test_options), fresh, inputs)
    assert np.isfinite(before).all()
    plain = Pipeline(fresh).generate("a photo of a red star", n=1, seed=0, steps=2, guidance=3.0).array
    assert (
        np.abs(
            plain
            - Pipeline(tailor.tiny_components())
            .generate("a photo of a red star", n=1, seed=0, steps=2, guidance=3.0)
            .array
        ).max()
        == 0
    ), "detach must restore the base"

    # one training step, save
    comps = tailor.tiny_components()
    method = spec.method(**spec.test_options)
    cfg = TrainConfig(base="tiny", out=str(tmp_path / "run"), steps=1, batch_size=1, resolution=32, lr=1e-3)
    result = train(method, cfg, components=comps)
    assert Path(result.artifact).is_file()
    trained = _generate(method, comps, inputs)
    assert np.abs(trained - before).max() > 0, "one training step must change the output"

    # reload from the training folder onto a fresh base: identical output
    reloaded = tailor.load(tmp_path / "run")
    assert type(reloaded) is spec.method
    again = _generate(reloaded, tailor.tiny_components(), inputs)
    assert np.abs(again - trained).max() == 0


def check_training_free(spec, tmp_path) -> None:
    from tailor.core.training import TrainConfig, train
    from tailor.errors import ConfigError

    comps = tailor.tiny_components()
    inputs = spec.example_inputs(comps) if spec.example_inputs else {}
    plain = Pipeline(comps).generate("a photo of a red star", n=1, seed=0, steps=2, guidance=3.0).array
    first = _generate(spec.method(**spec.test_options), comps, inputs)
    again = _generate(spec.method(**spec.test_options), comps, inputs)
    assert np.isfinite(first).all() and np.abs(first - plain).max() > 0, "the method must change the output"
    assert np.abs(again - first).max() == 0, "a training-free method must reproduce its output"
    after = Pipeline(comps).generate("a photo of a red star", n=1, seed=0, steps=2, guidance=3.0).array
    assert np.abs(after - plain).max() == 0, "detach must restore the base"
    assert not spec.method(**spec.test_options).trainable_parameters()
    cfg = TrainConfig(base="tiny", out=str(tmp_path / "run"), steps=1, batch_size=1, resolution=32)
    with pytest.raises(ConfigError, match="training-free"):
        train(spec.method(**spec.test_options), cfg, components=comps)
    assert not (tmp_path / "run").exists()
