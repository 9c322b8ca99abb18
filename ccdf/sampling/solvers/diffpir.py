r"""DiffPIR (Zhu et al., CVPR workshops 2023): a proximal data step on x0_hat, then re-noising.

Per step t -> s, as yuanzhi-zhu/DiffPIR's ``main_ddpir_*`` loop (with eta = 0):

.. math::
    \hat x_0 \leftarrow \arg\min_x \|y - A x\|^2 + \rho_t \|x - \hat x_0\|^2, \quad
    \rho_t = \lambda \frac{\sigma_n^2}{\bar\sigma_t^2}, \quad \bar\sigma_t = \frac{s_t}{a_t},

    x_s = a_s \hat x_0 + s_s \big(\sqrt{1 - \zeta}\, \hat\epsilon + \sqrt{\zeta}\, z\big), \quad
    \hat\epsilon = (x_t - a_t \hat x_0) / s_t,

with :math:`\sigma_n = \max(\sigma_y, \text{sigma\_floor})` in model units ([-1, 1]). The official code
measures sigma_n in [0, 1] units (half of ours), so its lambda is 4x ours: its default lambda = 1 is
``lam=0.25`` here, and its noiseless floor 0.001 is ``sigma_floor=0.002``. The data step is the
operator's closed-form ``prox``. On the last step (s = 0) the result is the data-corrected x0_hat
(the official loop spends one more network evaluation at t = 0 and returns the state there, whose
noise is a_0-level, about 0.01). NFE = N'.

Args:
    lam: lambda (model units).
    zeta: the fraction of fresh noise (official: 0.25 for super-resolution, 1.0 for inpainting).
    sigma_floor: the smallest sigma_n (keeps rho > 0 for noiseless data).
"""

from __future__ import annotations

import math

from ccdf.sampling.solvers.base import Solver
from ccdf.utils.rng import randn_like
from ccdf.utils.tensor import bcast


class DiffPIR(Solver):
    """DiffPIR; see the module docstring."""

    name = "diffpir"

    def __init__(self, lam: float = 0.25, zeta: float = 0.25, sigma_floor: float = 0.002) -> None:
        if not float(lam) > 0:
            raise ValueError(f"DiffPIR lam must be > 0, got {lam}")
        if not 0.0 <= float(zeta) <= 1.0:
            raise ValueError(f"DiffPIR zeta must lie in [0, 1], got {zeta}")
        if not float(sigma_floor) > 0:
            raise ValueError(f"DiffPIR sigma_floor must be > 0, got {sigma_floor}")
        self.lam, self.zeta, self.sigma_floor = float(lam), float(zeta), float(sigma_floor)

    def step(self, denoiser, schedule, x, step, cond, history, batch):
        t, s, problem = step.t, step.s, step.problem
        x_t, out = self.evaluate(denoiser, x, step, cond)
        a_t, s_t = float(schedule.alpha(t)), float(schedule.sigma(t))
        sigma_n = max(problem.sigma_y, self.sigma_floor)
        rho = self.lam * sigma_n**2 / (s_t / a_t) ** 2
        x0_hat = problem.op.prox(out.x0_hat, problem.y, rho)
        eps = (x_t - a_t * x0_hat) / s_t
        z = randn_like(x_t, step.generator)
        a_s, s_s = schedule.alpha(s), schedule.sigma(s)
        noise = math.sqrt(1 - self.zeta) * eps + math.sqrt(self.zeta) * z
        x_s = bcast(a_s, x_t) * x0_hat + bcast(s_s, x_t) * noise
        return cond.step(x_s, x_t, x0_hat, t, s, problem, step.generator), x0_hat
