"""A minimal stand-in for ``torchvision``, used only by ``benchmarks/vs_diffusers.py``.

diffusers' example training scripts import ``torchvision.transforms`` for their image preprocessing, and torchvision
has no CPU build for the torch in this environment. The benchmark puts ``benchmarks/shims`` on the reference script's
``PYTHONPATH`` (never tailor's, never the tests'), so the scripts run unchanged. Only what those scripts call exists:
``transforms.Compose / Resize / CenterCrop / RandomCrop / ToTensor / Normalize / RandomHorizontalFlip /
InterpolationMode`` and ``transforms.functional.crop / resize / hflip / to_tensor / normalize``, on PIL images (and
tensors for ``Normalize``), with torchvision's semantics (shorter side resize, rounded centre crop, torch RNG).
It is tailor's own code (no torchvision source); no package metadata, so libraries that probe for torchvision through
``importlib.metadata`` still see it as absent.
"""

__version__ = "0.0.0+tailor-benchmark-shim"
