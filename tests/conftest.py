"""Shared fixtures: tiny seeded components of the real classes, offline, single-threaded per worker."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def tiny():
    from tailor.core.components import tiny_components

    return tiny_components(seed=0)


@pytest.fixture
def tiny_xl():
    from tailor.core.components import tiny_components

    return tiny_components(seed=0, sdxl=True)
