"""Variance-exploding schedule (SMLD / score-SDE VE)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ccdf.schedules.base import TimeMemo, as_time, uniform_timesteps


class VE:
    r"""VE SDE with geometric noise levels: :math:`\sigma(t) = \sigma_{min} (\sigma_{max}/\sigma_{min})^t`.

    ``alpha(t) = 1``. At ``t = 0`` the noise level is 0 (the data), which is where the last
    reverse step of score-SDE's sampler (``denoise=True``) lands; for ``t > 0`` it is the
    geometric level above, as in score-SDE's continuous VE model (Song et al. 2021, eq. 30).

    Args:
        sigma_min: smallest noise level (score-MRI: 0.01).
        sigma_max: largest noise level (score-MRI fastMRI: 378).
    """

    kind = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self._memo = TimeMemo()  # sigma at the grid's times, computed once per run

    def __repr__(self) -> str:
        return f"VE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"

    def alpha(self, t: Tensor | float) -> Tensor:
        return torch.ones_like(as_time(t))

    def sigma(self, t: Tensor | float) -> Tensor:
        return self._memo("sigma", t, self._sigma)

    def _sigma(self, t: Tensor) -> Tensor:
        s = self.sigma_min * torch.exp(t * math.log(self.sigma_max / self.sigma_min))
        return torch.where(t > 0, s, torch.zeros_like(s))

    def timesteps(self, num_steps: int, t_start: float = 1.0) -> Tensor:
        return uniform_timesteps(num_steps, t_start)
