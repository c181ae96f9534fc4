"""The transformer's cheaper sequence paths for an empty or a full KV cache.

``cache_fill`` reads whether no slot or every slot of the incoming cache is valid (through
torch.func's wrappers, for MAML's vmap): an empty cache is left out of a single block's keys, a
full one needs no mask. Each test compares with the general masked path, forced by patching
``cache_fill`` to answer None, for every kind of state: the results must agree to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, vmap

import models.kernels.banded_attention as banded_attention
from models.base import select_state
from models.kernels.banded_attention import cache_fill
from models.transformer import Transformer
from tests.models.pytree_error import max_abs_error
from tests.models.test_transformer import IN, OUT, OpRecorder, _model

WINDOW = 5  # C = 4 cache slots


@contextmanager
def general_path() -> Iterator[None]:
    """Every call takes the general path: the cache's fill is never known."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(banded_attention, "cache_fill", lambda valid: None)
        yield


def _states(model: Transformer) -> dict[str, tuple[Tensor, ...]]:
    """One state of each kind, batch 3."""
    fresh = model.init_state(3)
    with torch.no_grad():
        _, partial = model(torch.randn(3, 2, IN), fresh)
        _, full = model(torch.randn(3, 9, IN), fresh)
    mixed = select_state(torch.tensor([True, False, False]), fresh, full)  # row 0 fresh
    # empty slots holding non-zero values: the next state carries them as before
    junk = (fresh[0], *(torch.randn_like(kv) for kv in fresh[1:]))
    return {"fresh": fresh, "partial": partial, "full": full, "mixed": mixed, "junk": junk}


def test_cache_fill_reads_every_row_and_every_task_through_transforms() -> None:
    model = _model(window=WINDOW)
    states = _states(model)
    assert cache_fill(states["fresh"][0]) == "empty"
    assert cache_fill(states["full"][0]) == "full"
    assert cache_fill(states["partial"][0]) is None
    assert cache_fill(states["mixed"][0]) is None
    seen: list[str | None] = []

    def record(valid: Tensor, w: Tensor) -> Tensor:
        seen.append(cache_fill(valid))
        return (w * w).sum()

    both_fresh = torch.stack([states["fresh"][0]] * 2)
    fresh_and_full = torch.stack([states["fresh"][0], states["full"][0]])
    w = torch.ones(3)
    for valid in (both_fresh, fresh_and_full):
        vmap(grad(lambda w, v: record(v, w)), in_dims=(None, 0))(w, valid)
    assert seen == ["empty", None]  # one task with a valid slot: not empty for any task
    assert cache_fill(torch.zeros(2, 0, dtype=torch.bool)) == "full"  # W = 1: nothing to mask
    assert cache_fill(torch.zeros(2, 4, dtype=torch.bool, device="meta")) is None


@pytest.mark.parametrize("steps", [2, 4, 5, 13])  # T < C, T = C, one full block, several blocks
@pytest.mark.parametrize("kind", ["fresh", "partial", "full", "mixed", "junk"])
@pytest.mark.parametrize("with_reset", [False, True])
def test_every_state_gives_the_general_paths_outputs_states_and_gradients(
    steps: int, kind: str, with_reset: bool
) -> None:
    model = _model(window=WINDOW, hidden_dim=12, num_heads=3)
    state = _states(model)[kind]
    x = torch.randn(3, steps, IN)
    reset = None
    if with_reset:
        reset = torch.zeros(3, steps, dtype=torch.bool)
        reset[1, steps // 2] = reset[2, 0] = True

    def run() -> tuple[Tensor, tuple[Tensor, ...], list[Tensor]]:
        y, s = model(x, state, reset=reset)
        grads = torch.autograd.grad((y * y).sum(), list(model.parameters()))
        return y, s, list(grads)

    y, s, g = run()
    with general_path():
        y_ref, s_ref, g_ref = run()
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=0)
    assert max_abs_error(s, s_ref) <= 1e-6
    assert s[0].dtype == torch.bool and torch.equal(s[0], s_ref[0])
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _score_widths(run: Callable[[], object]) -> set[int]:
    """Last dims of every 5-D or 4-D op output whose second-last dim is the chunk's T = 6."""
    with OpRecorder() as rec:
        run()
    return {shape[-1] for _, shapes in rec.ops for shape in shapes if len(shape) >= 4 and shape[-2] == 6}


def test_an_empty_cache_is_left_out_of_a_single_blocks_keys() -> None:
    """From a fresh state the scores are (B, H, T, T), not (B, H, T, C + T); from a partly
    filled one, and on the general path, they keep the C = 7 cache keys."""
    model = _model(window=8)  # C = 7, one block of T = 6 queries
    x = torch.randn(2, 6, IN)
    fresh = model.init_state(2)
    _, partial = model(torch.randn(2, 3, IN), fresh)
    assert 6 + 7 not in _score_widths(lambda: model(x, fresh))
    assert 6 + 7 in _score_widths(lambda: model(x, partial))
    with general_path():
        assert 6 + 7 in _score_widths(lambda: model(x, fresh))


def test_fresh_states_second_order_maml_gradient_under_vmap_equals_the_general_path() -> None:
    """MetaMAML's vmapped computation (fresh states batched over tasks, grad inside vmap, outer
    gradient by autograd) on the empty-cache path, against the general path, in float64."""
    model = _model(window=WINDOW).double()
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    tasks = 3
    xs = torch.randn(tasks, 2, 8, IN, dtype=torch.float64)
    ys = torch.randn(tasks, 2, 8, OUT, dtype=torch.float64)
    states = tuple(v.expand(tasks, *v.shape).clone() for v in model.init_state(2))

    def loss(p, x, y, s):
        return F.mse_loss(functional_call(model, p, (x, s))[0], y)

    def meta_loss(p, x, y, s):  # one inner SGD step on the first half, loss on the second
        g = grad(loss)(p, x[:, :4], y[:, :4], s)
        return loss({k: p[k] - 0.1 * g[k] for k in p}, x[:, 4:], y[:, 4:], s)

    def meta_gradient() -> tuple[Tensor, ...]:
        outer = vmap(meta_loss, in_dims=(None, 0, 0, 0))(params, xs, ys, states).mean()
        return torch.autograd.grad(outer, list(params.values()))

    fast = meta_gradient()
    with general_path():
        reference = meta_gradient()
    for k, a, b in zip(params, fast, reference, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0, msg=k)
    assert all(g.abs().sum() > 0 for g in reference)


@pytest.mark.parametrize("with_reset", [False, True])
def test_second_order_gradients_from_a_fresh_state_are_correct(with_reset: bool) -> None:
    model = _model(window=4, hidden_dim=4, num_heads=2).double()
    x = torch.randn(2, 4, IN, dtype=torch.float64, requires_grad=True)
    reset = torch.zeros(2, 4, dtype=torch.bool)
    reset[1, 2] = with_reset

    def f(inp: Tensor) -> Tensor:
        return model(inp, model.init_state(2), reset=reset)[0]

    assert torch.autograd.gradgradcheck(f, (x,), eps=1e-6, atol=1e-5, fast_mode=True)
