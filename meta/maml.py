"""MetaMAML: model-agnostic meta-learning over any zoo model, with a vmapped fast path.

For each task, the inner loop takes ``K`` gradient steps on the support loss from the shared
initialisation theta, and the meta-loss is the query loss at the adapted weights, averaged over
the tasks of a meta-batch (Finn et al. 2017, Algorithm 2):

    theta_i^0 = theta,  theta_i^{k+1} = theta_i^k - alpha * grad L_support_i(theta_i^k)
    meta_loss(theta) = mean_i L_query_i(theta_i^K)

Second order by default (the inner gradients are differentiated again); ``first_order`` drops
those second derivatives (FOMAML). With ``meta_sgd`` alpha is a learned tensor per parameter
(Li et al. 2017). Every forward pass is ``torch.func.functional_call(model, weights, ...)``, so
the model itself is never modified by the inner loop.

Two paths compute the same meta-loss and meta-gradient, chosen once by ``vectorize``:
- vectorised (default): one ``torch.func.vmap`` over the tasks of a function that runs the whole
  inner loop with ``torch.func.grad``, which composes with vmap and with the outer autograd;
- reference: a Python loop over tasks with ``torch.autograd.grad(create_graph=True)``.

Sequences and state: the support and the query each start from a fresh ``model.init_state``;
with ``query_from_support_state=True`` the query starts from the state the *adapted* model
reaches at the end of the support (differentiable in the adapted weights; equal batch sizes).

Non-finite losses and gradients never reach the weights (``MAMLConfig.nonfinite``).

References:
    Finn, Abbeel, Levine (2017), Model-Agnostic Meta-Learning for Fast Adaptation of Deep
    Networks, ICML.
    Nichol, Achiam, Schulman (2018), On First-Order Meta-Learning Algorithms (FOMAML).
    Li, Zhou, Chen, Li (2017), Meta-SGD: Learning to Learn Quickly for Few-Shot Learning.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map

from meta.config import MAMLConfig
from meta.functional import NonFiniteError, Params, all_finite, mean_over_tasks, mse, sgd_update, stack_losses
from meta.tasks import Task, TaskBatch, as_task_batch, as_task_list, check_input, check_task, select_tasks
from models import SequenceModel, State

LossFn = Callable[[Tensor, Tensor], Tensor]
Lrs = float | Mapping[str, Tensor]


class MetaMAML:
    """MAML (and FOMAML, Meta-SGD) over a zoo model's stateful interface.

    Args:
        model: any ``SequenceModel``; its parameters are the meta-learned initialisation.
        inner_lr, outer_lr, num_inner_steps, first_order, meta_sgd, query_from_support_state,
        vectorize, nonfinite: see ``MAMLConfig``.
        loss_fn: ``(pred, target) -> scalar``; default mean squared error over all elements.

    Example:
        >>> model = make_model("mlp", 1, 1, hidden_dim=40)
        >>> maml = MetaMAML(model, inner_lr=0.01, num_inner_steps=1)
        >>> loss = maml.meta_update(tasks)                 # list[Task] or TaskBatch
        >>> fast = maml.adapt(task.support_x, task.support_y)
        >>> y, _ = maml.forward_with_weights(task.query_x, fast)
        >>> maml.evaluate(task, steps=(0, 1, 5))           # query loss after 0, 1, 5 steps
    """

    def __init__(
        self,
        model: SequenceModel,
        inner_lr: float = 0.01,
        outer_lr: float = 1e-3,
        num_inner_steps: int = 1,
        first_order: bool = False,
        loss_fn: LossFn = mse,
        meta_sgd: bool = False,
        query_from_support_state: bool = False,
        vectorize: bool = True,
        nonfinite: str = "skip",
    ) -> None:
        if not isinstance(model, SequenceModel):
            raise ValueError(f"MetaMAML: model expected a SequenceModel, got {type(model).__name__}")
        self.model = model
        self.config = MAMLConfig(
            inner_lr,
            outer_lr,
            num_inner_steps,
            first_order,
            meta_sgd,
            query_from_support_state,
            vectorize,
            nonfinite,
        )
        self.loss_fn = loss_fn
        self.inner_lrs: OrderedDict[str, nn.Parameter] = OrderedDict()
        if meta_sgd:
            self.inner_lrs = OrderedDict(
                (k, nn.Parameter(torch.full_like(p.detach(), float(inner_lr)))) for k, p in self._weights().items()
            )
        self.optimizer = torch.optim.Adam(self.parameters(), lr=outer_lr)
        self.skipped_tasks = 0
        """Tasks left out of meta-updates so far for a non-finite loss or gradient."""
        self.last_skipped = 0
        """Tasks left out of the latest meta-update."""

    def parameters(self) -> list[Tensor]:
        """Everything the outer loop learns: the model's parameters, then Meta-SGD's lrs."""
        return [*self.model.parameters(), *self.inner_lrs.values()]

    # ---- single-task API ------------------------------------------------------------------

    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        state: State = None,
        num_steps: int | None = None,
        first_order: bool | None = None,
    ) -> Params:
        """Fast weights after ``num_steps`` inner SGD steps on the support set.

        Args:
            support_x: (B, T, D) or (B, D).
            support_y: targets with the leading dims of ``support_x``.
            state: the state every inner step's support pass starts from; None: fresh.
            num_steps, first_order: per-call overrides of the instance settings.

        Returns:
            An OrderedDict name -> tensor, differentiable with respect to the model's parameters
            (through the inner gradients too unless first order).
        """
        steps = self.config.num_inner_steps if num_steps is None else num_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"adapt: num_steps expected an int >= 0, got {steps!r}")
        first = self.config.first_order if first_order is None else first_order
        check_input("support_x", support_x, self.model.input_dim)
        if state is None:
            state = self.model.init_state(support_x.shape[0], support_x.device)
        if not all_finite([support_x, support_y]):
            raise NonFiniteError("adapt: support_x and support_y expected finite values, got NaN or inf")
        with torch.enable_grad():
            fast = self._inner_loop_autograd(self._weights(), self._lrs(), support_x, support_y, state, steps, first)
        if not all_finite(fast.values()):
            raise NonFiniteError(
                f"adapt: the fast weights after {steps} inner step(s) are not finite "
                f"(the inner loop diverges at inner_lr {self.config.inner_lr})"
            )
        return fast

    def forward_with_weights(
        self, x: Tensor, weights: Mapping[str, Tensor], state: State = None
    ) -> tuple[Tensor, State]:
        """The model run with ``weights`` in place of its parameters (functional_call).

        Args:
            x: (B, T, D) or (B, D).
            weights: name -> tensor, e.g. from ``adapt``; missing names use the model's own.
            state: the initial state; None: ``model.init_state(B)``.

        Returns:
            ``(y, state)`` as the model's forward.
        """
        if state is None:
            state = self.model.init_state(x.shape[0], x.device)
        return functional_call(self.model, dict(weights), (x, state))

    def evaluate(self, task: Task, steps: Sequence[int] | None = None) -> list[float]:
        """Query loss after k inner steps on the support, for each k in ``steps``.

        Args:
            task: one Task.
            steps: increasing or not, any ints >= 0; default 0, 1, ..., num_inner_steps.

        Returns:
            One float per entry of ``steps``. The model and the Meta-SGD lrs are never changed,
            so evaluating one task cannot leak into the next.
        """
        if not isinstance(task, Task):
            raise ValueError(f"evaluate: task expected a Task, got {type(task).__name__}")
        check_task("task", task, self.model.input_dim, self.config.query_from_support_state)
        wanted = list(range(self.config.num_inner_steps + 1)) if steps is None else list(steps)
        if not wanted or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in wanted):
            raise ValueError(f"evaluate: steps expected a non-empty sequence of ints >= 0, got {steps!r}")
        weights: Params = OrderedDict((k, v.detach()) for k, v in self._weights().items())
        lrs = self._lrs()
        lrs = {k: v.detach() for k, v in lrs.items()} if isinstance(lrs, Mapping) else lrs
        s_support, s_query = self._fresh_states(task.support_x, task.query_x)
        losses: dict[int, float] = {}
        for k in range(max(wanted) + 1):
            if k in wanted:
                with torch.no_grad():
                    losses[k] = float(
                        self._query_loss(weights, task.support_x, task.query_x, task.query_y, s_support, s_query)
                    )
            if k < max(wanted):
                with torch.enable_grad():
                    weights = self._inner_step_autograd(weights, lrs, task.support_x, task.support_y, s_support, True)
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            raise NonFiniteError(f"evaluate: query loss after k inner steps expected finite, got {bad} (k: loss)")
        return [losses[k] for k in wanted]

    # ---- meta-batch API -------------------------------------------------------------------

    def meta_loss(self, tasks: Sequence[Task] | TaskBatch) -> Tensor:
        """Mean over tasks of the post-adaptation query loss, differentiable (no optimiser step).

        Args:
            tasks: a non-empty list of Task, or a TaskBatch (a list must stack, i.e. have equal
                shapes, on the vectorised path).

        Returns:
            A scalar tensor whose gradient is the meta-gradient.
        """
        with torch.enable_grad():
            return mean_over_tasks(self._task_losses(self._checked(tasks)))

    def meta_update(self, tasks: Sequence[Task] | TaskBatch) -> float:
        """One outer Adam step on ``meta_loss(tasks)``; returns the meta-loss before the step.

        Non-finite values never reach the weights or the optimiser state. A task whose query
        loss is NaN or inf is left out of the step (``nonfinite="skip"``) or raises
        ``NonFiniteError`` (``"raise"``); a meta-gradient that is not finite skips the whole
        step (or raises). ``last_skipped`` counts the tasks left out of this step and
        ``skipped_tasks`` all so far; with no task left, no step is taken and the result is NaN.
        Afterwards every meta-parameter's ``.grad`` holds the step's meta-gradient (zeros when
        no step was taken).
        """
        self.optimizer.zero_grad(set_to_none=True)
        batch = self._checked(tasks)
        n, loss = len(batch), None
        with torch.enable_grad():
            losses = self._task_losses(batch)
            keep = [i for i, ok in enumerate(torch.isfinite(stack_losses(losses).detach()).tolist()) if ok]
            if len(keep) < n:
                self._nonfinite(f"query loss of tasks {sorted(set(range(n)) - set(keep))} (of {n})")
                losses = self._task_losses(select_tasks(batch, keep)) if keep else []
            if keep:
                loss = mean_over_tasks(losses)
                loss.backward()
        params = self.parameters()
        if keep and not all_finite(p.grad for p in params):
            self.optimizer.zero_grad(set_to_none=True)
            self._nonfinite(f"meta-gradient over tasks {keep} (of {n})")
            keep, loss = [], None
        self.last_skipped = n - len(keep)
        self.skipped_tasks += self.last_skipped
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if loss is None:
            return float("nan")
        self.optimizer.step()
        return float(loss.detach())

    def _nonfinite(self, what: str) -> None:
        """Raise under ``nonfinite="raise"``; under ``"skip"`` the caller leaves the values out."""
        if self.config.nonfinite == "raise":
            raise NonFiniteError(f"meta_update: {what} expected finite, got NaN or inf; no step taken")

    def _checked(self, tasks: Sequence[Task] | TaskBatch) -> list[Task] | TaskBatch:
        """The tasks checked, as the chosen path takes them: a TaskBatch (vmap) or a list."""
        checks = self.model.input_dim, self.config.query_from_support_state
        return as_task_batch(tasks, *checks) if self.config.vectorize else as_task_list(tasks, *checks)

    def _task_losses(self, tasks: list[Task] | TaskBatch) -> Tensor | list[Tensor]:
        """Each task's post-adaptation query loss: (n,) from the vmapped path, a list from the loop."""
        return self._task_losses_vmap(tasks) if isinstance(tasks, TaskBatch) else self._task_losses_loop(tasks)

    # ---- the two paths --------------------------------------------------------------------

    def _task_losses_loop(self, tasks: list[Task]) -> list[Tensor]:
        """Reference path: each task's inner loop with torch.autograd.grad, one after another."""
        weights, lrs = self._weights(), self._lrs()
        losses = []
        for task in tasks:
            s_support, s_query = self._fresh_states(task.support_x, task.query_x)
            fast = self._inner_loop_autograd(
                weights,
                lrs,
                task.support_x,
                task.support_y,
                s_support,
                self.config.num_inner_steps,
                self.config.first_order,
            )
            losses.append(self._query_loss(fast, task.support_x, task.query_x, task.query_y, s_support, s_query))
        return losses

    def _task_losses_vmap(self, batch: TaskBatch) -> Tensor:
        """Fast path: the whole per-task computation, inner loop included, under one vmap.

        The weights enter unbatched (in_dims None), so the first support pass shares them across
        tasks: one matrix product over all tasks' rows, and weight-only terms computed once.
        """
        n = len(batch)
        s_support, s_query = self._fresh_states(batch.support_x[0], batch.query_x[0])
        # Every task starts from its own copy of the fresh state (batched like the data), so
        # models that write into their state never mix batched and unbatched tensors.
        expand = lambda s: tree_map(lambda t: t.unsqueeze(0).expand(n, *t.shape).clone(), s)  # noqa: E731

        def task_loss(
            weights: Params,
            lrs: Lrs,
            sx: Tensor,
            sy: Tensor,
            qx: Tensor,
            qy: Tensor,
            s_sup: State,
            s_qry: State,
        ) -> Tensor:
            fast = self._inner_loop_func(weights, lrs, sx, sy, s_sup)
            return self._query_loss(fast, sx, qx, qy, s_sup, s_qry)

        # randomness="different": each task draws its own dropout masks, as separate calls would.
        per_task = vmap(task_loss, in_dims=(None, None, 0, 0, 0, 0, 0, 0), randomness="different")(
            self._weights(),
            self._lrs(),
            batch.support_x,
            batch.support_y,
            batch.query_x,
            batch.query_y,
            expand(s_support),
            expand(s_query),
        )
        return per_task

    def _inner_loop_autograd(
        self,
        weights: Params,
        lrs: Lrs,
        x: Tensor,
        y: Tensor,
        state: State,
        steps: int,
        first_order: bool,
    ) -> Params:
        for _ in range(steps):
            weights = self._inner_step_autograd(weights, lrs, x, y, state, first_order)
        return weights

    def _inner_step_autograd(
        self, weights: Params, lrs: Lrs, x: Tensor, y: Tensor, state: State, first_order: bool
    ) -> Params:
        """theta' = theta - alpha * grad L_support(theta), with torch.autograd.grad.

        First order takes the gradient at a detached copy, so no second derivative is recorded
        and theta' still depends on theta through the identity term.
        """
        at = OrderedDict((k, v.detach().requires_grad_()) for k, v in weights.items()) if first_order else weights
        loss = self._support_loss(at, x, y, state)
        grads = torch.autograd.grad(loss, list(at.values()), create_graph=not first_order, allow_unused=True)
        named = OrderedDict(
            (k, torch.zeros_like(v) if g is None else g) for (k, v), g in zip(at.items(), grads, strict=True)
        )
        return sgd_update(weights, named, lrs)

    def _inner_loop_func(self, weights: Params, lrs: Lrs, x: Tensor, y: Tensor, state: State) -> Params:
        """The inner loop with torch.func.grad (composable with vmap and the outer autograd)."""
        grad_fn = torch.func.grad(lambda w: self._support_loss(w, x, y, state))
        for _ in range(self.config.num_inner_steps):
            if self.config.first_order:
                grads = grad_fn(OrderedDict((k, v.detach()) for k, v in weights.items()))
                grads = OrderedDict((k, g.detach()) for k, g in grads.items())
            else:
                grads = grad_fn(weights)
            weights = sgd_update(weights, grads, lrs)
        return weights

    # ---- pieces ---------------------------------------------------------------------------

    def _support_loss(self, weights: Mapping[str, Tensor], x: Tensor, y: Tensor, state: State) -> Tensor:
        pred, _ = functional_call(self.model, dict(weights), (x, state))
        return self.loss_fn(pred, y)

    def _query_loss(
        self, weights: Params, support_x: Tensor, query_x: Tensor, query_y: Tensor, s_support: State, s_query: State
    ) -> Tensor:
        """L_query at ``weights``; the query's initial state per ``query_from_support_state``."""
        if self.config.query_from_support_state:
            _, s_query = functional_call(self.model, dict(weights), (support_x, s_support))
        pred, _ = functional_call(self.model, dict(weights), (query_x, s_query))
        return self.loss_fn(pred, query_y)

    def _fresh_states(self, support_x: Tensor, query_x: Tensor) -> tuple[State, State]:
        s_support = self.model.init_state(support_x.shape[0], support_x.device)
        s_query = self.model.init_state(query_x.shape[0], query_x.device)
        return s_support, s_query

    def _weights(self) -> Params:
        return OrderedDict((k, p) for k, p in self.model.named_parameters() if p.requires_grad)

    def _lrs(self) -> Lrs:
        return self.inner_lrs if self.config.meta_sgd else self.config.inner_lr
