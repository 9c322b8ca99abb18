"""Come-Closer-Diffuse-Faster as a wrapper around any solver: diffuse x_init to t0, then solve.

:func:`warm_start` is the CCDF idea on its own (Chung, Sim & Ye, CVPR 2022, Alg. 1): each item
jumps from its initial estimate to its own start time ``t0`` (a draw of q(x_t0 | x_init)), then
joins one batched pass of the solver when the clock reaches that time. :func:`sample_ccdf` is
the front the configs call: it builds the solver and the conditioning and calls the warm start.
With t0 = 1 and x_init = 0 it is the solver's usual conditional sampler from pure noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ccdf.denoisers.base import Denoiser
from ccdf.operators.base import Operator
from ccdf.sampling.average import sample_average
from ccdf.sampling.conditioning import Conditioning, Problem, make_conditioning
from ccdf.sampling.solvers import SOLVERS, Solver, StepInfo, StepSolver
from ccdf.schedules.base import Schedule, forward_diffuse, num_steps_from_t0
from ccdf.utils.rng import Generator, select_generators

__all__ = ["StepInfo", "expected_nfe", "reverse_steps", "sample_ccdf", "warm_start"]


def reverse_steps(t0: float | Sequence[float] | Tensor, num_steps: int) -> Tensor:
    """N' = round(t0 * N) per item, ``[B]`` int64 (t0 checked to lie in (0, 1])."""
    t0s = torch.as_tensor(t0, dtype=torch.float64).reshape(-1)
    return torch.tensor([num_steps_from_t0(float(v), num_steps) for v in t0s], dtype=torch.long)


def expected_nfe(t0: float, num_steps: int, n_corrector: int = 0) -> int:
    """Network evaluations of one classic CCDF run: round(t0 * N) * (1 + corrector steps per level).

    >>> expected_nfe(0.1, 1000), expected_nfe(0.02, 1000, n_corrector=1)
    (100, 40)
    """
    return int(num_steps_from_t0(t0, num_steps)) * (1 + n_corrector)


def warm_start(
    solver: Solver,
    denoiser: Denoiser,
    schedule: Schedule,
    problem: Problem,
    x_init: Tensor,
    *,
    t0: float | Sequence[float] | Tensor,
    num_steps: int,
    cond: Conditioning,
    generator: Generator = None,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = False,
    x0_clip: float | None = None,
) -> Tensor:
    r"""CCDF's warm start around ``solver``: x_{t0} ~ q(x_{t0} | x_init) per item, then N' steps.

    Item b starts ``K - N'_b`` steps into the common grid ``schedule.timesteps(N, K / N)``
    (K = max N'), so one pass serves several t0 values. Each item's forward jump is its first
    random draw, before any step, so with per-item generators its result does not depend on the
    other items of the batch.
    """
    batch = x_init.shape[0]
    k_items = reverse_steps(t0, num_steps)
    if k_items.numel() == 1:
        k_items = k_items.expand(batch)
    elif k_items.numel() != batch:
        raise ValueError(f"got {k_items.numel()} t0 values for a batch of {batch}")
    k_items = k_items.tolist()
    k_max = max(k_items)
    grid = schedule.timesteps(num_steps, t_start=k_max / num_steps)
    if grid.shape[0] != k_max + 1:
        raise ValueError(f"schedule grid has {grid.shape[0]} points, expected {k_max + 1}")
    start = [k_max - k for k in k_items]
    x = torch.empty_like(x_init)
    for k0 in sorted(set(start)):
        mask = torch.tensor([s == k0 for s in start])
        if bool(mask.all()):
            x = forward_diffuse(schedule, x_init, grid[k0], generator)
        else:
            idx = mask.nonzero().reshape(-1).tolist()
            x[idx] = forward_diffuse(schedule, x_init[idx], grid[k0], select_generators(generator, mask))
    cond.bind(schedule)
    return solver(denoiser, schedule, x, grid, start=start, problem=problem, cond=cond, generator=generator,
                  callback=callback, progress=progress, x0_clip=x0_clip)  # fmt: skip


def sample_ccdf(
    denoiser: Denoiser,
    schedule: Schedule,
    op: Operator,
    y: Tensor,
    x_init: Tensor,
    *,
    t0: float | Sequence[float] | Tensor,
    num_steps: int,
    solver: str | Solver | None = None,
    step: str | Callable = "ddpm",
    variance: str = "beta",
    eta: float = 0.0,
    corrector: str | Callable | None = None,
    n_corrector: int = 1,
    snr: float = 0.16,
    corrector_step: str = "sigma",
    dc: str | Conditioning = "project",
    sigma_y: float = 0.0,
    x0_clip: float | None = None,
    generator: Generator = None,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = False,
    average: int = 1,
) -> Tensor:
    r"""CCDF (Chung, Sim & Ye, CVPR 2022, Alg. 1) with any solver: x_{N'} ~ q(x_{N'} | x_init), then N' steps.

    Args:
        denoiser: D(x_t, t) -> x0_hat (:mod:`ccdf.denoisers`).
        schedule: the forward process; ``schedule.timesteps(num_steps, 1)`` is the time grid.
        op: measurement operator; ``y`` its measurement (``[B, ...]``).
        x_init: initial estimate ``[B, C, H, W]`` (model range).
        t0: start time in (0, 1], a float or one value per item: item b joins the batched
            pass when the clock reaches its own ``round(t0_b * num_steps)`` steps from the end.
        num_steps: N, the steps of the full [0, 1] grid; the run takes N' = round(t0 N).
        solver: a :class:`~ccdf.sampling.solvers.Solver` or a name in
            :data:`~ccdf.sampling.solvers.SOLVERS` (default settings). None: the classic
            one-step solver made of ``step``, ``variance``, ``eta``, ``corrector``, ``n_corrector``,
            ``snr`` and ``corrector_step`` (:class:`~ccdf.sampling.solvers.StepSolver`), which
            must then keep their defaults when ``solver`` is given.
        dc: the conditioning: ``"project"`` | ``"prox"`` | ``"none"``
            (:data:`~ccdf.sampling.conditioning.CONDITIONINGS`) or a
            :class:`~ccdf.sampling.conditioning.Conditioning`.
        sigma_y: the measurement noise standard deviation (for conditionings that use it).
        x0_clip: clamp x0_hat to [-c, c] (guided-diffusion's ``clip_denoised``), or None.
        generator: a generator or one per item (:mod:`ccdf.utils.rng`).
        callback: called with :class:`StepInfo` after each step.
        progress: show a progress bar.
        average: K >= 1: the mean of K independent runs from the same ``x_init`` and ``y``, each with
            its own forward jump and sampler noise (:func:`ccdf.sampling.average.sample_average`;
            per-item generators give each run its own stream derived from the item's generator).
            The callback then sees the K runs one after another.

    Returns:
        The reconstruction ``[B, C, H, W]``.

    Network evaluations per item: ``K solver.nfe(N')`` (N' for one-step solvers, N'(1 + n_corrector)
    with a corrector).
    """
    if not isinstance(average, int) or isinstance(average, bool) or average < 1:
        raise ValueError(f"sampler.average (the number of averaged runs) must be an integer >= 1, got {average!r}")
    if average > 1:
        return sample_average(
            sample_ccdf, denoiser, schedule, op, y, x_init, average=average, generator=generator, t0=t0,
            num_steps=num_steps, solver=solver, step=step, variance=variance, eta=eta, corrector=corrector,
            n_corrector=n_corrector, snr=snr, corrector_step=corrector_step, dc=dc, sigma_y=sigma_y,
            x0_clip=x0_clip, callback=callback, progress=progress,
        )  # fmt: skip
    if x_init.ndim < 2:
        raise ValueError(f"x_init must be batched [B, ...], got shape {tuple(x_init.shape)}")
    if y.shape[0] != x_init.shape[0]:
        raise ValueError(f"y has batch size {y.shape[0]} but x_init has {x_init.shape[0]}")
    legacy = dict(step=step, variance=variance, eta=eta, corrector=corrector, n_corrector=n_corrector, snr=snr,
                  corrector_step=corrector_step)  # fmt: skip
    if solver is None:
        solver = StepSolver(**legacy)
    else:
        defaults = dict(step="ddpm", variance="beta", eta=0.0, corrector=None, n_corrector=1, snr=0.16,
                        corrector_step="sigma")  # fmt: skip
        changed = sorted(k for k, v in legacy.items() if v != defaults[k])
        if changed:
            raise ValueError(f"{', '.join(changed)} belong to the classic solver; with solver={solver!r} set them "
                             "on the solver itself")  # fmt: skip
        solver = make_solver(solver)
    cond = make_conditioning(dc)
    problem = Problem(op, y, float(sigma_y))
    if op(x_init).shape != y.shape:
        raise ValueError(f"A(x_init) has shape {tuple(op(x_init).shape)} but y has shape {tuple(y.shape)}")
    return warm_start(solver, denoiser, schedule, problem, x_init, t0=t0, num_steps=num_steps, cond=cond,
                      generator=generator, callback=callback, progress=progress, x0_clip=x0_clip)  # fmt: skip


def make_solver(spec: str | Solver) -> Solver:
    """A solver object from its name in :data:`SOLVERS` (default settings) or as given."""
    if isinstance(spec, Solver):
        return spec
    if spec not in SOLVERS:
        raise ValueError(f"unknown solver {spec!r}; choose one of {sorted(SOLVERS)}")
    return SOLVERS[spec]()
