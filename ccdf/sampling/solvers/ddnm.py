r"""DDNM and DDNM+ (Wang, Yu & Zhang, ICLR 2023): range-null-space decomposition of x0_hat.

Per step t -> s (a = a_s, sigma = s_s, eps_hat = (x_t - a_t x0_hat) / s_t), as wyhuai/DDNM's
``ddnm_diffusion`` / ``ddnm_plus_diffusion`` (the SVD path, with DDIM's quantities):

* DDNM (sigma_y = 0): :math:`\hat x_0 \leftarrow \hat x_0 - A^+(A \hat x_0 - y)` (keep the null-space
  part, replace the range part by the measurement), then
  :math:`x_s = a \hat x_0 + \sigma \eta z + \sigma \sqrt{1 - \eta^2}\, \hat\epsilon`.
* DDNM+ (sigma_y > 0): the range correction is scaled by :math:`\lambda_t` and the noise on the range
  of A is reduced so that the measurement noise it carries is not counted twice: with
  :math:`c = a \sigma_y`, if :math:`\sigma < c`: :math:`\lambda = \sigma\sqrt{1-\eta^2}/c`, range noise
  :math:`\sigma\eta z`; if :math:`\sigma > c`: :math:`\lambda = 1`, range noise :math:`\sqrt{\sigma^2 - c^2}\, z`;
  the null space keeps DDIM's :math:`\sigma\eta z + \sigma\sqrt{1-\eta^2}\hat\epsilon`. The thresholds take the
  operator's nonzero singular values as 1 (exact for masks and Cartesian MRI); on the last step
  (sigma = 0) lambda = 0, as in the official code.

No time travel (the official default ``travel_length`` 1). NFE = N'.

Args:
    eta: the noise fraction (official default 0.85).
"""

from __future__ import annotations

import math

from ccdf.sampling.solvers.base import Solver
from ccdf.utils.rng import randn_like
from ccdf.utils.tensor import bcast


class DDNM(Solver):
    """DDNM (sigma_y = 0) and DDNM+ (sigma_y > 0); see the module docstring."""

    name = "ddnm"

    def __init__(self, eta: float = 0.85) -> None:
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"DDNM eta must lie in [0, 1], got {eta}")
        self.eta = float(eta)

    def step(self, denoiser, schedule, x, step, cond, history, batch):
        t, s, problem = step.t, step.s, step.problem
        x_t, out = self.evaluate(denoiser, x, step, cond)
        x0_hat, op = out.x0_hat, problem.op
        eps = (x_t - bcast(schedule.alpha(t), x_t) * x0_hat) / bcast(schedule.sigma(t), x_t)
        a, sig = float(schedule.alpha(s)), float(schedule.sigma(s))
        correction = op.pinv(op(x0_hat) - problem.y)
        z = randn_like(x_t, step.generator)
        eta, keep = self.eta, math.sqrt(1 - self.eta**2)
        null_noise = sig * eta * z + sig * keep * eps
        c = a * problem.sigma_y
        if c == 0:
            x_s = a * (x0_hat - correction) + null_noise
        else:
            if sig < c:
                lam, range_noise = sig * keep / c, sig * eta * z
            elif sig > c:
                lam, range_noise = 1.0, math.sqrt(sig**2 - c**2) * z
            else:
                lam, range_noise = 1.0, null_noise
            in_range = lambda v: op.pinv(op(v))  # noqa: E731 - the projection A^+ A onto the row space
            x_s = a * (x0_hat - lam * correction) + in_range(range_noise) + null_noise - in_range(null_noise)
        return cond.step(x_s, x_t, x0_hat, t, s, problem, step.generator), x0_hat
