"""Meta-training learns to adapt: on held-out sinusoid tasks, MAML's post-adaptation query loss
is clearly below its pre-adaptation loss and below a jointly trained model's after the same
inner steps (Finn et al. 2017, section 5.1, figure 2), for every registered model."""

from __future__ import annotations

import pytest
import torch

from meta import MetaMAML, TaskBatch, mse
from models import MODELS, SequenceModel, make_model
from tests.meta.synthetic import sinusoid_tasks

ITERATIONS, META_BATCH, WIDTH = 120, 5, 24
INNER_LR, OUTER_LR, INNER_STEPS = 0.15, 0.01, 1


def _train_joint(model: SequenceModel, batches: list[TaskBatch]) -> None:
    """The "pretrain" baseline: one Adam step per meta-batch on all its points, no inner loop."""
    opt = torch.optim.Adam(model.parameters(), lr=OUTER_LR)
    for b in batches:
        x = torch.cat([b.support_x, b.query_x], 1).flatten(0, 1)  # (n * 2K, 1)
        y = torch.cat([b.support_y, b.query_y], 1).flatten(0, 1)
        opt.zero_grad()
        mse(model(x, model.init_state(x.shape[0]))[0], y).backward()
        opt.step()


def _curve(model: SequenceModel, tasks: TaskBatch) -> tuple[float, float]:
    """Mean held-out query loss before and after INNER_STEPS SGD steps at INNER_LR."""
    maml = MetaMAML(model, inner_lr=INNER_LR, num_inner_steps=INNER_STEPS)
    losses = torch.tensor([maml.evaluate(t, steps=(0, INNER_STEPS)) for t in tasks.unstack()])
    pre, post = losses.mean(0).tolist()
    return pre, post


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_maml_beats_pre_adaptation_and_joint_training(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [sinusoid_tasks(META_BATCH, generator=gen) for _ in range(ITERATIONS)]
    held_out = sinusoid_tasks(50, generator=torch.Generator().manual_seed(123))

    torch.manual_seed(0)
    meta_model = make_model(name, 1, 1, hidden_dim=WIDTH)
    torch.manual_seed(0)
    joint_model = make_model(name, 1, 1, hidden_dim=WIDTH)

    maml = MetaMAML(meta_model, inner_lr=INNER_LR, outer_lr=OUTER_LR, num_inner_steps=INNER_STEPS)
    for b in batches:
        maml.meta_update(b)
    _train_joint(joint_model, batches)  # same number of gradient steps, same data

    maml_pre, maml_post = _curve(meta_model, held_out)
    _, joint_post = _curve(joint_model, held_out)
    assert maml_post < 0.9 * maml_pre, (maml_pre, maml_post)
    assert maml_post < 0.95 * joint_post, (maml_post, joint_post)
