r"""The budget question (docs/theory.md §10): one warm start with N' = B, or the mean of K with N' = B/K?

The K runs share ``x_init`` and the measurement y; each draws its own forward jump and its own
reverse-step and conditioning noise (:func:`ccdf.sampling.sample_average`, ``sampler.average=K``).
In the notation of :mod:`ccdf.theory.propagation`, run k is
``x_k = T (a x_init + s z_k) + K_y y + xi_k`` with z_k, xi_k independent across runs, so the mean
keeps the deterministic part and divides the per-run noise by K:

.. code-block:: text

    E_K(N', eps0) = tr(G Sigma G^T) + sigma_y^2 ||K_y P||_F^2 + eps0 h(N')       (bias, meas, forgetting)
                    + (s^2 ||T||_F^2 + tr Q) / K                                  (jump + sampler noise)

(Were the forward jump shared by the K runs, only ``tr Q`` would be divided by K.) The budget B
fixes N' = B / K; the start time t0 stays free: N' steps starting at t0 are the last N' + 1
points of the grid ``timesteps(N, 1)`` with N = round(N' / t0) (:class:`StartGrid`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ccdf.theory.problems import LinearGaussianProblem
from ccdf.theory.propagation import Propagation, propagate

__all__ = ["BudgetChoice", "StartGrid", "average_error", "budget_curves", "best_allocation"]


def average_error(prop: Propagation, runs: int, eps0: float, shape: int = 0) -> np.ndarray:
    r"""Exact MSE ``E_K(N', eps0)`` of the mean of ``runs`` = K independent warm starts, ``[N+1]``.

    Args:
        prop: :func:`ccdf.theory.propagate` of the sampler (any step, variance, corrector, sigma_y).
        runs: K >= 1 (K = 1 gives ``prop.error(eps0, shape)``).
        eps0: initial error size ``E||e||^2``.
        shape: index of the error shape in ``prop.h``.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    return prop.bias + prop.meas + eps0 * prop.h[shape] + (prop.jump + prop.noise) / runs


class StartGrid:
    """A schedule whose ``timesteps(n, 1)`` is the last n + 1 points of ``schedule.timesteps(num_steps, 1)``.

    ``propagate(problem, StartGrid(schedule, N), N')`` then gives the error of N' steps started at
    ``t0 = N'/N`` on the N-step grid (index N' of its curves) without the N - N' levels above t0.
    """

    def __init__(self, schedule, num_steps: int) -> None:
        self.schedule, self.num_steps = schedule, int(num_steps)

    def timesteps(self, num_steps: int, t_start: float = 1.0):
        if t_start != 1.0 or num_steps > self.num_steps:
            raise ValueError("StartGrid serves timesteps(n, 1) with n <= its num_steps")
        return self.schedule.timesteps(self.num_steps, num_steps / self.num_steps)

    def alpha(self, t):
        return self.schedule.alpha(t)

    def sigma(self, t):
        return self.schedule.sigma(t)


@dataclass
class BudgetChoice:
    """The exact MSE of every allocation of one budget B, and the best one per eps0.

    Attributes:
        budget: B (network evaluations per image; one-step solvers, no corrector).
        runs: ``[R]`` the K values (divisors of B used), ``steps``: ``[R]`` N' = B / K.
        t0: ``[R, T]`` the start times (``N' / round(N' / t0)``, exact on the grid).
        eps0: ``[P]`` initial error sizes.
        error: ``[P, R, T]`` E_K at each (eps0, K, t0).
        best_runs, best_t0, best_error: ``[P]`` the argmin over (K, t0) per eps0.
        single_t0, single_error: ``[P]`` the best with K = 1 (one run of N' = B).
    """

    budget: int
    runs: np.ndarray
    steps: np.ndarray
    t0: np.ndarray
    eps0: np.ndarray
    error: np.ndarray
    best_runs: np.ndarray
    best_t0: np.ndarray
    best_error: np.ndarray
    single_t0: np.ndarray
    single_error: np.ndarray


def budget_curves(
    problem: LinearGaussianProblem,
    schedule,
    steps: int,
    t0s: Sequence[float],
    *,
    error_shapes: Sequence[np.ndarray],
    **sampler,
) -> list[Propagation]:
    """One propagation per start time for N' = ``steps``: ``[T]`` (read index ``steps`` of each)."""
    out = []
    for t0 in t0s:
        num_steps = max(round(steps / float(t0)), steps)
        out.append(propagate(problem, StartGrid(schedule, num_steps), steps, error_shapes=error_shapes, **sampler))
    return out


def best_allocation(
    problem: LinearGaussianProblem,
    schedule,
    budget: int,
    eps0s: Sequence[float],
    *,
    runs: Sequence[int] | None = None,
    t0s: Sequence[float] = tuple(np.round(np.geomspace(0.01, 1.0, 25), 4)),
    error_shape: np.ndarray,
    **sampler,
) -> BudgetChoice:
    r"""The MSE-optimal (K, t0) for a budget of B network evaluations, per initial error size.

    Args:
        problem: the linear-Gaussian problem.
        schedule: the project's schedule.
        budget: B; every K in ``runs`` that divides B is tried with N' = B / K.
        eps0s: initial error sizes ``E||e||^2``.
        runs: candidate K (default: every divisor of B, so N' = 1 is tried too).
        t0s: candidate start times in (0, 1] (rounded to the grid ``N' / round(N' / t0)``).
        error_shape: factor B of the initial-error covariance (:func:`ccdf.theory.error_shape`).
        sampler: ``step``, ``variance``, ``eta``, ... as :func:`ccdf.theory.propagate`.
    """
    runs = range(1, budget + 1) if runs is None else runs
    ks = sorted(int(k) for k in runs if budget % int(k) == 0)
    if not ks:
        raise ValueError(f"no K in {list(runs)} divides the budget {budget}")
    eps = np.asarray(eps0s, dtype=np.float64)
    grid_t0 = np.zeros((len(ks), len(t0s)))
    err = np.zeros((eps.size, len(ks), len(t0s)))
    for r, k in enumerate(ks):
        n_prime = budget // k
        for c, prop in enumerate(budget_curves(problem, schedule, n_prime, t0s, error_shapes=[error_shape], **sampler)):
            grid_t0[r, c] = n_prime / max(round(n_prime / float(t0s[c])), n_prime)
            for p, e0 in enumerate(eps):
                err[p, r, c] = average_error(prop, k, float(e0))[n_prime]
    flat = err.reshape(eps.size, -1).argmin(1)
    r_best, c_best = np.unravel_index(flat, (len(ks), len(t0s)))
    single = err[:, 0, :].argmin(1) if ks[0] == 1 else np.zeros(eps.size, dtype=int)
    return BudgetChoice(
        budget=int(budget),
        runs=np.asarray(ks),
        steps=np.asarray([budget // k for k in ks]),
        t0=grid_t0,
        eps0=eps,
        error=err,
        best_runs=np.asarray(ks)[r_best],
        best_t0=grid_t0[r_best, c_best],
        best_error=err[np.arange(eps.size), r_best, c_best],
        single_t0=grid_t0[0, single],
        single_error=err[np.arange(eps.size), 0, single],
    )
