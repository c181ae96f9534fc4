"""Discounted returns-to-go and advantages of masked episodes.

References:
    Williams (1992), REINFORCE: the return-to-go R_t = sum_{t' >= t} gamma^(t' - t) r_t' as the
    weight of grad log pi(a_t | s_t), minus a baseline b(s_t).
    Rothfuss et al. (2019), ProMP (meta_policy_search/samplers/meta_sample_processor.py):
    advantages normalised per task.
"""

from __future__ import annotations

import torch
from torch import Tensor


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """R_t = r_t + gamma * R_{t+1} within the episode (masked steps contribute 0).

    Args:
        rewards: (..., T).
        mask: (..., T), 1.0 while the episode runs.
        gamma: discount in [0, 1].

    Returns:
        Returns-to-go, (..., T); 0 at masked steps.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"discounted_returns: gamma expected a float in [0, 1], got {gamma!r}")
    r = rewards * mask
    out = torch.zeros_like(r)
    running = torch.zeros_like(r[..., 0])
    for t in range(r.shape[-1] - 1, -1, -1):
        running = r[..., t] + gamma * running
        out[..., t] = running
    return out * mask


def normalize_advantages(adv: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """(A - mean) / (std + eps) over the valid steps of each task; masked steps set to 0.

    Shapes:
        adv, mask (K, N, T) -> (K, N, T); statistics per task (over N and T).
    """
    count = mask.sum(dim=(1, 2), keepdim=True).clamp(min=1.0)
    mean = (adv * mask).sum(dim=(1, 2), keepdim=True) / count
    var = ((adv - mean) ** 2 * mask).sum(dim=(1, 2), keepdim=True) / count
    return (adv - mean) / (var.sqrt() + eps) * mask
