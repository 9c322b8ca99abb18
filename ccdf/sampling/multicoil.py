r"""score-MRI's ways of using a single-image (magnitude) prior on multi-coil data (Chung & Ye, MedIA 2022).

Both reconstruct the C *coil images* ``c = S x`` ``[B, C, H, W]``, each as an image of its own, with the
prior applied coil by coil (:class:`PerCoilDenoiser`: C network evaluations per step, each on Re and Im
as the prior's denoiser does for complex images), and a per-coil k-space data step (the chosen
conditioning with :class:`ccdf.operators.multicoil.CoilKSpace`, y_c = M F c_c), then combine the coil
images at the end:

* **SSOS** (``sample_ssos``; score-MRI's ``get_pc_fouriercs_RI_PI_SSOS``): nothing couples the coils;
  the result is their root-sum-of-squares (``combine="rss"``, score-MRI's; a magnitude, returned as a
  complex image with zero imaginary part) or their SENSE combination (``combine="sense"``).
* **hybrid** (``sample_ssos(..., sense_every=m)``; score-MRI's ``get_pc_fouriercs_RI_coil_SENSE``): in
  addition, after every ``m``-th step of the full grid, a relaxed SENSE data step on the coil images,
  :math:`c \leftarrow c + \lambda_i S A^H (y - A\rho)` with :math:`\rho = S^H c / \sum_c |S_c|^2` the
  coil-combined image (:meth:`ccdf.operators.multicoil.CoilKSpace.sense_step`), :math:`\lambda_i` linear
  from ``sense_lambda[0]`` at t = 1 to ``sense_lambda[1]`` at t = 0 (score-MRI: 1.0 -> 0.2).

Departures from score-MRI's code, on purpose:

* score-MRI's ``kaczmarz`` applies its SENSE operator to the stack of coil images as if each were the
  combined image (it forms ``S_c c_c``, not ``c_c``, and adds the same correction to every coil); for
  coil images that follow the maps, c_c = S_c rho, its residual is y_c - M F(S_c^2 rho), which is not the
  SENSE residual. Here the step is the Landweber step on the combined image, written back through the
  maps: for c = S rho exactly :math:`\rho \leftarrow \rho + \lambda A^H(y - A\rho)`.
* score-MRI's lambda schedule divides the iteration by a fixed 2000 (with its default N = 500, lambda
  only falls from 1.0 to 0.8); here it follows the time t.
* score-MRI's data steps replace the sampled k-space with the clean measurement; here the conditioning
  is the sampler's ``dc`` (CCDF's projection onto the measurement diffused to the current level, by
  default), applied per coil; the SENSE step uses the measurement itself, as score-MRI's does.
* With CCDF's warm start the coil images start from ``S x_init`` (the initializer's image through the
  maps), diffused to t0 with independent noise per coil.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ccdf.denoisers.base import Denoiser, DenoiserOutput, as_output
from ccdf.operators.base import Operator
from ccdf.operators.multicoil import rss
from ccdf.sampling.average import sample_average
from ccdf.sampling.ccdf import sample_ccdf
from ccdf.sampling.conditioning import Conditioning, make_conditioning
from ccdf.utils.rng import Generator

COMBINES = ("rss", "sense")


class PerCoilDenoiser(nn.Module):
    """A single-image denoiser applied to each coil image of ``[B, C, H, W]``: C calls on ``[B, 1, H, W]``.

    Each call is one network evaluation per item, so a counting denoiser inside counts C per step
    (score-MRI's SSOS runs its network once per coil and step too). The solver's per-item bookkeeping
    (``set_items``) is passed through.
    """

    def __init__(self, denoiser: Denoiser) -> None:
        super().__init__()
        self.inner = denoiser

    def set_items(self, members: list[int], batch: int) -> None:
        track = getattr(self.inner, "set_items", None)
        if track is not None:
            track(members, batch)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor | DenoiserOutput:
        outs = [as_output(self.inner(x_t[:, c : c + 1], t)) for c in range(x_t.shape[1])]
        x0_hat = torch.cat([o.x0_hat for o in outs], dim=1)
        if all(o.var_frac is not None for o in outs):
            return DenoiserOutput(x0_hat, torch.cat([o.var_frac for o in outs], dim=1))
        return x0_hat


class SenseStep(Conditioning):
    r"""A conditioning plus score-MRI's hybrid SENSE step: after the inner conditioning's step, on every
    ``every``-th step of the full N-step grid (counted from t = 1), :math:`c \leftarrow c + \lambda(t)
    S A^H (y - A\rho)` (:meth:`ccdf.operators.multicoil.CoilKSpace.sense_step`).

    Args:
        inner: the per-coil conditioning (e.g. :class:`~ccdf.sampling.conditioning.Projection`).
        every: m, the period in steps of the full grid.
        num_steps: N of the grid (the step index of time t is round((1 - t) N)).
        lambdas: lambda at t = 1 and at t = 0 (linear in t between).
    """

    def __init__(self, inner: Conditioning, every: int, num_steps: int, lambdas: Sequence[float] = (1.0, 0.2)) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"sense_every must be a positive integer, got {every!r}")
        start, end = (float(v) for v in lambdas)
        if not (0 < start <= 2 and 0 <= end <= 2):  # Landweber converges for lambda < 2 / ||A||^2 = 2
            raise ValueError(f"sense_lambda must lie in (0, 2], got {list(lambdas)}")
        self.inner, self.every, self.num_steps, self.lambdas = inner, every, int(num_steps), (start, end)
        self.needs_grad = inner.needs_grad

    def bind(self, schedule):
        self.inner.bind(schedule)
        return super().bind(schedule)

    def denoised(self, x_t, x0_hat, t, problem, generator):
        return self.inner.denoised(x_t, x0_hat, t, problem, generator)

    def lam(self, t: float) -> float:
        start, end = self.lambdas
        return start + (end - start) * (1.0 - float(t))

    def step(self, x_next, x_t, x0_hat, t, s, problem, generator):
        x_next = self.inner.step(x_next, x_t, x0_hat, t, s, problem, generator)
        if float(s) >= float(t):  # a corrector step (same level): score-MRI's SENSE step follows the predictor
            return x_next
        index = round((1.0 - float(t)) * self.num_steps)  # this step's index on the full grid
        if index % self.every:
            return x_next
        return problem.op.sense_step(x_next, problem.y, self.lam(float(s)))

    def __repr__(self) -> str:
        return f"SenseStep({self.inner!r}, every={self.every}, lambdas={self.lambdas})"


def sample_ssos(
    denoiser: Denoiser,
    schedule,
    op: Operator,
    y: Tensor,
    x_init: Tensor,
    *,
    combine: str = "rss",
    sense_every: int | None = None,
    sense_lambda: Sequence[float] = (1.0, 0.2),
    dc: str | Conditioning = "project",
    num_steps: int,
    generator: Generator = None,
    callback: Callable | None = None,
    average: int = 1,
    **ccdf_kwargs,
) -> Tensor:
    """score-MRI's coil-by-coil samplers with CCDF's warm start (see the module docstring).

    Args:
        denoiser: a single-image denoiser (``[B, 1, H, W]``), run on each coil image.
        op: a multi-coil operator (:class:`ccdf.operators.MultiCoilMRI`); ``y`` its k-space ``[B, C, H, W]``.
        x_init: the initial coil-combined image ``[B, 1, H, W]``; the coil images start from ``S x_init``.
        combine: ``"rss"`` (score-MRI's root-sum-of-squares, a magnitude) or ``"sense"``.
        sense_every: None for SSOS; m for the hybrid sampler's SENSE step every m grid steps.
        sense_lambda: the hybrid's relaxation at t = 1 and t = 0.
        average: K >= 1 independent runs, their combined images averaged
            (:func:`ccdf.sampling.average.sample_average`).
        dc, num_steps, generator, callback, ccdf_kwargs: as :func:`ccdf.sampling.sample_ccdf` (t0, solver,
            step, corrector, ...), for the per-coil problem.

    Returns:
        The combined image ``[B, 1, H, W]`` (complex).
    """
    for method in ("coil_images", "coil_operator", "combine"):
        if not callable(getattr(op, method, None)):
            raise TypeError(
                "the SSOS / hybrid samplers need a multi-coil operator (operator=mri_multicoil), got "
                f"{type(op).__name__}"
            )
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
    if average != 1:
        return sample_average(sample_ssos, denoiser, schedule, op, y, x_init, average=average, generator=generator,
                              combine=combine, sense_every=sense_every, sense_lambda=sense_lambda, dc=dc,
                              num_steps=num_steps, callback=callback, **ccdf_kwargs)  # fmt: skip
    cond = make_conditioning(dc)
    if sense_every is not None:
        cond = SenseStep(cond, sense_every, num_steps, sense_lambda)
    coils = sample_ccdf(PerCoilDenoiser(denoiser), schedule, op.coil_operator(), y, op.coil_images(x_init),
                        dc=cond, num_steps=num_steps, generator=generator, callback=callback,
                        **ccdf_kwargs)  # fmt: skip
    if combine == "sense":
        return op.combine(coils).to(x_init.dtype if x_init.is_complex() else coils.dtype)
    mag = rss(coils)
    return torch.complex(mag, torch.zeros_like(mag))
