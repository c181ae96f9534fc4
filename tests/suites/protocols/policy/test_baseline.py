"""Returns-to-go, advantage normalisation and the linear feature baseline against closed forms."""

import numpy as np
import pytest
import torch

from suites.protocols.policy import baseline
from suites.protocols.policy.returns import discounted_returns, normalize_advantages


def test_discounted_returns_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the episode ended at step 2
    out = discounted_returns(rewards, mask, gamma=0.5)
    assert torch.allclose(out, torch.tensor([[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 0.0]]))


def test_discounted_returns_rejects_bad_gamma():
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(torch.zeros(1, 2), torch.ones(1, 2), gamma=1.5)


def test_advantages_are_normalised_per_task_over_valid_steps():
    adv = torch.randn(3, 4, 5) * torch.tensor([1.0, 10.0, 100.0]).view(3, 1, 1) + 7.0
    mask = (torch.rand(3, 4, 5) > 0.3).float()
    out = normalize_advantages(adv, mask)
    for k in range(3):
        valid = out[k][mask[k] > 0]
        assert abs(float(valid.mean())) < 1e-5
        assert abs(float(valid.std(unbiased=False)) - 1.0) < 1e-4
    assert (out[mask == 0] == 0).all()


def test_features_by_hand():
    obs = torch.tensor([[[[2.0, -20.0], [0.5, 1.0]]]])  # (K=1, N=1, T=2, d=2)
    phi = baseline.features(obs)
    expected = torch.tensor(
        [
            [2.0, -10.0, 4.0, 100.0, 0.0, 0.0, 0.0, 1.0],  # obs clipped to [-10, 10]
            [0.5, 1.0, 0.25, 1.0, 0.01, 1e-4, 1e-6, 1.0],  # t / 100 = 0.01
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(phi[0, 0], expected)


def test_fit_equals_the_ridge_closed_form_on_valid_steps():
    """w minimises ||Phi w - R||^2 + lambda ||w||^2 over valid steps: compare with numpy's lstsq
    of the augmented system [Phi; sqrt(lambda) I] w = [R; 0], per task."""
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(2, 5, 7, 3, generator=gen)
    returns = torch.randn(2, 5, 7, generator=gen)
    mask = (torch.rand(2, 5, 7, generator=gen) > 0.25).float()
    reg = 1e-3
    phi = baseline.features(obs)
    w = baseline.fit(phi, returns, mask, reg=reg)
    for k in range(2):
        valid = mask[k].flatten() > 0
        x = phi[k].reshape(-1, phi.shape[-1])[valid].numpy()
        y = returns[k].flatten()[valid].double().numpy()
        aug_x = np.vstack([x, np.sqrt(reg) * np.eye(x.shape[1])])
        aug_y = np.concatenate([y, np.zeros(x.shape[1])])
        expected = np.linalg.lstsq(aug_x, aug_y, rcond=None)[0]
        np.testing.assert_allclose(w[k].numpy(), expected, rtol=1e-6, atol=1e-8)


def test_fit_predict_recovers_returns_that_are_linear_in_the_features():
    gen = torch.Generator().manual_seed(1)
    obs = torch.rand(3, 20, 10, 2, generator=gen)
    w_true = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    returns = (baseline.features(obs) @ w_true.view(3, 1, 8, 1)).squeeze(-1).float()
    mask = torch.ones(3, 20, 10)
    pred = baseline.fit_predict(obs, returns, mask)
    assert torch.allclose(pred, returns, atol=1e-3)
