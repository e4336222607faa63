"""The named-resource resolver (tailor.core.resources) and the world's registrations in it."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import tailor
from tailor.core import resources
from tailor.errors import InputError


@pytest.fixture
def kind():
    name = "test-kind"
    yield name
    resources._providers.pop(name, None)
    resources._names.pop(name, None)


def test_first_answer_wins_and_unknown_is_none(kind):
    resources.register(kind, lambda n: None)
    resources.register(kind, lambda n: f"a:{n}" if n == "x" else None, lambda: ["x"])
    resources.register(kind, lambda n: f"b:{n}", lambda: ["x", "y"])
    assert resources.resolve(kind, "x") == "a:x"
    assert resources.resolve(kind, "z") == "b:z"
    assert resources.resolve("no-such-kind", "x") is None
    assert resources.names(kind) == ["x", "y"]
    assert resources.choices(kind, "tiny") == "'tiny', 'x' or 'y'"


def test_string_providers_import_on_first_use(kind, monkeypatch):
    module = types.ModuleType("tailor_test_provider")
    module.calls = 0

    def provide(name):
        module.calls += 1
        return Path("/somewhere") / name if name == "mine" else None

    module.provide = provide
    resources.register(kind, "tailor_test_provider:provide")
    resources.register(kind, "tailor_test_provider:provide")  # twice: still one provider
    assert "tailor_test_provider" not in sys.modules  # registering imported nothing
    monkeypatch.setitem(sys.modules, "tailor_test_provider", module)
    assert resources.resolve(kind, "mine") == Path("/somewhere/mine")
    assert resources.resolve(kind, "other") is None and module.calls == 2


def test_a_provider_that_cannot_load_is_one_sentence(kind):
    resources.register(kind, "tailor_no_such_module_xyz:provide")
    with pytest.raises(InputError, match=r"provider tailor_no_such_module_xyz:provide cannot be loaded"):
        resources.resolve(kind, "x")


def test_world_registers_its_names():
    from tailor.world import zoo

    assert resources.resolve("base", "world") == zoo.WEIGHTS / "base"
    assert resources.resolve("base", "nope") is None
    assert resources.resolve("image_encoder", "world") == zoo.WEIGHTS / "clip_vision"
    assert set(resources.names("artifact")) >= {"canny", "world-plus"}
    assert resources.resolve("artifact:pulid", "world") == zoo.WEIGHTS / "adapters" / "pulid"
    assert resources.resolve("artifact:pulid", "canny") is None
    factory = resources.resolve("data", "world:objects")
    train, val = factory(16, 0, True)
    assert len(val) == 32 and "pixel_values" in train[0]
    assert resources.resolve("data", "some/folder") is None


def test_unknown_names_are_one_sentence_naming_the_choices(tmp_path):
    with pytest.raises(InputError, match=r"one of 'tiny', 'tiny-xl' or 'world'\.$"):
        tailor.load_components("no-such-base")
    with pytest.raises(InputError, match=r"'canny', .* 'world-plus'"):
        tailor.load("no-such-adapter")
    from tailor.core.training.data import build_datasets

    with pytest.raises(InputError, match=r"world-subject"):
        build_datasets(str(tmp_path / "missing"), 16, 0)
