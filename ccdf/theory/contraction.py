r"""Measured contraction: the Lipschitz factor of one reverse step followed by the data step, for any denoiser.

The CCDF paper bounds the step's factor by :math:`\lambda_i = \sqrt{\alpha_i}(1-\bar\alpha_{i-1})/(1-\bar\alpha_i)`,
which is exact only for a point-mass prior; docs/reference/THEORY.md §4 shows that the true Jacobian is
:math:`J_i = \lambda_i I + c_i \mathrm{Cov}[x_0 \mid x_i]` and can expand. This module measures the factor of
any denoiser (Gaussian priors, the learned demo prior, a loaded checkpoint) along a CCDF trajectory: the
largest singular value of the Jacobian of the map ``x_t -> dc(step(x_t, D(x_t)))`` at each visited state,
by power iteration on :math:`J^T J` with forward- and reverse-mode autograd (``torch.autograd.forward_ad``
(Jacobian-vector) and ``torch.autograd.grad`` (vector-Jacobian); ``torch.func.jvp`` was 100x slower here).

The step's noise and the data step's noise are drawn from generators re-seeded on every evaluation, so they
are constants of the map and do not enter J. Two factors are measured:

* ``full``: :math:`\|J\|_2` over every input direction;
* ``unknown``: :math:`\|(I - A^+A) J (I - A^+A)\|_2`, the factor on the unknown part only (docs/reference/THEORY.md §4's
  ``||A M_i A||``): after a data step two trajectories differ only there up to the data step's noise.

For the dense Gaussian oracle J is known exactly (:func:`exact_gaussian_factor`); the tests compare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ccdf.operators.base import Operator
from ccdf.sampling.conditioning import Problem, Projection
from ccdf.sampling.steps import STEPS
from ccdf.schedules.base import forward_diffuse
from ccdf.theory.paper import paper_constants
from ccdf.utils.rng import per_sample_generators

Map = Callable[[Tensor], Tensor]


def _norms(v: Tensor) -> Tensor:
    return v.flatten(1).norm(dim=1)


def _scale(v: Tensor, c: Tensor) -> Tensor:
    return v * c.reshape(-1, *[1] * (v.ndim - 1))


def power_iteration(
    f: Map,
    x: Tensor,
    *,
    iters: int = 100,
    tol: float = 1e-7,
    restrict: Map | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Per item b, the largest singular value of ``J_b = d f(x)_b / d x_b`` (``R J R`` with ``restrict`` R).

    ``f`` must act on each item separately (its Jacobian is block-diagonal over the batch). Each iteration
    is one Jacobian-vector product (forward-mode autograd, ``torch.autograd.forward_ad``) and one
    vector-Jacobian product (reverse mode, on a graph built once): ``u = J v``, ``v <- J^T u / ||J^T u||``.
    The estimate ``||J v||`` increases to ``sigma_max`` (for a start not orthogonal to the top right singular
    vector); its error falls like ``(sigma_2 / sigma_1)^(2k)``, so near-equal top singular values converge slowly.

    Args:
        f: the map ``[B, ...] -> [B, ...]`` (differentiable in x, forward and reverse mode).
        x: ``[B, ...]`` the point.
        iters: at most this many iterations.
        tol: stop when every item's estimate changed by less than ``tol`` (relative) in one iteration.
        restrict: an orthogonal projector R (e.g. onto the unknown part), applied before and after J.
        generator: for the random start.

    Returns:
        float64 ``[B]``.
    """
    import torch.autograd.forward_ad as fwad

    if iters < 1:
        raise ValueError(f"power iteration needs iters >= 1, got {iters}")
    rr = restrict if restrict is not None else (lambda v: v)
    x_req = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = f(x_req)
    v = rr(torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device))
    v = _scale(v, 1 / _norms(v))
    sigma = torch.zeros(x.shape[0], dtype=torch.float64)
    for _ in range(int(iters)):
        with fwad.dual_level(), torch.no_grad():
            u = rr(fwad.unpack_dual(f(fwad.make_dual(x.detach(), v))).tangent)
        new = _norms(u).double()
        (w,) = torch.autograd.grad(y, x_req, u, retain_graph=True)
        w = rr(w)
        v = _scale(w, 1 / _norms(w).clamp(min=1e-300))
        done = bool(((new - sigma).abs() <= tol * new).all())
        sigma = new
        if done:
            break
    return sigma


def step_map(
    denoiser: Callable,
    schedule,
    problem: Problem,
    t: Tensor,
    s: Tensor,
    *,
    step: str = "ddpm",
    variance: str = "beta",
    eta: float = 0.0,
    seed: int = 0,
) -> Map:
    r"""One CCDF step as a map of the state: ``x_t -> dc(step(x_t, D(x_t)), s)`` with fixed noise.

    The step is :data:`ccdf.sampling.steps.STEPS` ``[step]`` and the data step CCDF's
    :class:`~ccdf.sampling.conditioning.Projection`; both draw their noise from generators re-seeded with
    ``seed`` on every call, so the map is deterministic and its Jacobian is that of the noise-free step.
    """
    from ccdf.denoisers.base import as_output

    dc = Projection().bind(schedule)
    step_fn = STEPS[step]

    def f(x: Tensor) -> Tensor:
        g = torch.Generator(device=x.device).manual_seed(seed)
        out = as_output(denoiser(x, t.expand(x.shape[0])))
        x_s = step_fn(schedule, x, out, t, s, variance=variance, eta=eta, generator=g)
        return dc.step(x_s, x, out.x0_hat, t, s, problem, g)

    return f


@dataclass
class Contraction:
    """Per grid step of one trajectory (index j = N' .. 1: the step from grid level j to j - 1).

    Attributes:
        level: ``[K]`` the level j of each step (descending).
        t: ``[K]`` its time.
        full: ``[K, B]`` measured ``||J||_2`` per item.
        unknown: ``[K, B]`` measured ``||(I - A^+A) J (I - A^+A)||_2`` per item.
        paper_lambda: ``[K]`` the paper's lambda_j (VP chains; nan otherwise).
    """

    level: np.ndarray
    t: np.ndarray
    full: np.ndarray
    unknown: np.ndarray
    paper_lambda: np.ndarray
    settings: dict = field(default_factory=dict)


def measure_contraction(
    denoiser: Callable,
    schedule,
    op: Operator,
    y: Tensor,
    x_init: Tensor,
    *,
    t0: float,
    num_steps: int,
    step: str = "ddpm",
    variance: str = "beta",
    eta: float = 0.0,
    sigma_y: float = 0.0,
    iters: int = 100,
    tol: float = 1e-7,
    seed: int = 0,
    every: int = 1,
) -> Contraction:
    r"""Measured factors along a CCDF trajectory (:func:`ccdf.sampling.sample_ccdf`'s classic steps with
    projection DC): x_{N'} = forward jump of x_init, then for each level the factors at the current state
    (every ``every``-th level; the last is always measured) and the actual step (fresh noise per item).

    Args:
        denoiser, schedule, op, y, x_init: as :func:`ccdf.sampling.sample_ccdf` (``[B, ...]`` batches).
        t0, num_steps: the start time and N; the trajectory takes N' = round(t0 N) steps.
        step, variance, eta: the reverse step.
        sigma_y: the measurement noise (the data step diffuses the noisy y).
        iters, tol: power iterations per measurement (:func:`power_iteration`).
        seed: per-item generators ``(seed, item)`` for the trajectory, and the power-iteration starts.

    Returns:
        :class:`Contraction`.
    """
    grid = schedule.timesteps(num_steps, t_start=1.0)
    k = round(float(t0) * num_steps)
    if not 1 <= k <= num_steps:
        raise ValueError(f"t0 = {t0} gives N' = {k} steps; need 1 <= N' <= {num_steps}")
    problem = Problem(op, y, float(sigma_y))
    gens = per_sample_generators(seed, range(x_init.shape[0]))
    start = torch.Generator().manual_seed(seed)
    unknown_part = lambda v: v - op.pinv(op(v))  # noqa: E731 - I - A^+ A
    try:
        lam = paper_constants(schedule, num_steps).lam
    except ValueError:  # VE: the paper's constant is defined for VP chains
        lam = np.full(num_steps + 1, np.nan)
    x = forward_diffuse(schedule, x_init, grid[num_steps - k], gens)
    levels, times, full, unknown = [], [], [], []
    for i in range(num_steps - k, num_steps):
        t, s = grid[i], grid[i + 1]
        j = num_steps - i
        f = step_map(denoiser, schedule, problem, t, s, step=step, variance=variance, eta=eta, seed=seed + j)
        if (j - 1) % every == 0:
            levels.append(j)
            times.append(float(t))
            kw = dict(iters=iters, tol=tol, generator=start)
            full.append(power_iteration(f, x, **kw).numpy())
            unknown.append(power_iteration(f, x, restrict=unknown_part, **kw).numpy())
        with torch.no_grad():
            from ccdf.denoisers.base import as_output

            out = as_output(denoiser(x, t.expand(x.shape[0])))
            x_s = STEPS[step](schedule, x, out, t, s, variance=variance, eta=eta, generator=gens)
            x = Projection().bind(schedule).step(x_s, x, out.x0_hat, t, s, problem, gens)
    levels_arr = np.asarray(levels)
    return Contraction(
        level=levels_arr,
        t=np.asarray(times),
        full=np.stack(full),
        unknown=np.stack(unknown),
        paper_lambda=lam[levels_arr],
        settings=dict(
            t0=float(t0),
            num_steps=int(num_steps),
            step=step,
            variance=variance,
            eta=float(eta),
            sigma_y=float(sigma_y),
            iters=int(iters),
            tol=float(tol),
            seed=int(seed),
            every=int(every),
        ),  # fmt: skip
    )


def exact_gaussian_factor(
    cov: np.ndarray, proj: np.ndarray, schedule, num_steps: int, *, step: str = "ddpm", eta: float = 0.0
) -> dict[str, np.ndarray]:
    r"""The exact factors of the dense Gaussian oracle: ``||(I - P) M_j||_2`` and ``||(I - P) M_j (I - P)||_2``.

    ``M_j`` is the step's linear part with the exact denoiser ``D_t = a_t Sigma (a_t^2 Sigma + s_t^2 I)^{-1}``:
    DDPM ``(a_s var_ts / s_t^2) D_t + ((a_t / a_s) s_s^2 / s_t^2) I``; DDIM
    ``a_s D_t + r (I - a_t D_t) / s_t`` with ``r = sqrt(s_s^2 - eta^2 var_post)``.

    Returns:
        ``{"full": [N+1], "unknown": [N+1]}`` (entry 0 nan), j = grid level.
    """
    from ccdf.theory.propagation import grid_coefficients

    _, alpha, sigma = grid_coefficients(schedule, num_steps)
    n = cov.shape[0]
    eye = np.eye(n)
    keep = eye - proj
    out = {"full": np.full(num_steps + 1, np.nan), "unknown": np.full(num_steps + 1, np.nan)}
    for j in range(1, num_steps + 1):
        a_t, s_t, a_s, s_s = alpha[j], sigma[j], alpha[j - 1], sigma[j - 1]
        den = a_t * cov @ np.linalg.inv(a_t**2 * cov + s_t**2 * eye)
        var_ts = max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0)
        if step == "ddim":
            r = np.sqrt(max(s_s**2 - eta**2 * var_ts * s_s**2 / s_t**2, 0.0))
            m = a_s * den + r * (eye - a_t * den) / s_t
        else:
            m = (a_s * var_ts / s_t**2) * den + ((a_t / a_s) * s_s**2 / s_t**2) * eye
        out["full"][j] = np.linalg.norm(keep @ m, 2)
        out["unknown"][j] = np.linalg.norm(keep @ m @ keep, 2)
    return out
