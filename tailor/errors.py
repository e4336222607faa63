"""User-facing errors.

Every error a user can cause (bad image, wrong base, missing file, bad option) is raised as a
subclass of :class:`TailorError` with one sentence that names the input and the fix. The CLI prints
the message without a traceback and exits with status 2.
"""

from __future__ import annotations


class TailorError(Exception):
    """Base class of every error tailor raises on purpose for a user to read."""

    exit_code = 2


class InputError(TailorError):
    """An input file or folder (image, dataset, prompt file) is missing or unusable."""


class FormatError(TailorError):
    """A weight or config file is not in a format tailor can read, or is corrupt."""


class IncompatibleError(TailorError):
    """A weight file belongs to another base model, width or method."""


class ConfigError(TailorError):
    """An option or config value is unknown, of the wrong type or out of range."""


class UnsafeFileError(FormatError):
    """A pickle would need code execution to load; tailor refuses it."""


class TrainingError(TailorError):
    """Training cannot go on (non-finite loss, no data, nothing to train)."""


class EnvironmentFault(TailorError):
    """The file system refused a read or write (exists, not a folder, read-only, full, permission, link loop...)."""
