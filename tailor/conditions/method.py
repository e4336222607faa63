"""The base of methods fed a condition image made by :mod:`tailor.conditions` (ControlNet, T2I-Adapter, ControlNeXt).

:class:`tailor.core.model_method.SingleModelMethod` holds the model, its files and the sampling-time condition; it
knows no condition kinds (core imports nothing above it). This subclass adds what needs them: the training data
gets ``item["condition"]`` of the config's ``condition`` kind (:class:`~tailor.conditions.data.ConditionDataset`:
ground truth where the data carries it), and a batch without one (a validation set) gets it from its images.
"""

from __future__ import annotations

from typing import Any

import torch

from tailor.conditions.data import ConditionDataset, batch_conditions
from tailor.core.model_method import SingleModelMethod


class ConditionedModelMethod(SingleModelMethod):
    """A :class:`SingleModelMethod` whose config names a condition kind (``config.condition``)."""

    def wrap_dataset(self, dataset, config):
        """Add ``condition`` to every item (ground truth where the data has it); remember the seed."""
        self._seed = int(config.seed)
        return ConditionDataset(dataset, self.config.condition)

    def batch_condition(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch_conditions(batch, self.config.condition)
