"""Pendulum-v1's equations of motion, batched in torch: the true dynamics for planner tests.

From gymnasium's PendulumEnv.step (classic_control/pendulum.py):
    thdot' = clip(thdot + (3 g / (2 l) sin th + 3 / (m l^2) u) dt, -8, 8),  th' = th + thdot' dt,
with g = 10, dt = 0.05, u clipped to [-2, 2]; the observation is (cos th, sin th, thdot).
"""

from __future__ import annotations

import torch
from torch import Tensor

G, DT, MAX_SPEED, MAX_TORQUE = 10.0, 0.05, 8.0, 2.0


def pendulum_step(obs: Tensor, action: Tensor, mass: float, length: float) -> Tensor:
    """Next observations of pendulums with mass ``mass`` and length ``length``.

    Shapes:
        obs (N, 3), action (N, 1) -> (N, 3).
    """
    th = torch.atan2(obs[:, 1], obs[:, 0])
    thdot = obs[:, 2]
    u = action[:, 0].clamp(-MAX_TORQUE, MAX_TORQUE)
    new_thdot = (thdot + (3 * G / (2 * length) * torch.sin(th) + 3.0 / (mass * length**2) * u) * DT).clamp(
        -MAX_SPEED, MAX_SPEED
    )
    new_th = th + new_thdot * DT
    return torch.stack([torch.cos(new_th), torch.sin(new_th), new_thdot], dim=-1)
