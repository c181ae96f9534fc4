"""Meta-features for monitoring a deployed model: how sure it is and how far its inputs moved.

- ``categorical_features``: predictive entropy and confidence (max probability) of logits.
- ``gaussian_features``: predictive variance and differential entropy of a diagonal Gaussian.
- ``FeatureShift``: a standardised mean distance of each batch of inputs / features against
  exponential moving statistics of the ones seen before.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def categorical_features(logits: Tensor) -> dict[str, float]:
    """Mean predictive entropy (nats) and mean confidence of softmax(logits).

    Shapes:
        logits: (..., C); the means run over every leading position.
    """
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(f"outputs: expected logits (..., C) with C >= 2 classes, got shape {tuple(logits.shape)}")
    log_p = torch.log_softmax(logits.detach().double(), dim=-1)
    p = log_p.exp()
    return {
        "entropy": float(-(p * log_p).sum(-1).mean()),
        "confidence": float(p.max(-1).values.mean()),
    }


def gaussian_features(mean: Tensor, log_std: Tensor) -> dict[str, float]:
    """Mean predictive variance and mean differential entropy of N(mean, exp(log_std)^2).

    The entropy of a diagonal Gaussian is sum_d (log_std_d + 0.5 log(2 pi e)).

    Shapes:
        mean, log_std: (..., D), broadcastable to each other.
    """
    try:
        fits = torch.broadcast_shapes(mean.shape, log_std.shape) == mean.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"log_std: expected a shape broadcastable to the outputs' {tuple(mean.shape)}, got {tuple(log_std.shape)}"
        )
    log_std = log_std.detach().double().expand(mean.shape)
    entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)
    return {"variance": float(torch.exp(2 * log_std).mean()), "entropy": float(entropy.mean())}


class FeatureShift:
    """Exponential moving mean and variance per feature, and the shift of a batch against them.

    shift = sqrt(mean_f (mu_batch_f - mu_f)^2 / (var_f + eps)): the root mean square over
    features of the standardised mean difference (an effect size, so it does not grow with the
    batch size). The statistics are updated with each batch after it is measured.

    Args:
        decay: weight of the old statistics in each update, in [0, 1).
        eps: added to the variance so constant features do not divide by zero.
    """

    def __init__(self, decay: float = 0.9, eps: float = 1e-6) -> None:
        self.decay = decay
        self.eps = eps
        self.mean: Tensor | None = None
        self.var: Tensor | None = None

    def reset(self) -> None:
        """Forget the statistics; the next batch becomes the reference."""
        self.mean, self.var = None, None

    def update(self, features: Tensor) -> float:
        """Measure the shift of ``features`` (..., F), then fold them into the statistics.

        Returns:
            The shift; NaN for the first batch, which has nothing to be compared with.
        """
        if not isinstance(features, Tensor) or features.dim() < 1:
            raise ValueError(f"features: expected a tensor (..., F), got {features!r}")
        flat = features.detach().double().reshape(-1, features.shape[-1])  # (N, F)
        batch_mean = flat.mean(0)
        batch_var = flat.var(0, unbiased=False)
        if self.mean is None or self.var is None:
            self.mean, self.var = batch_mean, batch_var
            return float("nan")
        if self.mean.shape != batch_mean.shape:
            raise ValueError(
                f"features: expected {self.mean.shape[0]} features in the last dimension "
                f"(as before), "
                f"got {batch_mean.shape[0]}"
            )
        shift = float(((batch_mean - self.mean).pow(2) / (self.var + self.eps)).mean().sqrt())
        d = self.decay
        delta = batch_mean - self.mean
        self.mean = self.mean + (1 - d) * delta
        # the variance of the d : (1 - d) mixture of the old statistics and this batch
        self.var = d * self.var + (1 - d) * batch_var + d * (1 - d) * delta.pow(2)
        return shift
