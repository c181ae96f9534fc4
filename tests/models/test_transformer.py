"""The transformer's own promises: a bounded KV cache, an exact window, O(T * W) sequence mode.

The shared contract (sequence == steps == chunks, reset, vmap, ...) is in test_conformance.py.
"""

from __future__ import annotations

import collections
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, vmap
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from models import SequenceModel, count_params, make_model
from models.layers import LayerNorm, layer_norm_composite
from models.transformer import Transformer, TransformerConfig
from tests.models.pytree_error import max_abs_error

IN, OUT = 5, 3


def _model(window: int = 4, num_layers: int = 2, hidden_dim: int = 16, **config) -> Transformer:
    torch.manual_seed(0)
    model = make_model(
        "transformer",
        IN,
        OUT,
        hidden_dim=hidden_dim,
        window=window,
        num_layers=num_layers,
        **config,
    )
    assert isinstance(model, Transformer)
    return model.eval()


def _steps(model: Transformer, x: Tensor, state) -> tuple[Tensor, object]:
    ys = []
    for t in range(x.shape[1]):
        y, state = model(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


def reference(model: Transformer, x: Tensor) -> Tensor:
    """Full-history attention over all T steps (O(T^2)), masking offsets >= W: the definition."""
    cfg = model.config
    assert isinstance(cfg, TransformerConfig)
    batch, steps, _ = x.shape
    offset = torch.arange(steps)[:, None] - torch.arange(steps)[None, :]  # (T, T): t - s
    inside = (offset >= 0) & (offset < cfg.window)
    h = model.encoder(x)
    for block in model.blocks:
        att = block.attn
        q, k, v = att.qkv(block.norm_attn(h)).split(cfg.attn_dim, dim=-1)
        q, k, v = (
            z.reshape(batch, steps, cfg.num_heads, cfg.head_dim).transpose(1, 2) for z in (q, k, v)
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(cfg.head_dim)  # (B, H, T, T)
        scores = scores + att.rel_bias[:, offset.clamp(0, cfg.window - 1)]
        scores = scores.masked_fill(~inside, float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, steps, cfg.attn_dim)
        h = h + att.out(out)
        h = h + block.mlp(block.norm_mlp(h))
    return model.head(model.norm(h))


class OpRecorder(TorchDispatchMode):
    """Records every aten op run and the shapes of its tensor outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, tuple[tuple[int, ...], ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        leaves = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor)]
        self.ops.append((str(func), tuple(tuple(t.shape) for t in leaves)))
        return out

    @property
    def largest(self) -> int:
        return max(math.prod(shape) for _, shapes in self.ops for shape in shapes)


def test_cache_stays_bounded_and_steps_equal_full_history_reference() -> None:
    window = 5
    model = _model(window=window)
    x = torch.randn(2, 10 * window, IN)
    state = model.init_state(2)
    shapes = [v.shape for v in state]
    assert shapes == [(2, window - 1), *[(2, window - 1, 2 * 16)] * 2]  # valid, 2 layers' k | v
    ys = []
    for t in range(x.shape[1]):
        y, state = model(x[:, t], state)
        assert [v.shape for v in state] == shapes
        ys.append(y)
    expected = reference(model, x)
    torch.testing.assert_close(torch.stack(ys, 1), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(model(x, model.init_state(2))[0], expected, atol=1e-5, rtol=0)
    assert state[0].all()


@pytest.mark.parametrize("window", [1, 3, 8])
def test_multi_block_sequence_equals_steps_and_chunks_from_a_nonzero_state(window: int) -> None:
    model = _model(window=window, hidden_dim=10, num_heads=3)  # 10 is not divisible by 3
    _, warm = model(torch.randn(2, 6, IN), model.init_state(2))
    x = torch.randn(2, 37, IN)  # several blocks of W queries and a ragged last block
    y_seq, s_seq = model(x, warm)
    y_steps, s_steps = _steps(model, x, warm)
    torch.testing.assert_close(y_steps, y_seq, atol=1e-5, rtol=0)
    state, ys = warm, []
    for a, b in ((0, 2), (2, 19), (19, 37)):
        y, state = model(x[:, a:b], state)
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys, 1), y_seq, atol=1e-5, rtol=0)
    assert max_abs_error(s_steps, s_seq) <= 1e-5
    assert max_abs_error(state, s_seq) <= 1e-5


@pytest.mark.parametrize("grad", [True, False])  # the differentiable step; the fused one
def test_step_cost_does_not_grow_with_steps_taken(grad: bool) -> None:
    """Same ops on the same shapes every step: one list while the cache has empty slots (masked),
    a shorter one once it is full (no mask), and nothing scales with the steps seen."""
    model = _model(window=6)
    state = model.init_state(2)
    traces = {}
    with torch.set_grad_enabled(grad):
        model(torch.randn(2, IN), state)  # the fused weights are formed on the first no-grad step
        for t in range(40):
            x_t = torch.randn(2, IN)
            if t in (0, 3, 5, 6, 39):
                with OpRecorder() as rec:
                    _, state = model(x_t, state)
                traces[t] = rec.ops
            else:
                _, state = model(x_t, state)
    assert traces[0] == traces[3]  # W - 1 = 5 slots, not all valid yet
    assert traces[5] == traces[6] == traces[39]  # full from step 5 on
    masked, full = (collections.Counter(op for op, _ in traces[t]) for t in (0, 39))
    assert full < masked and masked["aten.where.self"] == 1 and "aten.where.self" not in full
    # and each step touches O(W * d): nothing scales with the 40 steps seen
    for t in (0, 39):
        assert max(math.prod(s) for _, shapes in traces[t] for s in shapes) <= 2 * 2 * 4 * 6 * 16


@pytest.mark.parametrize("num_layers", [1, 2])
def test_inputs_outside_the_window_have_no_influence(num_layers: int) -> None:
    window, t0 = 6, 4
    model = _model(window=window, num_layers=num_layers)
    reach = num_layers * (window - 1)  # each layer looks W - 1 steps further back
    x = torch.randn(2, 40, IN)
    x2 = x.clone()
    x2[:, t0] += 5.0
    for run in (
        lambda z: model(z, model.init_state(2))[0],
        lambda z: _steps(model, z, model.init_state(2))[0],
    ):
        y, y2 = run(x), run(x2)
        torch.testing.assert_close(
            y2[:, t0 + reach + 1 :], y[:, t0 + reach + 1 :], atol=1e-6, rtol=0
        )
        assert (y2[:, t0 + reach] - y[:, t0 + reach]).abs().max() > 1e-3  # the bound is tight


def test_long_sequence_memory_is_linear_in_t() -> None:
    model = _model(window=32, num_layers=1)
    largest = {}
    for steps in (1024, 4096):
        x = torch.randn(2, steps, IN)
        with torch.no_grad(), OpRecorder() as rec:
            y, _ = model(x, model.init_state(2))
        assert y.shape == (2, steps, OUT) and torch.isfinite(y).all()
        largest[steps] = rec.largest
    # Largest intermediate: the block scores (B, H, T / W, W, 2W - 1), not (B, H, T, T).
    assert largest[4096] <= 2 * 4 * 4096 * (2 * 32 - 1)
    assert largest[4096] < 2 * 4 * 4096 * 4096 // 50
    assert largest[4096] == 4 * largest[1024]


def test_native_reset_equals_the_generic_split() -> None:
    model = _model(window=5)
    _, warm = model(torch.randn(3, 7, IN), model.init_state(3))
    x = torch.randn(3, 26, IN)
    reset = torch.rand(3, 26) < 0.1
    reset[0, 3] = reset[2, 0] = reset[1, 24] = True
    y, s = model(x, warm, reset=reset)
    y_ref, s_ref = SequenceModel._forward_sequence_with_reset(model, x, warm, reset)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
    assert max_abs_error(s, s_ref) <= 1e-5


def test_second_order_gradients_are_correct() -> None:
    model = _model(window=3, hidden_dim=4, num_heads=2).double()
    x = torch.randn(2, 6, IN, dtype=torch.float64, requires_grad=True)
    reset = torch.zeros(2, 6, dtype=torch.bool)
    reset[1, 4] = True
    _, warm = model(torch.randn(2, 3, IN, dtype=torch.float64), model.init_state(2))

    def f(inp: Tensor) -> Tensor:
        return model(inp, warm, reset=reset)[0]

    assert torch.autograd.gradgradcheck(f, (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_vmapped_second_order_maml_gradient_equals_per_task_loop() -> None:
    """MAML's two paths: vmap over tasks of torch.func.grad with the outer gradient by autograd
    (MetaMAML's fast path), pure torch.func, and a per-task create_graph loop, in float64."""
    model = _model(window=4).double()
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    tasks = 3
    xs = torch.randn(tasks, 2, 9, IN, dtype=torch.float64)
    ys = torch.randn(tasks, 2, 9, OUT, dtype=torch.float64)
    state = model.init_state(2)
    states = tuple(v.expand(tasks, *v.shape).clone() for v in state)

    def loss(p, x, y, s):
        return F.mse_loss(functional_call(model, p, (x, s))[0], y)

    def meta_loss(p, x, y, s):  # one inner SGD step on the first half, loss on the second
        g = grad(loss)(p, x[:, :5], y[:, :5], s)
        return loss({k: p[k] - 0.1 * g[k] for k in p}, x[:, 5:], y[:, 5:], s)

    outer = vmap(meta_loss, in_dims=(None, 0, 0, 0))(params, xs, ys, states).mean()
    g_outer = torch.autograd.grad(outer, list(params.values()))
    detached = {k: v.detach() for k, v in params.items()}
    g_func = vmap(grad(meta_loss), in_dims=(None, 0, 0, 0))(detached, xs, ys, states)

    total = torch.zeros((), dtype=torch.float64)
    for i in range(tasks):
        inner = loss(params, xs[i, :, :5], ys[i, :, :5], state)
        g = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        fast = {k: v - 0.1 * gk for (k, v), gk in zip(params.items(), g, strict=True)}
        total = total + loss(fast, xs[i, :, 5:], ys[i, :, 5:], state) / tasks
    g_loop = torch.autograd.grad(total, list(params.values()))

    for k, a, b in zip(params, g_outer, g_loop, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0, msg=k)
        torch.testing.assert_close(g_func[k].mean(0), b, atol=1e-10, rtol=0, msg=k)
    assert all(g.abs().sum() > 0 for g in g_loop)


def test_layer_norm_fused_and_composite_paths_agree() -> None:
    ours, ref = LayerNorm(7), torch.nn.LayerNorm(7)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.normal_()
        ref.load_state_dict(ours.state_dict())
    x = (torch.randn(3, 5, 7) * 4 + 2).requires_grad_()
    r = torch.randn(3, 5, 7)
    inputs = (x, ours.weight, ours.bias)
    g_ref = torch.autograd.grad((ref(x) * r).sum(), (x, ref.weight, ref.bias))
    for y in (ours(x), layer_norm_composite(x, ours.weight, ours.bias, ours.eps)):
        torch.testing.assert_close(y, ref(x), atol=1e-5, rtol=0)
        for g, gr in zip(torch.autograd.grad((y * r).sum(), inputs), g_ref, strict=True):
            torch.testing.assert_close(g, gr, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(vmap(ours)(x), ref(x), atol=1e-5, rtol=0)  # composite under vmap


def test_every_hidden_dim_is_valid_and_sizes_grow_monotonically() -> None:
    counts = [count_params(make_model("transformer", 23, 17, hidden_dim=w)) for w in range(1, 70)]
    assert all(a < b for a, b in itertools.pairwise(counts))
    cfg = TransformerConfig(input_dim=1, output_dim=1, hidden_dim=10, num_heads=3)
    assert (cfg.head_dim, cfg.attn_dim) == (3, 9)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_heads", 0, r"TransformerConfig.num_heads: expected a positive int, got 0"),
        ("window", 2.5, r"TransformerConfig.window: expected a positive int, got 2.5"),
        ("num_layers", True, r"TransformerConfig.num_layers: expected a positive int, got True"),
        ("mlp_ratio", -1.0, r"TransformerConfig.mlp_ratio: expected a positive number, got -1.0"),
    ],
)
def test_bad_config_names_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_model("transformer", IN, OUT, **{field: value})


def test_empty_cache_slots_are_zero_and_window_one_is_memoryless() -> None:
    model = _model(window=6)
    _, s = model(torch.randn(2, 3, IN), model.init_state(2))
    assert s[0].sum(1).tolist() == [3, 3]
    for kv in s[1:]:
        assert (kv[:, :2] == 0).all() and (kv[:, 2:] != 0).any()
    memoryless = _model(window=1)
    x = torch.randn(2, 8, IN)
    y, _ = memoryless(x, memoryless.init_state(2))
    y_alone = torch.cat(
        [memoryless(x[:, t : t + 1], memoryless.init_state(2))[0] for t in range(8)], 1
    )
    torch.testing.assert_close(y, y_alone, atol=1e-6, rtol=0)
    assert [v.shape for v in memoryless.init_state(2)] == [(2, 0), (2, 0, 32), (2, 0, 32)]


def _assert_zero_exactly_where_empty(state) -> None:
    """Every layer's keys | values are zero in the empty slots and nowhere else (a canonical state)."""
    empty = ~state[0]
    for kv in state[1:]:
        assert (kv[empty] == 0).all() and (kv[~empty] != 0).all()


def _steps_with_reset(model: Transformer, x: Tensor, state, reset: Tensor) -> tuple[Tensor, object]:
    ys = []
    for t in range(x.shape[1]):
        y, state = model(x[:, t], state, reset=reset[:, t])
        ys.append(y)
    return torch.stack(ys, 1), state


def test_steps_over_a_long_stream_with_resets_equal_sequence_mode() -> None:
    """The dedicated step path against the block path, over many windows, with resets."""
    window = 5
    model = _model(window=window, hidden_dim=10, num_heads=3)
    _, warm = model(torch.randn(3, 8, IN), model.init_state(3))
    x = torch.randn(3, 9 * window, IN)
    reset = torch.rand(3, x.shape[1]) < 0.08
    reset[0, 2] = reset[1, 17] = reset[1, 19] = reset[2, 0] = True  # two resets inside one window
    reset[0, 30] = reset[2, -2] = True
    reset[2, -1] = False
    y_seq, s_seq = model(x, warm, reset=reset)
    y_steps, s_steps = _steps_with_reset(model, x, warm, reset)
    torch.testing.assert_close(y_steps, y_seq, atol=1e-5, rtol=0)
    assert max_abs_error(s_steps, s_seq) <= 1e-5
    assert s_steps[0][2].sum() == 2  # row 2 reset 2 steps before the end


def test_empty_cache_slots_stay_zero_after_steps_and_step_resets() -> None:
    """The shift keeps zeros in empty slots, so no masking of the cache is needed per step."""
    window = 6
    model = _model(window=window)
    state = model.init_state(2)
    since = [0, 0]  # steps since each row's last reset, that one included
    for t in range(3 * window):
        reset = torch.tensor([t in (4, 13), t == 15])
        since = [1 if r else n + 1 for r, n in zip(reset.tolist(), since, strict=True)]
        _, state = model(torch.randn(2, IN), state, reset=reset)
        _assert_zero_exactly_where_empty(state)
        assert state[0].sum(1).tolist() == [min(n, window - 1) for n in since]
        assert (state[0].long().diff(dim=1) >= 0).all()  # the empty slots are the oldest


def test_sequence_chunks_without_reset_keep_empty_slots_zero() -> None:
    """Sequence mode zeroes the cache only after a reset; without one, the empty slots are the
    state's own, shifted, and stay zero."""
    window = 7
    model = _model(window=window)
    reset = torch.zeros(2, 9, dtype=torch.bool)
    reset[0, 8] = reset[1, 6] = True  # leaves 1 and 3 valid slots, 5 and 3 zeroed
    _, state = model(torch.randn(2, 9, IN), model.init_state(2), reset=reset)
    for steps in (1, 2, 1, 3):
        _, state = model(torch.randn(2, steps, IN), state)
        _assert_zero_exactly_where_empty(state)
    assert state[0].sum(1).tolist() == [6, 6]


def test_step_gradients_equal_sequence_gradients_to_second_order() -> None:
    """The Adapter and MAML differentiate through step-mode states: gradients (and gradients of
    gradients) of a loss over steps equal those over the sequence, for parameters and state."""
    model = _model(window=3, hidden_dim=6, num_heads=2).double()
    with torch.no_grad():
        _, warm = model(torch.randn(2, 4, IN, dtype=torch.float64), model.init_state(2))
    cache = warm[1].clone().requires_grad_()  # the first layer's keys | values
    x = torch.randn(2, 7, IN, dtype=torch.float64, requires_grad=True)
    reset = torch.zeros(2, 7, dtype=torch.bool)
    reset[1, 4] = True
    params = list(model.parameters())

    def loss(y: Tensor, s) -> Tensor:
        return y.pow(2).sum() + s[1].pow(2).sum() + s[2].sum()

    def grads(run) -> tuple[Tensor, ...]:
        y, s = run((warm[0], cache, *warm[2:]))
        g = torch.autograd.grad(loss(y, s), (x, cache, *params), create_graph=True)
        gg = torch.autograd.grad(sum(gi.pow(2).sum() for gi in g), (x, cache, *params))
        return (*g, *gg)

    seq = grads(lambda s: model(x, s, reset=reset))
    steps = grads(lambda s: _steps_with_reset(model, x, s, reset))
    for a, b in zip(steps, seq, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    assert all(g.abs().sum() > 0 for g in seq)

    def f(inp: Tensor) -> Tensor:
        return _steps_with_reset(model, inp, warm, reset)[0]

    assert torch.autograd.gradgradcheck(f, (x.detach().requires_grad_(),), atol=1e-5, fast_mode=True)


def test_vmapped_steps_equal_per_task_steps() -> None:
    """States stack under vmap in step mode too, with per-task weights (functional_call), and
    torch.func.grad through a vmapped step loop matches the per-task gradient."""
    model = _model(window=4)
    params = {k: v.detach() for k, v in model.named_parameters()}
    tasks, steps = 3, 6
    stacked = {k: torch.stack([v + 0.02 * i for i in range(tasks)]) for k, v in params.items()}
    xs = torch.randn(tasks, 2, steps, IN)
    _, warm = model(torch.randn(2, 2, IN), model.init_state(2))
    states = tuple(v.expand(tasks, *v.shape).clone() for v in warm)

    def run(p, x, s):
        ys = []
        for t in range(steps):
            y, s = functional_call(model, p, (x[:, t], s))
            ys.append(y)
        return torch.stack(ys, 1), s

    def loss(p, x, s):
        return run(p, x, s)[0].pow(2).mean()

    y_v, s_v = vmap(run)(stacked, xs, states)
    g_v = vmap(grad(loss))(stacked, xs, states)
    for i in range(tasks):
        p_i = {k: v[i] for k, v in stacked.items()}
        y_i, s_i = run(p_i, xs[i], warm)
        y_ref, _ = functional_call(model, p_i, (xs[i], warm))  # sequence mode
        torch.testing.assert_close(y_v[i], y_i, atol=1e-5, rtol=0)
        torch.testing.assert_close(y_i, y_ref, atol=1e-5, rtol=0)
        assert max_abs_error(tuple(v[i] for v in s_v), s_i) <= 1e-5
        g_i = grad(loss)(p_i, xs[i], warm)
        for key in g_i:
            torch.testing.assert_close(g_v[key][i], g_i[key], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 5e-2), (torch.float16, 5e-3)])
def test_low_precision_model_runs_in_its_dtype_in_every_mode(dtype: torch.dtype, tol: float) -> None:
    """The attention masks take the model's dtype (a float32 mask would promote the scores and
    the product with the bf16 values would fail): sequence mode, the differentiable step and the
    fused no-grad step run in bf16 / fp16 and agree to that precision's rounding."""
    model = _model(window=5, hidden_dim=10, num_heads=3).to(dtype)
    x = torch.randn(3, 12, IN, dtype=dtype)
    y_seq, s_seq = model(x, model.init_state(3))
    y_steps, s_steps = _steps(model, x, model.init_state(3))  # autograd on: the differentiable step
    with torch.no_grad():
        y_fused, s_fused = _steps(model, x, model.init_state(3))
    for y, s in ((y_seq, s_seq), (y_steps, s_steps), (y_fused, s_fused)):
        assert y.dtype == dtype and all(t.dtype == dtype for t in s[1:])
    assert max_abs_error(y_steps, y_seq) <= tol and max_abs_error(y_fused, y_seq) <= tol
    assert max_abs_error(s_fused, s_seq) <= tol


class _StrideRecorder(TorchDispatchMode):
    """Records the strides of the tensor arguments of every call to the given aten ops."""

    def __init__(self, names: set[str]) -> None:
        super().__init__()
        self.names = names
        self.calls: list[tuple[str, list[bool]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.names:
            self.calls.append((name, [a.is_contiguous() for a in args if isinstance(a, Tensor)]))
        return func(*args, **(kwargs or {}))


def test_vmapped_second_order_never_gives_the_mlp_gelu_a_strided_gradient() -> None:
    """MetaMAML's vectorised computation (vmap of torch.func.grad, then autograd): the MLP's down
    projection leaves its transposed second-order gradient on the narrow residual side
    (``linear_rows(..., transposed_grad="output")``), so every GELU backward, first and second
    order, reads row-major tensors; the other linear layers' copies leave the GELU's input
    side alone too."""
    model = _model(window=8)
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    tasks = 3
    xs, ys = torch.randn(tasks, 2, 6, IN), torch.randn(tasks, 2, 6, OUT)
    state = model.init_state(2)
    states = tuple(v.expand(tasks, *v.shape).clone() for v in state)

    def loss(p, x, y, s):
        return F.mse_loss(functional_call(model, p, (x, s))[0], y)

    def meta_loss(p, x, y, s):
        g = grad(loss)(p, x, y, s)
        return loss({k: p[k] - 0.1 * g[k] for k in p}, x, y, s)

    with _StrideRecorder({"gelu_backward", "gelu"}) as rec:
        out = vmap(meta_loss, in_dims=(None, 0, 0, 0))(params, xs, ys, states).mean()
        torch.autograd.grad(out, list(params.values()))
    backward = [flags for name, flags in rec.calls if name == "gelu_backward"]
    assert len(backward) >= 3 * model.config.num_layers  # first order, and both second-order terms
    assert all(all(flags) for flags in backward), backward
