"""The one tolerance check the model tests share: max |a - b| over two pytrees of tensors."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils._pytree import tree_flatten


def max_abs_error(a: Any, b: Any) -> float:
    """Largest absolute difference between matching leaves of two pytrees.

    ``inf`` when the trees differ in structure, or a pair of leaves in shape or dtype; ``nan``
    when a leaf holds NaN. So ``assert max_abs_error(a, b) <= atol`` is as strict as
    ``torch.testing.assert_close(a, b, atol=atol, rtol=0)`` leaf by leaf.
    """
    la, spec_a = tree_flatten(a)
    lb, spec_b = tree_flatten(b)
    if spec_a != spec_b:
        return math.inf
    worst = 0.0
    for x, y in zip(la, lb, strict=True):
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            if x != y:
                return math.inf
            continue
        if x.shape != y.shape or x.dtype != y.dtype:
            return math.inf
        if x.numel() == 0:
            continue
        diff = (x.double() - y.double()).abs().max().item() if x.dtype != torch.bool else float((x != y).any())
        if math.isnan(diff):
            return math.nan
        worst = max(worst, diff)
    return worst
