r"""Gradient guidance through the denoiser: DPS and ΠGDM as conditionings (``needs_grad``).

Both differentiate x0_hat(x_t) with respect to x_t (a vector-Jacobian product through the
network), so the solver runs the denoiser with autograd for them, and only for them.
Per-item norms and products throughout: an item's result never depends on its batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ccdf.sampling.conditioning import Conditioning, Problem, Projection
from ccdf.utils.tensor import bcast


def check_differentiable(x_t: Tensor, x0_hat: Tensor) -> None:
    """Raise a clear error when x0_hat cannot be differentiated with respect to x_t."""
    if not (x_t.requires_grad and x0_hat.requires_grad):
        raise ValueError(
            "gradient guidance (DPS, PiGDM) needs a denoiser that can be differentiated: x0_hat does not depend on x_t "
            "through autograd (a denoiser run under torch.no_grad or torch.inference_mode, or one that detaches)"
        )


def _vjp(x_t: Tensor, x0_hat: Tensor, v: Tensor) -> Tensor:
    """J^T v with J = d x0_hat / d x_t (per item; ``v`` is detached)."""
    check_differentiable(x_t, x0_hat)
    prod = (x0_hat.conj() * v.detach()).real if torch.is_complex(x0_hat) else x0_hat * v.detach()
    (g,) = torch.autograd.grad(prod.sum(), x_t)
    return g


class DPS(Conditioning):
    r"""Diffusion posterior sampling (Chung et al., ICLR 2023, Alg. 1) as the official code runs it.

    After the solver's step from x_t to x_s:
    :math:`x_s \leftarrow x_s - \zeta \nabla_{x_t} \|y - A \hat x_0(x_t)\|_2`
    (the norm, not its square, per item; DPS2022/diffusion-posterior-sampling's ``PosteriorSampling``
    with ``scale`` = zeta: 0.5 for inpainting, 0.3 for super-resolution and deblurring in its FFHQ
    configs; the paper's zeta' on the squared norm is scale / 2). The official code takes the norm
    over the whole batch (it runs one image at a time); here it is per item. sigma_y does not enter.

    Args:
        scale: zeta.
    """

    needs_grad = True

    def __init__(self, scale: float = 0.5) -> None:
        if not float(scale) >= 0:
            raise ValueError(f"DPS scale must be >= 0, got {scale}")
        self.scale = float(scale)

    def step(self, x_next, x_t, x0_hat, t, s, problem: Problem, generator):
        check_differentiable(x_t, x0_hat)
        residual = problem.y - problem.op(x0_hat)
        norm = residual.abs().pow(2).flatten(1).sum(1).sqrt()
        (grad,) = torch.autograd.grad(norm.sum(), x_t)
        return x_next - self.scale * grad

    def __repr__(self) -> str:
        return f"DPS(scale={self.scale})"


class MCG(DPS, Projection):
    r"""Manifold-constrained gradient (Chung, Sim, Ryu & Ye, NeurIPS 2022): DPS's gradient step through the
    network, then CCDF's projection onto the measurement diffused to the new level.

    After the solver's step from x_t to x_s:
    :math:`x_s \leftarrow P_{y_s}(x_s - \zeta \nabla_{x_t} \|y - A \hat x_0(x_t)\|_2)` — the composition that
    DPS2022/diffusion-posterior-sampling's ``ManifoldConstraintGradient`` runs (its ``scale`` is zeta). One
    departure, on purpose: that code diffuses the measurement to the *current* level t before projecting the
    new state; here it is diffused to the new level s, as :class:`~ccdf.sampling.conditioning.Projection`
    does for every solver, so that at s = 0 the result is consistent with y exactly.

    Args:
        scale: zeta of the gradient step.
    """

    def step(self, x_next, x_t, x0_hat, t, s, problem: Problem, generator):
        x_next = DPS.step(self, x_next, x_t, x0_hat, t, s, problem, generator)
        return Projection.step(self, x_next, x_t, x0_hat, t, s, problem, generator)

    def __repr__(self) -> str:
        return f"MCG(scale={self.scale})"


class PiGDM(Conditioning):
    r"""Pseudo-inverse-guided diffusion (ΠGDM; Song et al., ICLR 2023) with its r_t.

    The guidance direction is :math:`g = J^T A^T (A A^T + \frac{\sigma_y^2}{r_t^2} I)^{-1} (y - A\hat x_0)
    = J^T (\mathrm{prox}(\hat x_0, y, \sigma_y^2 / r_t^2) - \hat x_0)`, J = d x0_hat / d x_t; with sigma_y = 0
    it is :math:`J^T A^+(y - A \hat x_0)`. ``r_t^2 = v s_t^2 / (a_t^2 v + s_t^2)``, the posterior variance of
    x0 given x_t under an isotropic prior of variance ``v`` (``data_var``; 1 gives the paper's
    :math:`r_t^2 = s_t^2/(1 + s_t^2)` in VE units, i.e. 1 - abar_t for VP).

    Two weightings:

    * ``"official"`` (default): after the solver's step, :math:`x_s \leftarrow x_s + w\, a_s a_t\, g`, as
      NVlabs/RED-diff's ``algos/pgdm.py`` (``awd=True``) does with DDIM (``sampler=pigdm``, eta = 1).
      RED-diff ignores sigma_y in the guidance; here sigma_y = 0 reproduces it exactly.
    * ``"score"``: x0_hat is replaced by the conditional Tweedie estimate
      :math:`\hat x_0 + w \frac{s_t^2}{a_t r_t^2} g` before the step (any solver). With w = 1 and the
      exact r_t of an isotropic Gaussian prior this is E[x0 | x_t, y] exactly, so an exact sampler
      then samples the posterior.

    Args:
        weight: w.
        weighting: ``"official"`` | ``"score"``.
        data_var: v in r_t.
    """

    needs_grad = True
    WEIGHTINGS = ("official", "score")

    def __init__(self, weight: float = 1.0, weighting: str = "official", data_var: float = 1.0) -> None:
        if weighting not in self.WEIGHTINGS:
            raise ValueError(f"unknown PiGDM weighting {weighting!r}; choose one of {self.WEIGHTINGS}")
        if not float(data_var) > 0:
            raise ValueError(f"PiGDM data_var must be > 0, got {data_var}")
        self.weight, self.weighting, self.data_var = float(weight), weighting, float(data_var)

    def r2(self, t: Tensor) -> Tensor:
        a, s = self.schedule.alpha(t), self.schedule.sigma(t)
        return self.data_var * s**2 / (a**2 * self.data_var + s**2)

    def _direction(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, problem: Problem) -> Tensor:
        op, lam = problem.op, problem.sigma_y**2 / float(self.r2(t))
        v = op.prox(x0_hat.detach(), problem.y, lam) - x0_hat.detach()
        return _vjp(x_t, x0_hat, v)

    def denoised(self, x_t, x0_hat, t, problem, generator):
        if self.weighting != "score":
            return x0_hat
        a, s = self.schedule.alpha(t), self.schedule.sigma(t)
        g = self._direction(x_t, x0_hat, t, problem)
        return x0_hat + bcast(self.weight * s**2 / (a * self.r2(t)), x0_hat) * g

    def step(self, x_next, x_t, x0_hat, t, s, problem, generator):
        if self.weighting != "official":
            return x_next
        coeff = self.weight * self.schedule.alpha(s) * self.schedule.alpha(t)
        return x_next + bcast(coeff, x_next) * self._direction(x_t, x0_hat, t, problem)

    def __repr__(self) -> str:
        return f"PiGDM(weight={self.weight}, weighting={self.weighting!r}, data_var={self.data_var})"
