"""``init_state`` gives the state in the parameters' precision, complex leaves in its complex type."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from models import MODELS, make_model
from models.base import ModelConfig, SequenceModel, State


class ComplexStateModel(SequenceModel):
    """A model whose state has a complex leaf, a real leaf and an integer leaf (no registry entry)."""

    name = "complex-state-test"
    config_class = ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.proj = nn.Linear(config.input_dim, config.output_dim)

    def _init_state(self, batch_size: int, device: torch.device) -> State:
        return (
            torch.zeros(batch_size, 3, dtype=torch.complex64, device=device),
            torch.zeros(batch_size, 2, device=device),
            torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def _forward_sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self.proj(x), state


@pytest.mark.parametrize(
    ("dtype", "complex_dtype"),
    [
        (torch.float64, torch.complex128),
        (torch.float32, torch.complex64),
        (torch.float16, torch.complex32),
        (torch.bfloat16, torch.complex64),
    ],
)
def test_state_leaves_follow_the_parameter_dtype(dtype: torch.dtype, complex_dtype: torch.dtype) -> None:
    model = ComplexStateModel(ModelConfig(input_dim=2, output_dim=2)).to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a complex32 tensor itself warns that ComplexHalf is experimental
        complex_leaf, real_leaf, int_leaf = model.init_state(4)
    assert complex_leaf.dtype == complex_dtype and complex_leaf.shape == (4, 3)
    assert real_leaf.dtype == dtype
    assert int_leaf.dtype == torch.long
    # the same complex type as real * 1j gives, for the types where that product is well defined
    if dtype != torch.float16:
        assert complex_dtype == (torch.ones((), dtype=dtype) * 1j).dtype


@pytest.mark.parametrize("name", sorted(MODELS))
def test_half_precision_models_with_real_states_start_without_a_complex_half_warning(name: str) -> None:
    model = make_model(name, input_dim=3, output_dim=2, hidden_dim=8).half()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was: "ComplexHalf support is experimental", from a probe tensor
        state = model.init_state(2)
    leaves = [t for t in torch.utils._pytree.tree_leaves(state) if t.is_floating_point()]
    assert all(t.dtype == torch.float16 for t in leaves)
