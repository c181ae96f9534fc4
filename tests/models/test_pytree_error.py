"""The shared tolerance check fails where torch.testing.assert_close would."""

from __future__ import annotations

import math

import torch

from tests.models.pytree_error import max_abs_error


def test_max_abs_error_over_matching_trees() -> None:
    a = {"h": torch.zeros(2, 3), "c": (torch.ones(2), torch.tensor([True, False]))}
    b = {"h": torch.full((2, 3), 0.25), "c": (torch.ones(2), torch.tensor([True, False]))}
    assert max_abs_error(a, b) == 0.25
    assert max_abs_error((), ()) == 0.0


def test_mismatches_are_infinite_and_nan_is_never_close() -> None:
    assert max_abs_error(torch.zeros(2), torch.zeros(3)) == math.inf
    assert max_abs_error(torch.zeros(2), torch.zeros(2, dtype=torch.float64)) == math.inf
    assert max_abs_error((torch.zeros(1),), (torch.zeros(1), torch.zeros(1))) == math.inf
    assert max_abs_error(torch.tensor([True]), torch.tensor([False])) == 1.0
    assert not max_abs_error(torch.tensor([math.nan]), torch.tensor([math.nan])) <= 1.0
