r"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2): the multistep second-order ODE solver
in data-prediction form, with the conditioning after each step.

With :math:`\lambda_t = \log(a_t / s_t)` and :math:`h = \lambda_s - \lambda_t` for a step t -> s:

.. math::
    x_s = \frac{s_s}{s_t} x_t - a_s (e^{-h} - 1) D, \qquad
    D = \Big(1 + \frac{1}{2r}\Big) \hat x_0(t) - \frac{1}{2r} \hat x_0(t_{prev}), \quad
    r = \frac{h_{prev}}{h},

with the first-order update :math:`D = \hat x_0(t)` on an item's first step (no history yet: an
item that joins mid-pass starts exactly as if it had run alone) and on the last step to s = 0
(where :math:`s_s = 0` and the update is :math:`x_0 = \hat x_0`), as ``diffusers``'
``DPMSolverMultistepScheduler`` does (``final_sigmas_type="zero"``).
"""

from __future__ import annotations

import torch

from ccdf.sampling.solvers.base import Solver
from ccdf.utils.tensor import bcast


def _lambda(schedule, t: torch.Tensor) -> torch.Tensor:
    memo = getattr(schedule, "_memo", None)  # the schedule's TimeMemo: computed once per grid time
    fn = lambda u: torch.log(schedule.alpha(u)) - torch.log(schedule.sigma(u))  # noqa: E731
    return fn(t) if memo is None else memo("lambda", t, fn)


class DPMSolverPP2M(Solver):
    """DPM-Solver++(2M); one network evaluation per step (NFE = N')."""

    name = "dpmpp_2m"

    def step(self, denoiser, schedule, x, step, cond, history, batch):
        t, s = step.t, step.s
        x_t, out = self.evaluate(denoiser, x, step, cond)
        x0_hat = out.x0_hat
        a_s, s_t, s_s = schedule.alpha(s), schedule.sigma(t), schedule.sigma(s)
        if float(s_s) == 0:  # last step: first order, x_0 = x0_hat
            x_s = x0_hat
        else:
            h = _lambda(schedule, s) - _lambda(schedule, t)
            d = x0_hat
            prev = history.read("x0_hat", step.idx)
            if prev is not None and not all(step.first):
                # items that are not new took the common grid's previous step, t_prev -> t
                r = (_lambda(schedule, t) - _lambda(schedule, step.t_prev)) / h
                d2 = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * prev.to(x0_hat.dtype)
                second = torch.tensor([not f for f in step.first]).to(x0_hat.device, non_blocking=True)
                d = torch.where(second.reshape(-1, *[1] * (x0_hat.ndim - 1)), d2, x0_hat)
            x_s = bcast(s_s / s_t, x_t) * x_t - bcast(a_s * torch.expm1(-h), x_t) * d
        history.write("x0_hat", step.idx, x0_hat.detach(), batch)
        return cond.step(x_s, x_t, x0_hat, t, s, step.problem, step.generator), x0_hat
