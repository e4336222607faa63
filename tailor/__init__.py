"""tailor — personalize and control text-to-image diffusion models.

Python API (mirrors the CLI)::

    import tailor
    comps = tailor.load_components("world")            # or a diffusers folder / single file / "tiny"
    pipe = tailor.Pipeline(comps)
    pipe.attach(tailor.load("outputs/train"), weight=0.8, start=0.0, end=1.0)
    result = pipe.generate("a photo of a red striped star on grass", n=4, seed=0)
    result.images[0].save("star.png")

    method = tailor.get_spec("finetune").method(train_text_encoder=False)
    tailor.train(method, tailor.TrainConfig(base="tiny", steps=10, out="outputs/ft"))
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

__version__ = "0.1.0"

from tailor.core import resources as _resources  # noqa: E402


def _register_world() -> None:
    """The world's names (``world``, ``canny``, ``world:faces``, ...) for core's resolver, as strings: nothing under
    ``tailor.world`` is imported until a name is resolved (core never imports the world, DESIGN.md)."""
    w = "tailor.world.resources"
    _resources.register("base", f"{w}:base", f"{w}:world_names")
    _resources.register("image_encoder", f"{w}:image_encoder", f"{w}:world_names")
    _resources.register("artifact", f"{w}:artifact", f"{w}:artifact_names")
    for method in ("instantid", "photomaker", "pulid", "storygen"):  # ``--instantid world``: its shipped weights
        _resources.register(f"artifact:{method}", f"{w}:{method}", f"{w}:world_names")
    _resources.register("data", f"{w}:data", f"{w}:data_names")
    # ``coco:DIR``: a detection folder's whole images and box crops (ODGEN's first stage trains on it; any method can)
    _resources.register("data", "tailor.synth.real_data:data", "tailor.synth.real_data:data_names")


_register_world()

from tailor.core.artifacts import load  # noqa: E402
from tailor.core.components import Components, load_components  # noqa: E402
from tailor.core.method import Method, MethodSpec, get_spec, registry  # noqa: E402
from tailor.core.pipeline import Pipeline  # noqa: E402
from tailor.core.tiny import tiny_components  # noqa: E402


def __getattr__(name: str):
    # the trainer pulls in accelerate; import it only when asked for
    if name in ("train", "TrainConfig", "TrainResult"):
        from tailor.core import training

        return getattr(training, name)
    raise AttributeError(name)


__all__ = [
    "Components",
    "Method",
    "MethodSpec",
    "Pipeline",
    "get_spec",
    "load",
    "load_components",
    "registry",
    "tiny_components",
    "train",
    "TrainConfig",
    "TrainResult",
    "__version__",
]
