"""The models whose no-grad step runs on fused weights cached by ``models.fused_step.WeightCache``
(the SSM and the transformer), described once for the tests of that cache.

A case says how to build a small model, a step input with its state, and the uncached
differentiable step of the model as it is now (the reference every fused step is checked
against), and names a few of the model's own parameters that the invalidation tests change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import make_model
from models.base import SequenceModel, State
from models.ssm import SSM
from models.transformer import Transformer
from tests.models.pytree_error import max_abs_error

IN, OUT, WIDTH, WINDOW = 4, 3, 10, 5
TOL = 1e-5  # float32; the fused products round differently from the step's elementwise form


@dataclasses.dataclass(frozen=True)
class CachedStepCase:
    """One model with a cached fused step.

    Attributes:
        name: registry name.
        cls: its class (whose ``_fuse_step_weights`` the tests count).
        config: ``make_model`` keywords of the small test model.
        reference: the uncached differentiable step, (model, x, state) -> (y, state).
        history: steps run before the step under test (the transformer's cache half full).
        scale_in_place: changes one leaf of the last layer in place under no_grad.
        change_view: changes a view of a leaf of the first layer in place.
        data_leaf: the parameter whose ``.data`` is reassigned.
        replace_submodule: puts a new module in place of one of the model's.
        replace_parameter: puts a new Parameter in place of one of the model's.
    """

    name: str
    cls: type[SequenceModel]
    config: dict[str, int]
    reference: Callable[[SequenceModel, Tensor, State], tuple[Tensor, State]]
    history: int
    scale_in_place: Callable[[SequenceModel], None]
    change_view: Callable[[SequenceModel], None]
    data_leaf: Callable[[SequenceModel], nn.Parameter]
    replace_submodule: Callable[[SequenceModel], None]
    replace_parameter: Callable[[SequenceModel], None]

    def model(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> SequenceModel:
        torch.manual_seed(seed)
        model = make_model(self.name, IN, OUT, **self.config)
        assert isinstance(model, self.cls)
        return model.to(dtype).eval()

    def inputs(self, model: SequenceModel, batch: int = 5, seed: int = 1, history: int | None = None) -> tuple:
        """A step input and the state after ``history`` steps (default: the case's own) from a random state."""
        gen = torch.Generator().manual_seed(seed)
        dtype = next(model.parameters()).dtype
        x = torch.randn(batch, IN, generator=gen, dtype=dtype)
        state = model.init_state(batch)
        steps = self.history if history is None else history
        with torch.no_grad():
            if self.cls is SSM:  # any state is reachable: start from a random one
                state = tuple(torch.randn(s.shape, generator=gen, dtype=dtype) for s in state)
            if steps:
                _, state = model(torch.randn(batch, steps, IN, generator=gen, dtype=dtype), state)
        return x, state

    def fresh_error(self, model: SequenceModel, x: Tensor, state: State) -> float:
        """A no-grad step (fused, maybe cached) against the differentiable step of the model now."""
        with torch.no_grad():
            return max_abs_error(model(x, state), self.reference(model, x, state))


def count_builds(cls: type[SequenceModel], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patches ``cls._fuse_step_weights`` to append 1 to the returned list each time it forms the
    fused weights (for the ``builds`` fixtures)."""
    made: list[int] = []
    real = cls._fuse_step_weights  # type: ignore[attr-defined]

    def counted(self: SequenceModel) -> object:
        made.append(1)
        return real(self)

    monkeypatch.setattr(cls, "_fuse_step_weights", counted)
    return made


def step(model: SequenceModel, x: Tensor, state: State) -> Tensor:
    """The output of one no-grad step."""
    with torch.no_grad():
        out: Tensor = model(x, state)[0]
    return out


def _transformer_reference(model: SequenceModel, x: Tensor, state: State) -> tuple[Tensor, State]:
    assert isinstance(model, Transformer) and isinstance(state, tuple)
    seen = F.pad(state[0], (0, 1), value=True)
    mask = torch.where(seen, 0.0, float("-inf")).unsqueeze(1)
    return model._differentiable_step(x, seen[:, 1:], state[1:], mask)


def _ssm_reference(model: SequenceModel, x: Tensor, state: State) -> tuple[Tensor, State]:
    assert isinstance(model, SSM)
    return model._differentiable_step(x, state)


def _no_grad(change: Callable[[SequenceModel], None]) -> Callable[[SequenceModel], None]:
    def run(model: SequenceModel) -> None:
        with torch.no_grad():
            change(model)

    return run


def _set(path: str, make: Callable[[SequenceModel], object]) -> Callable[[SequenceModel], None]:
    """Assign ``make(model)`` to the attribute at dotted ``path`` of the model."""

    def run(model: SequenceModel) -> None:
        *parents, last = path.split(".")
        owner: object = model
        for part in parents:
            owner = owner[int(part)] if part.isdigit() else getattr(owner, part)  # type: ignore[index]
        torch.manual_seed(9)
        setattr(owner, last, make(model))

    return run


SSM_CASE = CachedStepCase(
    name="ssm", cls=SSM, config={"hidden_dim": WIDTH, "state_dim": 6}, reference=_ssm_reference, history=0,
    scale_in_place=_no_grad(lambda m: m.blocks[1].recurrence.nu_log.sub_(0.5)),
    change_view=_no_grad(lambda m: m.blocks[0].recurrence.C[:, 0].mul_(2.0)),  # a view shares the version counter
    data_leaf=lambda m: m.blocks[0].glu_gate.weight,
    replace_submodule=_set("blocks.1.glu_value", lambda m: nn.Linear(WIDTH, WIDTH)),
    replace_parameter=_set("blocks.0.recurrence.D", lambda m: nn.Parameter(m.blocks[0].recurrence.D.detach() + 1)),
)  # fmt: skip

TRANSFORMER_CASE = CachedStepCase(
    name="transformer", cls=Transformer, config={"hidden_dim": WIDTH, "num_heads": 3, "window": WINDOW},
    reference=_transformer_reference, history=2,  # two of the W - 1 = 4 cache slots empty
    scale_in_place=_no_grad(lambda m: m.blocks[1].attn.rel_bias.mul_(-3.0)),
    change_view=_no_grad(lambda m: m.blocks[0].attn.qkv.weight[:, 0].mul_(4.0)),
    data_leaf=lambda m: m.blocks[0].mlp[2].weight,
    replace_submodule=_set("blocks.1.attn.out", lambda m: nn.Linear(9, WIDTH)),
    replace_parameter=_set("norm.bias", lambda m: nn.Parameter(m.norm.bias.detach() + 1.0)),
)  # fmt: skip

CASES = (SSM_CASE, TRANSFORMER_CASE)
