"""Shared machinery: components, the method contract and registry, the pipeline, the trainer, files.

Nothing in ``core`` names a specific method (DESIGN.md).
"""
