"""models/layers.py: the LayerNorm paths (fused, split under torch.func, elementary composite),
``linear_rows`` (values, MAML's second order under vmap, and the layout it is there for) and the
weight cache's rules (the cache itself is exercised through each model's fused step)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor
from torch.func import grad, vmap

from models.layers import LayerNorm, layer_norm, layer_norm_composite, layer_norm_split, linear_rows

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


SIDES = ["input", "output"]
ROWS, IN, OUT = 9, 5, 4


def _linear_meta_loss(transposed_grad: str):  # type: ignore[no-untyped-def]
    """MetaMAML's shape of computation on one ``linear_rows`` layer between two nonlinearities:
    an inner gradient step on (weight, bias), then the loss at the stepped weights."""

    def inner(w: Tensor, b: Tensor, x: Tensor, r: Tensor) -> Tensor:
        y = linear_rows(torch.tanh(x), w, b, transposed_grad)  # type: ignore[arg-type]
        return (torch.tanh(y) * r).sum()

    def outer(w: Tensor, b: Tensor, x: Tensor, r: Tensor) -> Tensor:
        gw, gb = grad(inner, argnums=(0, 1))(w, b, x, r)
        return inner(w - 0.1 * gw, b - 0.1 * gb, x, r)

    return outer


@pytest.mark.parametrize("transposed_grad", SIDES)
def test_linear_rows_equals_f_linear_plainly_and_under_vmap(transposed_grad: str) -> None:
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(TASKS, ROWS, IN, generator=gen, dtype=torch.float64)
    w = torch.randn(OUT, IN, generator=gen, dtype=torch.float64)
    b = torch.randn(OUT, generator=gen, dtype=torch.float64)
    expected = torch.nn.functional.linear(h, w, b)
    torch.testing.assert_close(linear_rows(h[0], w, b, transposed_grad), expected[0], atol=0, rtol=0)  # type: ignore[arg-type]
    for in_dims, weights in (((0, None, None), (w, b)), ((0, 0, 0), (w.expand(TASKS, -1, -1), b.expand(TASKS, -1)))):
        out = vmap(lambda x, v, c: linear_rows(x, v, c, transposed_grad), in_dims=in_dims)(h, *weights)  # type: ignore[arg-type]
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("transposed_grad", SIDES)
def test_linear_rows_second_order_under_vmap_equals_the_per_task_loop(transposed_grad: str) -> None:
    """vmap of torch.func.grad, then autograd through it, against per-task plain autograd through
    ``F.linear``: values and gradients (weight, bias, input), float64."""
    gen = torch.Generator().manual_seed(3)
    w = (torch.randn(OUT, IN, generator=gen, dtype=torch.float64) / 2).requires_grad_()
    b = torch.randn(OUT, generator=gen, dtype=torch.float64).requires_grad_()
    x = torch.randn(TASKS, ROWS, IN, generator=gen, dtype=torch.float64).requires_grad_()
    r = torch.randn(TASKS, ROWS, OUT, generator=gen, dtype=torch.float64)
    out = vmap(_linear_meta_loss(transposed_grad), in_dims=(None, None, 0, 0))(w, b, x, r)
    g = torch.autograd.grad(out.sum(), (w, b, x))

    def plain(w: Tensor, b: Tensor, x: Tensor, r: Tensor) -> Tensor:
        def inner(w: Tensor, b: Tensor) -> Tensor:
            return (torch.tanh(torch.nn.functional.linear(torch.tanh(x), w, b)) * r).sum()

        gw, gb = torch.autograd.grad(inner(w, b), (w, b), create_graph=True)
        return inner(w - 0.1 * gw, b - 0.1 * gb)

    ref = torch.stack([plain(w, b, x[i], r[i]) for i in range(TASKS)])
    g_ref = torch.autograd.grad(ref.sum(), (w, b, x))
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    for a, e in zip(g, g_ref, strict=True):
        assert float(e.abs().max()) > 1e-3
        torch.testing.assert_close(a, e, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("transposed_grad", SIDES)
def test_linear_rows_puts_the_transposed_second_order_gradient_on_the_side_asked(transposed_grad: str) -> None:
    """The layout the function exists for. The support loss is linear in the layer's output, so
    the meta-loss reaches the support rows only through the weight's gradient: in the outer
    backward of vmap(grad(.)) that gradient arrives at the rows transposed (row stride 1) with
    ``"input"``, and row-major with ``"output"`` (which leaves the transposed one at the output)."""
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(OUT, IN, generator=gen).requires_grad_()
    b = torch.randn(OUT, generator=gen).requires_grad_()
    support = torch.randn(TASKS, ROWS, IN, generator=gen).requires_grad_()
    query = torch.randn(TASKS, ROWS, IN, generator=gen)
    r = torch.randn(TASKS, ROWS, OUT, generator=gen)
    strides: list[tuple[int, ...]] = []
    support.register_hook(lambda g: strides.append(g.stride()))

    def meta_loss(w: Tensor, b: Tensor, xs: Tensor, xq: Tensor, r: Tensor) -> Tensor:
        def inner(w: Tensor, b: Tensor) -> Tensor:
            return (linear_rows(xs, w, b, transposed_grad) * r).sum()  # type: ignore[arg-type]

        gw, gb = grad(inner, argnums=(0, 1))(w, b)
        return torch.tanh(linear_rows(xq, w - 0.1 * gw, b - 0.1 * gb)).sum()

    out = vmap(meta_loss, in_dims=(None, None, 0, 0, 0))(w, b, support, query, r)
    (g,) = torch.autograd.grad(out.sum(), (support,))
    assert strides and float(g.abs().max()) > 1e-3
    row_stride = strides[0][1]
    assert row_stride == (1 if transposed_grad == "input" else IN)
