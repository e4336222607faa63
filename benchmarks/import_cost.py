"""Resident memory each import adds to a process that already has torch, diffusers and transformers loaded (what a
training script loads anyway), in the order given (issue #8's peak-RSS target):

    python benchmarks/import_cost.py tailor tailor.cli tailor.core.training spec:textual_inversion registry

``spec:NAME`` is ``get_spec(NAME)``, ``registry`` loads every method, ``build`` builds the whole CLI."""

from __future__ import annotations

import importlib
import sys


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def load(name: str) -> None:
    if name == "registry":
        from tailor.core.method import registry

        registry()
    elif name == "build":
        from tailor.cli import build

        build()
    elif name.startswith("spec:"):
        from tailor.core.method import get_spec

        get_spec(name[5:])
    else:
        importlib.import_module(name)


def main(names: list[str]) -> None:
    import diffusers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from diffusers import StableDiffusionPipeline  # noqa: F401

    start = rss_mb()
    print(f"{'torch + diffusers + transformers':<40} {start:8.1f} MB")
    for name in names:
        before = rss_mb()
        load(name)
        print(f"{name:<40} {rss_mb() - before:+8.1f} MB")
    print(f"{'all of the above':<40} {rss_mb() - start:+8.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
