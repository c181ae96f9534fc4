"""models/layers.py: the LayerNorm paths (fused, split under torch.func, elementary composite)
and the weight cache's rules (the cache itself is exercised through each model's fused step)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor
from torch.func import grad, vmap

from models.layers import LayerNorm, layer_norm, layer_norm_composite, layer_norm_split

TASKS, D = 3, 6


def _meta_loss(norm):  # type: ignore[no-untyped-def]
    """One inner gradient step on (weight, bias, x), then the loss again: a second-order function
    of the inputs, as MetaMAML's vectorised path builds it."""

    def inner(w: Tensor, b: Tensor, x: Tensor, r: Tensor) -> Tensor:
        y = norm(x, w, b, 1e-5) * r
        return y.pow(2).sum() + y.sum()

    def outer(w: Tensor, b: Tensor, x: Tensor, r: Tensor) -> Tensor:
        gw, gb, gx = grad(inner, argnums=(0, 1, 2))(w, b, x, r)
        return inner(w - 0.1 * gw, b - 0.1 * gb, x - 0.1 * gx, r)

    return outer


@pytest.mark.parametrize(("x_dim", "w_dim", "b_dim"), list(itertools.product([0, None], repeat=3)))
def test_split_layer_norm_is_exact_to_second_order_under_vmap(x_dim, w_dim, b_dim) -> None:  # type: ignore[no-untyped-def]
    """vmap of torch.func.grad, then autograd through it (MetaMAML's fast path), for every mix
    of batched and unbatched input, weight and bias, equals the per-task loop over the
    elementary composite: values and gradients, float64."""
    gen = torch.Generator().manual_seed(0)
    full = {
        "x": torch.randn(TASKS, 2, 5, D, generator=gen, dtype=torch.float64) * 3 + 1,
        "w": torch.randn(TASKS, D, generator=gen, dtype=torch.float64),
        "b": torch.randn(TASKS, D, generator=gen, dtype=torch.float64),
    }
    dims = {"x": x_dim, "w": w_dim, "b": b_dim}
    inputs = {k: (v if dims[k] == 0 else v[0]).requires_grad_() for k, v in full.items()}
    r = torch.randn(TASKS, 2, 5, D, generator=gen, dtype=torch.float64)

    out = vmap(_meta_loss(layer_norm_split), in_dims=(w_dim, b_dim, x_dim, 0))(
        inputs["w"], inputs["b"], inputs["x"], r
    )
    g = torch.autograd.grad(out.sum(), [inputs["w"], inputs["b"], inputs["x"]])

    def task(k: str, i: int) -> Tensor:
        return inputs[k][i] if dims[k] == 0 else inputs[k]

    ref = torch.stack(
        [_meta_loss(layer_norm_composite)(task("w", i), task("b", i), task("x", i), r[i]) for i in range(TASKS)]
    )
    g_ref = torch.autograd.grad(ref.sum(), [inputs["w"], inputs["b"], inputs["x"]])
    torch.testing.assert_close(out, ref, atol=1e-9, rtol=1e-12)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-12)
    assert all(a.abs().sum() > 0 for a in g)


def test_layer_norm_takes_the_split_path_only_under_a_transform(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = layer_norm_split

    def counted(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args)

    monkeypatch.setattr("models.layers.layer_norm_split", counted)
    norm = LayerNorm(D)
    x = torch.randn(4, D)
    expected = torch.nn.functional.layer_norm(x, (D,), norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(norm(x), expected, atol=0, rtol=0)
    assert calls == []
    torch.testing.assert_close(vmap(norm)(x[:, None]), expected[:, None], atol=1e-6, rtol=0)
    assert calls == [1]
    torch.testing.assert_close(layer_norm(x, norm.weight, norm.bias, norm.eps), expected, atol=0, rtol=0)
