"""A step-by-step reference for the SSM's diagonal scans, in complex numbers (independent of the
real (re, im) pairs and matrix products the scans use)."""

from __future__ import annotations

import torch


def complex_loop(log_mag: torch.Tensor, phase: torch.Tensor, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """h_t = lambda h_{t-1} + x_t one step at a time, lambda = exp(log_mag + i phase).

    Shapes:
        log_mag, phase (N,); x (N, 2, B, T) time-ordered (re, im) planes; h0 (N, 2, B)
        -> h (N, 2, B, T), the state after each step.
    """
    lam = torch.polar(torch.exp(log_mag), phase).unsqueeze(1)  # (N, 1)
    h = torch.complex(h0[:, 0], h0[:, 1])  # (N, B)
    out = []
    for t in range(x.shape[-1]):
        h = lam * h + torch.complex(x[:, 0, :, t], x[:, 1, :, t])
        out.append(torch.stack([h.real, h.imag], dim=1))
    return torch.stack(out, dim=-1)
