"""One surface for every method: a method folder added at test time (a temporary package on the registry path) gets
a ``tailor generate`` flag, ``--apply`` support, a conformance run and a bench row, with no edit outside its folder.
Plus the declarations' own rules (one value grammar, flags generated from the registry, shared flags agree)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

import tailor
import tailor.methods
from tailor.core import method as registry_module
from tailor.errors import ConfigError

TOY = "toy_tint"
TOY_INIT = '''
"""toy_tint: a learned vector added to the prompt embeddings, scaled by the mean brightness of a reference image
(a test-only method that lives in one folder)."""

import numpy as np
import torch
from dataclasses import dataclass
from torch import nn

from tailor.core.config import Config, option
from tailor.core.method import Method, MethodSpec
from tailor.core.surface import BenchRow, GenerateInput, Input


@dataclass
class ToyConfig(Config):
    gain: float = option(1.0, "Scale of the learned vector.")


class ToyMethod(Method):
    name = "toy_tint"
    config_cls = ToyConfig

    def build(self, components):
        self.vec = nn.Embedding(1, components.text_encoder.config.hidden_size)
        nn.init.zeros_(self.vec.weight)

    def modules(self):
        return [self.vec]

    def encode(self, cond, inputs):
        images = inputs.get("tint_image")
        brightness = float(np.mean([np.asarray(im, np.float32).mean() / 255 for im in images])) if images else 1.0
        shift = self.scale * self.config.gain * brightness * self.vec.weight[0]
        cond.encoder_hidden_states = cond.encoder_hidden_states + shift.to(cond.encoder_hidden_states.dtype)
        return cond


def example_inputs(components):
    from PIL import Image

    return {"tint_image": [Image.new("RGB", (16, 16), (200, 100, 50))]}


SPEC = MethodSpec(
    name="toy_tint",
    method=ToyMethod,
    config=ToyConfig,
    summary="test-only: a learned prompt-embedding shift scaled by a reference image's brightness",
    example_inputs=example_inputs,
    generate=GenerateInput(
        "--toy-tint",
        "Toy tint file and its reference image(s).",
        input=Input("tint_image", "images", flag="--tint-image", help="Reference image for --toy-tint."),
        max_weight=2.0,
    ),
    bench=(BenchRow("personalize", "toy_tint", 2, 1e-2, note="test-only"),),
)
'''


@pytest.fixture
def toy_method(tmp_path, monkeypatch):
    """``tailor/methods``' registry path plus a folder holding only ``toy_tint/__init__.py``."""
    root = tmp_path / "extra_methods"
    (root / TOY).mkdir(parents=True)
    (root / TOY / "__init__.py").write_text(textwrap.dedent(TOY_INIT))
    monkeypatch.setattr(tailor.methods, "__path__", [*tailor.methods.__path__, str(root)])
    registry_module.method_names.cache_clear()
    yield registry_module.get_spec(TOY)
    monkeypatch.undo()
    registry_module.method_names.cache_clear()
    registry_module._load_spec.cache_clear()


def _trained_toy(tmp_path):
    spec = registry_module.get_spec(TOY)
    method = spec.method()
    out = str(tmp_path / "toy")
    cfg = tailor.TrainConfig(base="tiny", data="world", out=out, steps=2, batch_size=1, resolution=32, lr=0.05)
    tailor.train(method, cfg)
    return tmp_path / "toy"


def test_new_method_folder_gets_flag_apply_conformance_and_bench_row(toy_method, tmp_path, capsys):
    from test_conformance import check_conformance

    from tailor.cli import main

    # a conformance run, like every shipped method
    check_conformance(toy_method, tmp_path / "conformance")

    # a generate flag with its shared reference flag, generated from the declaration
    assert main(["generate", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--toy-tint" in help_text and "--tint-image" in help_text
    trained = _trained_toy(tmp_path)
    from PIL import Image

    Image.new("RGB", (32, 32), (250, 250, 250)).save(tmp_path / "bright.png")
    Image.new("RGB", (32, 32), (10, 10, 10)).save(tmp_path / "dark.png")
    common = [
        "generate",
        "--base",
        "tiny",
        "-p",
        "a photo of a red star",
        "-n",
        "1",
        "--steps",
        "2",
        "--guidance",
        "3",
    ]
    outs = {}
    for name, args in {
        "flag": ["--toy-tint", f"{trained}=bright.png:2"],
        "shared": ["--toy-tint", f"{trained}:2", "--tint-image", "bright.png"],
        "apply": ["--apply", f"{trained}=bright.png:2"],
        "dark": ["--toy-tint", f"{trained}=dark.png:2"],
        "plain": [],
    }.items():
        args = [a.replace("bright.png", str(tmp_path / "bright.png")).replace("dark.png", str(tmp_path / "dark.png"))
                for a in args]  # fmt: skip
        assert main([*common, *args, "--out", str(tmp_path / name)]) == 0, capsys.readouterr().err
        outs[name] = np.asarray(Image.open(tmp_path / name / "000.png"), np.float32)
    info = json.loads((tmp_path / "flag" / "generation.json").read_text())
    assert [(m["method"], m["weight"]) for m in info["settings"]["methods"]] == [(TOY, 2.0)]
    # the flag, the shared reference flag and --apply attach the same thing; the reference image matters
    assert np.abs(outs["flag"] - outs["shared"]).max() == 0 and np.abs(outs["flag"] - outs["apply"]).max() == 0
    assert np.abs(outs["flag"] - outs["dark"]).max() > 0 and np.abs(outs["flag"] - outs["plain"]).max() > 0
    # its declared bounds are enforced by the one parser, and a missing reference is one sentence
    assert main([*common, "--toy-tint", f"{trained}=x.png:3", "--out", str(tmp_path / "bad")]) == 2
    assert "outside [0, 2]" in capsys.readouterr().err
    assert main([*common, "--toy-tint", str(trained), "--out", str(tmp_path / "bad")]) == 2
    assert "--tint-image" in capsys.readouterr().err

    # a bench row, selectable and run by the personalize bench
    from tailor.bench import personalize as P

    assert TOY in P.recipes() and TOY in P.default_methods()
    result = P.run(P.Settings(base="tiny", out=tmp_path / "bench", methods=(TOY,), **P.QUICK))
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == ["base", TOY] and rows[TOY]["steps"] == 2 and rows[TOY]["dino_like"] is not None


def test_flags_come_from_the_registry():
    from tailor.compose import generate_flags, shared_inputs

    flags = generate_flags()
    assert set(flags["--control"].methods) == {"controlnet", "controlnet_pp", "controlnext", "t2i_adapter"}
    for flag, method in (("--lora", "lora"), ("--embedding", "textual_inversion"), ("--ip-adapter", "ip_adapter"),
                         ("--instantid", "instantid"), ("--photomaker", "photomaker"), ("--pulid", "pulid"),
                         ("--hypernetwork", "hypernetwork")):  # fmt: skip
        assert flags[flag].methods == (method,)
    assert {"--face", "--ip-image", "--id-images", "--foreground"} <= set(shared_inputs(flags))
    assert set(shared_inputs(flags)["--face"].name for _ in [0]) == {"face"}


def test_methods_sharing_a_flag_must_agree():
    from dataclasses import replace

    from tailor.compose import generate_flags
    from tailor.core.method import get_spec
    from tailor.core.surface import Input

    cn, t2i = get_spec("controlnet"), get_spec("t2i_adapter")
    other = replace(t2i, generate=replace(t2i.generate, input=Input("image", "images")))
    with pytest.raises(RuntimeError, match="--control with different inputs"):
        generate_flags([cn, other])


def test_one_grammar_for_every_value():
    from tailor.core.surface import WeightSpec, parse_weight_spec

    p = parse_weight_spec
    assert p("a/b", "--x") == WeightSpec("a/b")
    assert p("a/b:0.5:0.2:0.8", "--x") == WeightSpec("a/b", (), 0.5, 0.2, 0.8)
    assert p("a=x.png+y.png:0.5", "--x") == WeightSpec("a", ("x.png", "y.png"), 0.5)
    assert p("m:img.png:0.7", "--control", ":") == WeightSpec("m", ("img.png",), 0.7)
    assert p("dir:with:colons/f.safetensors", "--x").path == "dir:with:colons/f.safetensors"
    for bad in ("", "a:0.2:0.8", "a:inf", "a=", "a:0.5:0.8:0.2", "=x.png"):
        with pytest.raises(ConfigError):
            p(bad, "--x")
    with pytest.raises(ConfigError, match="outside"):
        p("a:6", "--x", max_weight=5.0)


def test_generate_config_is_the_one_source_of_settings(tmp_path):
    from tailor.cli.generate import settings_from
    from tailor.core.generation import GenerateConfig

    assert settings_from({}).n == 4 and GenerateConfig().n == 1  # the CLI's -n default, declared on the field
    assert settings_from({"guidance": 3.0, "sampler": "euler"}).guidance == 3.0
    with pytest.raises(ConfigError, match="finite"):
        GenerateConfig(guidance=float("nan"))
    with pytest.raises(ConfigError, match="unknown sampler"):
        GenerateConfig(sampler="heun3")
    result = tailor.Pipeline(tailor.tiny_components()).generate("a star", GenerateConfig(steps=2), seed=3)
    assert result.settings["steps"] == 2 and result.settings["seed"] == 3 and result.seeds == [3]
    assert set(GenerateConfig().to_dict()) <= set(result.settings)
    with pytest.raises(ConfigError, match="unknown option"):
        tailor.Pipeline(tailor.tiny_components()).generate("a star", stepz=2)
