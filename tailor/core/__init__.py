"""Shared machinery: components, the method contract and registry, the pipeline, the trainer, files.

Nothing in ``core`` names a specific method or imports a package above it (DESIGN.md; ``tests/test_layering.py``):
names such as ``world``, ``canny`` or ``world:faces`` resolve through :mod:`tailor.core.resources`, which the packages
above register into.
"""
