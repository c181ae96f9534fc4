"""The linear feature baseline of rllab / MAML-RL / ProMP, fitted per task by ridge regression.

Features of step t of an episode with observation o_t (clipped to [-10, 10]) and a = t / 100:

    phi(o_t, t) = [o_t, o_t^2, a, a^2, a^3, 1]

and b(s_t) = phi^T w with w = argmin sum_valid (phi^T w - R_t)^2 + lambda ||w||^2, solved in
closed form, w = (Phi^T Phi + lambda I)^-1 Phi^T R, over one task's episodes. As in rllab, lambda
starts at 1e-5 and grows tenfold while the solution is not finite.

References:
    Duan et al. (2016), Benchmarking Deep RL (rllab: rllab/baselines/linear_feature_baseline.py).
    Finn et al. (2017), MAML-RL (cbfinn/maml_rl), and Rothfuss et al. (2019), ProMP
    (meta_policy_search/baselines/linear_baseline.py): one baseline fitted per task.
"""

from __future__ import annotations

import torch
from torch import Tensor


def features(obs: Tensor) -> Tensor:
    """phi for every step: (K, N, T, d) -> (K, N, T, 2d + 4), float64."""
    o = obs.double().clamp(-10.0, 10.0)
    steps = obs.shape[-2]
    a = (torch.arange(steps, dtype=torch.float64) / 100.0).view(steps, 1).expand(*obs.shape[:-1], 1)
    return torch.cat([o, o * o, a, a**2, a**3, torch.ones_like(a)], dim=-1)


def fit(phi: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5, max_tries: int = 5) -> Tensor:
    """Ridge weights per task over the valid steps.

    Args:
        phi: features (K, N, T, F).
        returns: regression targets (K, N, T).
        mask: 1.0 at valid steps (K, N, T).
        reg: the first ridge coefficient lambda.
        max_tries: tenfold increases of lambda allowed while the solution is not finite.

    Returns:
        w, (K, F) float64.
    """
    m = mask.double().unsqueeze(-1)
    x = (phi * m).flatten(1, 2)  # (K, N * T, F), zero rows at masked steps
    y = (returns.double() * mask.double()).flatten(1, 2).unsqueeze(-1)  # (K, N * T, 1)
    gram = x.transpose(1, 2) @ x  # (K, F, F)
    rhs = x.transpose(1, 2) @ y  # (K, F, 1)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
    for _ in range(max_tries):
        w = torch.linalg.solve(gram + reg * eye, rhs)
        if torch.isfinite(w).all():
            return w.squeeze(-1)
        reg *= 10.0
    raise ValueError(
        f"linear baseline: no finite ridge solution up to reg={reg / 10:g}; returns or features not finite"
    )


def fit_predict(obs: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """Fit the baseline of each task on its episodes and predict them: (K, N, T) float32."""
    phi = features(obs)
    w = fit(phi, returns, mask)
    return (phi @ w.view(w.shape[0], 1, w.shape[1], 1)).squeeze(-1).float() * mask
