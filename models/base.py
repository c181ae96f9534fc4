"""The one stateful interface every zoo model implements, and the checks it shares.

A model maps a sequence ``x`` of shape (B, T, in) or a single step (B, in) and a state to an
output of the same leading shape and the next state::

    state = model.init_state(batch_size=8)
    y, state = model(x, state)                 # (B, T, in) -> (B, T, out)
    y, state = model(x_t, state)               # (B, in)    -> (B, out)
    y, state = model(x, state, reset=done)     # done (B, T) bool: fresh state before step t

The state is a pytree of tensors (tuple / list / dict nesting), every leaf batch-first; a
stateless model returns ``()``. The state is returned, never stored on the module, so the model
stays a pure function of (parameters, x, state) under ``torch.func.functional_call`` and
``torch.func.vmap`` (which MAML needs).

Subclasses implement ``_init_state`` and ``_forward_sequence`` (and may override
``_forward_step`` with an O(1) recurrence, and ``_forward_sequence_with_reset`` with a native
reset). This base class validates inputs and handles ``reset`` generically by splitting the
sequence at the steps where any row resets and re-initialising those rows' state there.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

State = Any
"""A pytree (tuple / list / dict nesting) of batch-first tensors, or ``()`` when stateless."""


_COMPLEX_OF = {torch.float64: torch.complex128, torch.float32: torch.complex64, torch.float16: torch.complex32}
"""The complex dtype of a complex state for each parameter dtype (what ``real * 1j`` gives; bfloat16
and any other: complex64). A table, not a product: a complex32 tensor warns that ComplexHalf is
experimental, and ``init_state`` need not make a tensor for it."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Fields every model config has; each model's config extends it.

    Attributes:
        input_dim: features per step of the input.
        output_dim: features per step of the output.
        hidden_dim: the model's width; the knob ``param_budget`` sizing turns.
    """

    input_dim: int
    output_dim: int
    hidden_dim: int = 64

    def __post_init__(self) -> None:
        self._check_positive_ints("input_dim", "output_dim", "hidden_dim")

    def _check_positive_ints(self, *names: str) -> None:
        """ValueError naming the first of the fields ``names`` that is not a positive int."""
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{type(self).__name__}.{name}: expected a positive int, got {value!r}")


def state_batch_size(state: State) -> int | None:
    """The batch size shared by every leaf of ``state`` (None for a stateless ``()``)."""
    leaves, _ = tree_flatten(state)
    return int(leaves[0].shape[0]) if leaves else None


def select_state(mask: Tensor, fresh: State, old: State) -> State:
    """Per batch row, take ``fresh`` where ``mask`` (B,) is True and ``old`` elsewhere."""

    def pick(f: Tensor, o: Tensor) -> Tensor:
        m = mask.reshape(mask.shape + (1,) * (o.dim() - 1))
        return torch.where(m, f.to(o.dtype), o)

    return tree_map(pick, fresh, old)


class SequenceModel(nn.Module):
    """Base class of the zoo: input checks, step/sequence dispatch, generic reset, save/load.

    Subclasses set ``name`` and ``config_class`` and implement ``_init_state`` and
    ``_forward_sequence``.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    stateless: ClassVar[bool] = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"{type(self).__name__}: expected a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    @property
    def input_dim(self) -> int:
        return self.config.input_dim

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- the interface -------------------------------------------------------------------

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """A fresh state for ``batch_size`` rows (zeros or an empty cache), batch first."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"{self.name}.init_state: batch_size expected a positive int, got {batch_size!r}")
        dev = torch.device(device) if device is not None else self.device
        return self._fresh_state(batch_size, dev)

    def _fresh_state(self, batch_size: int, device: torch.device) -> State:
        """``_init_state`` in the parameters' dtype, so a ``.double()`` model gets a float64 state."""
        state = self._init_state(batch_size, device)
        dtype = next(self.parameters()).dtype if not self.stateless else torch.get_default_dtype()

        def cast(t: Tensor) -> Tensor:
            if t.is_complex():
                return t.to(_COMPLEX_OF.get(dtype, torch.complex64))
            return t.to(dtype) if t.is_floating_point() else t

        return tree_map(cast, state)

    def forward(self, x: Tensor, state: State, reset: Tensor | None = None) -> tuple[Tensor, State]:
        """Run the model over a sequence (B, T, in) or one step (B, in) from ``state``.

        Args:
            x: inputs, (B, T, in) or (B, in).
            state: the state from ``init_state`` or a previous call, for the same B.
            reset: optional bool (B, T) (or (B,) for one step); where True the row's state is
                re-initialised before that step.

        Returns:
            ``(y, state)`` with y of shape (B, T, out) or (B, out), and the state after the last step.
        """
        single_step = self._check_input(x)
        batch = x.shape[0]
        self._check_state(state, batch)
        if reset is not None:
            reset = self._check_reset(reset, x, single_step)
        if single_step:
            if reset is not None:
                state = select_state(reset[:, 0], self._fresh_state(batch, x.device), state)
            return self._forward_step(x, state)
        if reset is None:
            return self._forward_sequence(x, state)
        return self._forward_sequence_with_reset(x, state, reset)

    # ---- what subclasses implement -------------------------------------------------------

    def _init_state(self, batch_size: int, device: torch.device) -> State:
        raise NotImplementedError(f"{type(self).__name__} must implement _init_state")

    def _forward_sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """x (B, T, in) -> y (B, T, out), state after step T."""
        raise NotImplementedError(f"{type(self).__name__} must implement _forward_sequence")

    def _forward_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """x (B, in) -> y (B, out); default: a sequence of length one."""
        y, state = self._forward_sequence(x.unsqueeze(1), state)
        return y.squeeze(1), state

    def _forward_sequence_with_reset(
        self, x: Tensor, state: State, reset: Tensor
    ) -> tuple[Tensor, State]:
        """Generic reset: split at the steps where any row resets; re-initialise those rows.

        Exact for every model (the pieces run from the right states); a model with a native
        reset (the SSM's scan) overrides it to avoid the split.
        """
        boundaries = torch.nonzero(reset.any(dim=0)).flatten().tolist()
        cuts = sorted({0, *boundaries, x.shape[1]})
        fresh = self._fresh_state(x.shape[0], x.device)
        outputs = []
        for start, stop in itertools.pairwise(cuts):
            state = select_state(reset[:, start], fresh, state)
            y, state = self._forward_sequence(x[:, start:stop], state)
            outputs.append(y)
        return torch.cat(outputs, dim=1), state

    # ---- validation ----------------------------------------------------------------------

    def _check_input(self, x: Tensor) -> bool:
        if not isinstance(x, Tensor):
            raise ValueError(f"{self.name}: x expected a torch.Tensor, got {type(x).__name__}")
        shape = x.shape
        dim = len(shape)
        if dim != 2 and dim != 3:
            raise ValueError(
                f"{self.name}: x expected shape (B, T, {self.input_dim}) or (B, {self.input_dim}), "
                f"got {tuple(shape)}"
            )
        if shape[-1] != self.config.input_dim:
            raise ValueError(
                f"{self.name}: x expected {self.input_dim} input features in the last dimension, "
                f"got {shape[-1]} (shape {tuple(shape)})"
            )
        if dim == 3 and shape[1] < 1:
            raise ValueError(f"{self.name}: x expected at least one time step, got shape {tuple(shape)}")
        return dim == 2

    def _check_state(self, state: State, batch: int) -> None:
        # The common states (a tensor, a tuple of tensors, ()) are checked without flattening.
        if isinstance(state, Tensor):
            leaves: Any = (state,)
        elif type(state) is tuple and all(isinstance(leaf, Tensor) for leaf in state):
            leaves = state
        else:
            leaves, _ = tree_flatten(state)
        if self.stateless:
            if leaves:
                raise ValueError(f"{self.name}: stateless model expected state (), got a state with tensors")
            return
        if leaves and all(isinstance(leaf, Tensor) and leaf.dim() > 0 and leaf.shape[0] == batch for leaf in leaves):
            return
        sizes = {int(leaf.shape[0]) if isinstance(leaf, Tensor) and leaf.dim() > 0 else -1 for leaf in leaves}
        raise ValueError(
            f"{self.name}: state expected batch size {batch} (the batch of x) in every tensor, "
            f"got batch sizes {sorted(sizes)}; call init_state({batch})"
        )

    def _check_reset(self, reset: Tensor, x: Tensor, single_step: bool) -> Tensor:
        """Validate ``reset`` and return it as bool (B, T); a one-step reset may be (B,)."""
        batch, steps = x.shape[0], (1 if single_step else x.shape[1])
        if not isinstance(reset, Tensor):
            raise ValueError(
                f"{self.name}: reset expected a bool tensor of shape ({batch}, {steps}), "
                f"got {type(reset).__name__}"
            )
        if single_step and tuple(reset.shape) == (batch,):
            reset = reset.unsqueeze(1)
        if tuple(reset.shape) != (batch, steps):
            raise ValueError(
                f"{self.name}: reset expected shape ({batch}, {steps}) (batch, time of x), "
                f"got {tuple(reset.shape)}"
            )
        return reset.to(torch.bool)

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str) -> None:
        """Write config and weights to ``path`` (a torch file); ``load_model`` reads it back."""
        torch.save(
            {"name": self.name, "config": dataclasses.asdict(self.config), "state_dict": self.state_dict()},
            path,
        )


def _meta_param_count(build: Callable[[], nn.Module]) -> int:
    """Parameter count of a module built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        module = build()
    return sum(p.numel() for p in module.parameters())
