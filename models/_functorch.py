"""The private torch.func (functorch) queries the zoo uses, and the only place that calls them.

torch.func has no public way to ask whether a transform is running or what a tensor is beneath
its transforms' wrappers. The models ask only to choose between computations of the same function
(a form whose derivatives batch correctly under vmap, a cheaper layout, a cheaper mask), which
give the same values up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch._C import _functorch as _C

transforms_active: Callable[[], bool] = torch._C._are_functorch_transforms_active
"""``transforms_active()``: whether any torch.func transform (vmap, grad, jvp, ...) is running on
this thread. Private API because torch.func has no public query; this is the check torch.func
itself makes. The C function itself, not a wrapper: sequence paths ask it once per layer."""


def is_grad_tracked(t: Tensor) -> bool:
    """Whether ``t`` is a ``torch.func.grad`` level's tracking wrapper: an input of the function
    that grad transforms, or a tensor computed from one inside it.

    Private API because inside a transform the wrapper answers every public query (``requires_grad``,
    ``grad_fn``) as a plain tensor would.
    """
    return _C.is_gradtrackingtensor(t)


def unwrapped(t: Tensor) -> Tensor:
    """``t`` with every transform's wrapper removed: the tensor that holds the values (under vmap,
    every task's rows).

    Private API because a value read on a wrapper (``bool(t.all())``) is an error under vmap, and
    no public API reaches beneath it.
    """
    while _C.is_functorch_wrapped_tensor(t):
        t = _C.get_unwrapped(t)
    return t
