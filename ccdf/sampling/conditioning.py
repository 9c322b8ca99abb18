r"""How the measurement enters a solver: conditionings (data consistency and guidance).

A solver calls two hooks of its conditioning on every step (either may be the identity):

* ``denoised(x_t, x0_hat, t, problem, generator) -> x0_hat``: correct the denoiser's estimate
  (DDNM's range-null-space replacement, DiffPIR's proximal step on x0_hat);
* ``step(x_next, x_t, x0_hat, t, s, problem, generator) -> x_next``: correct the new state
  (CCDF's projection onto the diffused measurement, a proximal step, DPS's gradient).

A conditioning that needs gradients through the denoiser sets ``needs_grad``; the solver then
runs the denoiser with autograd on ``x_t`` (and only then). A conditioning reads the operator
only through its methods (``forward``, ``adjoint``, ``pinv``, ``project``, ``prox``) and gets the
noise level ``sigma_y`` from the :class:`Problem`, never from the operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ccdf.operators.base import Operator
from ccdf.schedules.base import Schedule, forward_diffuse
from ccdf.utils.rng import Generator


@dataclass
class Problem:
    """A measurement problem y = A x + sigma_y n.

    Attributes:
        op: the operator A.
        y: the measurements ``[B, ...]``.
        sigma_y: the noise standard deviation (model range), ``>= 0``.
    """

    op: Operator
    y: Tensor
    sigma_y: float = 0.0
    _pinv_y: Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not float(self.sigma_y) >= 0:  # also refuses NaN
            raise ValueError(f"sigma_y must be >= 0, got {self.sigma_y}")

    def pinv_y(self) -> Tensor:
        """A^+ y, computed once per problem (the data steps diffuse it at every step)."""
        if self._pinv_y is None:
            self._pinv_y = self.op.pinv(self.y)
        return self._pinv_y

    def select(self, idx: list[int] | None) -> Problem:
        """The problem of the items ``idx`` (all items when None)."""
        return self if idx is None else Problem(self.op.select(idx), self.y[idx], self.sigma_y)


class Conditioning:
    """The identity conditioning (unconditional sampling); subclasses override one or both hooks.

    Attributes:
        needs_grad: the ``step`` hook differentiates x0_hat with respect to x_t.
        schedule: set by :meth:`bind` before sampling (hooks that diffuse the measurement use it).
    """

    needs_grad: bool = False
    schedule: Schedule | None = None

    def bind(self, schedule: Schedule) -> Conditioning:
        self.schedule = schedule
        return self

    def denoised(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, problem: Problem, generator: Generator) -> Tensor:
        return x0_hat

    def step(
        self, x_next: Tensor, x_t: Tensor, x0_hat: Tensor, t: Tensor, s: Tensor, problem: Problem, generator: Generator
    ) -> Tensor:
        return x_next

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoConditioning(Conditioning):
    """No data consistency: the unconditional sampler (``dc: none``)."""


class Projection(Conditioning):
    r"""CCDF's data consistency (score-SDE's ``inpaint_update_fn``): after each step,
    :math:`x_s \leftarrow P_{y_s}(x_s)` with :math:`y_s = A(a_s A^+ y + s_s z)` the measurement
    diffused to the new level. At s = 0 this sets A x = y exactly. Non-expansive.
    """

    def step(self, x_next, x_t, x0_hat, t, s, problem, generator):
        op = problem.op
        y_s = op(forward_diffuse(self.schedule, problem.pinv_y(), s, generator))
        return op.project(x_next, y_s)


class Prox(Conditioning):
    r"""A proximal data step on the state (soft data consistency for noisy measurements).

    After each step, with the measurement diffused to the new level as in :class:`Projection`,
    :math:`x_s \leftarrow \arg\min_x \|A x - y_s\|^2 / (2 a_s^2 \sigma_y^2) + \|x - x_s\|^2 / (2 \gamma_s)`,
    where :math:`\gamma_s = \text{gamma\_scale}\cdot s_s^2` (the state's own noise variance) by default.
    With sigma_y = 0 it is the projection; at s = 0 (gamma = 0) it keeps the denoised state and
    does not copy the measurement noise into the result.

    Args:
        gamma_scale: gamma_s / s_s^2.
    """

    def __init__(self, gamma_scale: float = 1.0) -> None:
        if not float(gamma_scale) > 0:
            raise ValueError(f"prox gamma_scale must be > 0, got {gamma_scale}")
        self.gamma_scale = float(gamma_scale)

    def step(self, x_next, x_t, x0_hat, t, s, problem, generator):
        op, sched = problem.op, self.schedule
        y_s = op(forward_diffuse(sched, problem.pinv_y(), s, generator))
        if problem.sigma_y == 0:
            return op.project(x_next, y_s)
        gamma = self.gamma_scale * float(sched.sigma(s)) ** 2
        if gamma == 0:
            return x_next
        noise_var = (float(sched.alpha(s)) * problem.sigma_y) ** 2
        return op.prox(x_next, y_s, noise_var / gamma)

    def __repr__(self) -> str:
        return f"Prox(gamma_scale={self.gamma_scale})"


CONDITIONINGS: dict[str, type[Conditioning]] = {"project": Projection, "prox": Prox, "none": NoConditioning}


def make_conditioning(spec: str | Conditioning) -> Conditioning:
    """A conditioning from its name in :data:`CONDITIONINGS` (default settings) or as given."""
    if isinstance(spec, Conditioning):
        return spec
    if spec not in CONDITIONINGS:
        raise ValueError(f"unknown conditioning (dc) {spec!r}; choose one of {sorted(CONDITIONINGS)}")
    return CONDITIONINGS[spec]()


def grad_enabled(needs_grad: bool):
    """``torch.enable_grad()`` when a conditioning differentiates through the denoiser, else ``no_grad``."""
    return torch.enable_grad() if needs_grad else torch.no_grad()
