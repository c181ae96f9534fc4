"""Per-feature standardisation of inputs and targets, fitted on training tasks only.

The statistics come from the meta-training data and are applied unchanged to held-out tasks,
so test data never leaks into the preprocessing; ``apply`` stores the normalizer on the data.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor

from suites.data.task_data import TaskData

MIN_STD = 1e-6
"""Features whose standard deviation is below this (e.g. contact forces that stay zero) are
only centred, not scaled."""


@dataclasses.dataclass(frozen=True)
class Normalizer:
    """Mean and standard deviation of every input and target feature.

    Attributes:
        input_mean: (obs_dim + act_dim,) mean of the inputs.
        input_std: (obs_dim + act_dim,) standard deviation of the inputs (1 where constant).
        target_mean: (obs_dim,) mean of the targets.
        target_std: (obs_dim,) standard deviation of the targets (1 where constant).
    """

    input_mean: Tensor
    input_std: Tensor
    target_mean: Tensor
    target_std: Tensor

    def apply_inputs(self, inputs: Tensor) -> Tensor:
        """(inputs - mean) / std over the last axis, e.g. for online steps of a controller."""
        return (inputs - self.input_mean) / self.input_std

    def apply_targets(self, targets: Tensor) -> Tensor:
        """(targets - mean) / std over the last axis."""
        return (targets - self.target_mean) / self.target_std

    def unapply_targets(self, targets: Tensor) -> Tensor:
        """Back to observation-change units: targets * std + mean (e.g. a model's prediction)."""
        return targets * self.target_std + self.target_mean

    def apply(self, data: TaskData) -> TaskData:
        """``data`` with normalised inputs and targets and this normalizer recorded on it."""
        if data.normalizer is not None:
            raise ValueError("Normalizer.apply: data expected raw (normalizer None), got data already normalised")
        for name, mean in (("inputs", self.input_mean), ("targets", self.target_mean)):
            got = getattr(data, name).shape[-1]
            if got != mean.shape[0]:
                raise ValueError(f"Normalizer.apply: {name} expected {mean.shape[0]} features, got {got}")
        return dataclasses.replace(
            data,
            inputs=self.apply_inputs(data.inputs),
            targets=self.apply_targets(data.targets),
            normalizer=self,
        )


def _mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    flat = x.reshape(-1, x.shape[-1]).double()
    mean, std = flat.mean(0), flat.std(0, correction=0)
    std = std.where(std >= MIN_STD, std.new_ones(()))
    return mean.float(), std.float()


def fit_normalizer(train_data: TaskData) -> Normalizer:
    """Mean and std of every feature over all tasks, episodes and steps of ``train_data``.

    Args:
        train_data: raw rollouts of the training tasks only.

    Returns:
        The fitted Normalizer.
    """
    if train_data.normalizer is not None:
        raise ValueError("fit_normalizer: train_data expected raw (normalizer None), got normalised data")
    input_mean, input_std = _mean_std(train_data.inputs)
    target_mean, target_std = _mean_std(train_data.targets)
    return Normalizer(input_mean, input_std, target_mean, target_std)
