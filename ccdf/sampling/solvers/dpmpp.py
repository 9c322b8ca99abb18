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
from ccdf.schedules.base import memoized
from ccdf.utils.tensor import bcast, bcast_key


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
        key = ("dpmpp_2m", *bcast_key(x_t))
        c_x, c_d, last = memoized(schedule, key, (t, s), lambda t, s: _coefs(schedule, t, s, x_t))
        if last:  # last step: first order, x_0 = x0_hat
            x_s = x0_hat
        else:
            d = x0_hat
            prev = history.read("x0_hat", step.idx)
            if prev is not None and not all(step.first):
                # items that are not new took the common grid's previous step, t_prev -> t
                c_now, c_prev = memoized(schedule, "dpmpp_2m_r", (step.t_prev, t, s),
                                         lambda u, t, s: _second_order(schedule, u, t, s))  # fmt: skip
                d2 = c_now * x0_hat - c_prev * prev.to(x0_hat.dtype)
                if any(step.first):  # items that joined on this step take the first-order update
                    second = torch.tensor([not f for f in step.first]).to(x0_hat.device, non_blocking=True)
                    d = torch.where(second.reshape(-1, *[1] * (x0_hat.ndim - 1)), d2, x0_hat)
                else:
                    d = d2
            x_s = c_x * x_t - c_d * d
        history.write("x0_hat", step.idx, x0_hat.detach(), batch)
        return cond.step(x_s, x_t, x0_hat, t, s, step.problem, step.generator), x0_hat


def _coefs(schedule, t: torch.Tensor, s: torch.Tensor, like: torch.Tensor) -> tuple:
    """(s_s / s_t, a_s (e^{-h} - 1)) shaped for ``like``, and whether s is the last level (s_s = 0)."""
    a_s, s_t, s_s = schedule.alpha(s), schedule.sigma(t), schedule.sigma(s)
    if float(s_s) == 0:
        return None, None, True
    h = _lambda(schedule, s) - _lambda(schedule, t)
    return bcast(s_s / s_t, like), bcast(a_s * torch.expm1(-h), like), False


def _second_order(schedule, t_prev: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> tuple:
    """The float64 weights (1 + 1 / (2r), 1 / (2r)) of D, r = h_prev / h."""
    h = _lambda(schedule, s) - _lambda(schedule, t)
    r = (_lambda(schedule, t) - _lambda(schedule, t_prev)) / h
    return 1 + 1 / (2 * r), 1 / (2 * r)
