r"""Closed forms of docs/reference/THEORY.md §3 (exact posterior score) and the derived thresholds and rules.

Per posterior eigen-direction k: variance ``s_k`` (eigenvalue of Sigma_post), initial squared error
``e_k^2``; the forward jump to t0 has VE-equivalent noise level ``sigma^2 = sigma(t0)^2 / alpha(t0)^2``
(``(1 - alpha_bar)/alpha_bar`` for VP, ``sigma(t0)^2`` for VE) and Wiener gain ``u_k = s_k/(s_k + sigma^2)``.

* DDPM: ``E = sum u^2 e^2 + 2 s sigma^2/(s + sigma^2)``, ``D = sum u^2 e^2 + 2 s (1 - u^2)``.
* DDIM (eta = 0, continuum): ``E = sum u e^2 + 2 s (1 - sqrt u)``, ``D = sum u e^2 + 2 s (1 - u)``.

All functions take numpy arrays (float64) and broadcast ``sigma2`` against the direction axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLERS = ("ddpm", "ddim")


def _check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")


def sigma2_of_t0(schedule, t0) -> np.ndarray:
    r"""VE-equivalent noise level of the forward jump, ``sigma(t0)^2 / alpha(t0)^2``.

    Args:
        schedule: a :class:`ccdf.schedules.Schedule` (VP: ``(1 - alpha_bar)/alpha_bar``; VE: ``sigma(t0)^2``).
        t0: scalar or array of times in [0, 1].

    Returns:
        ``sigma^2`` with the shape of ``t0``.
    """
    import torch

    t = torch.as_tensor(np.asarray(t0, dtype=np.float64))
    return (schedule.sigma(t) ** 2 / schedule.alpha(t) ** 2).numpy()


def grid_sigma2(schedule, num_steps: int) -> np.ndarray:
    """``sigma^2`` at the sampler's grid points ``j / N`` (j = 0..N ascending), ``[N+1]``."""
    t = schedule.timesteps(num_steps, 1.0).flip(0)
    return (schedule.sigma(t) ** 2 / schedule.alpha(t) ** 2).double().numpy()


def t0_of_sigma2(schedule, num_steps: int, sigma2: float) -> float:
    r"""The smallest grid time ``j / N`` (j >= 1) whose noise level ``sigma^2(t)`` reaches ``sigma2``.

    Args:
        schedule: the schedule.
        num_steps: N.
        sigma2: target noise level.

    Returns:
        t0 in ``[1/N, 1]`` (1 when even ``sigma^2(1)`` is below the target).
    """
    s2 = grid_sigma2(schedule, num_steps)
    t = schedule.timesteps(num_steps, 1.0).flip(0).double().numpy()
    ok = np.flatnonzero(s2[1:] >= sigma2)
    return float(t[ok[0] + 1]) if ok.size else float(t[-1])


def wiener_gain(post_var: np.ndarray, sigma2) -> np.ndarray:
    """``u = s / (s + sigma^2)``, shape ``broadcast(sigma2[..., None], post_var)``."""
    s = np.asarray(post_var, dtype=np.float64)
    return s / (s + np.asarray(sigma2, dtype=np.float64)[..., None])


def ideal_terms(post_var, err2, sigma2, sampler: str = "ddpm", runs: int = 1) -> np.ndarray:
    r"""Per direction, E(sigma^2) with the exact posterior score (docs/reference/THEORY.md §3 and Proposition 1),
    for one run or for the mean of ``runs`` = K independent runs from the same x_init (``sampler.average=K``).

    With u = s / (s + sigma^2), one direction with posterior variance s, prior mean mu, initial error e and
    forward noise sigma n_k of run k: DDPM (an exact posterior sample of the diffused problem) returns
    ``u (x_init + sigma n_k) + (1 - u) mu + sqrt(s (1 - u)) z_k``, and DDIM (the probability-flow map)
    ``sqrt(u) (x_init + sigma n_k - mu) + mu``. Averaging K runs divides the variance of the run's own noise
    (n_k, z_k) by K and keeps the rest:

    * DDPM: ``u^2 e^2 + s (1 - u) [(1 - u) + (1 + u) / K]`` (K = 1: ``u^2 e^2 + 2 s (1 - u)``);
    * DDIM: ``u e^2 + s (1 - sqrt u)^2 + s (1 - u) / K`` (K = 1: ``u e^2 + 2 s (1 - sqrt u)``).

    Args:
        post_var: posterior variances s_k; err2: squared initial errors e_k^2 (broadcast against each other).
        sigma2: scalar or ``[M]`` noise levels (0 = no diffusion); the result has the shape
            ``broadcast(sigma2[..., None], post_var)``.
        sampler: ``"ddpm"`` or ``"ddim"`` (eta = 0, continuum limit).
        runs: K >= 1.
    """
    _check_sampler(sampler)
    if isinstance(runs, bool) or int(runs) != runs or int(runs) < 1:
        raise ValueError(f"runs (sampler.average) must be an integer >= 1, got {runs!r}")
    s = np.asarray(post_var, dtype=np.float64)
    e2 = np.asarray(err2, dtype=np.float64)
    u = wiener_gain(s, sigma2)
    k = int(runs)
    if sampler == "ddpm":
        return u**2 * e2 + s * (1 - u) * ((1 - u) + (1 + u) / k)
    return u * e2 + s * (1 - np.sqrt(u)) ** 2 + s * (1 - u) / k


def ideal_error(post_var: np.ndarray, err2: np.ndarray, sigma2, sampler: str = "ddpm", runs: int = 1) -> np.ndarray:
    r"""E(sigma^2) with the exact posterior score (docs/reference/THEORY.md §3 and Proposition 1), summed over
    the directions (:func:`ideal_terms`; ``runs`` = K: the mean of K independent runs).

    Args:
        post_var: ``[K]`` posterior variances s_k.
        err2: ``[K]`` squared initial errors e_k^2 (or their expectations) along the same directions.
        sigma2: scalar or ``[M]`` noise levels (0 = no diffusion).
        sampler: ``"ddpm"`` or ``"ddim"`` (eta = 0, continuum limit).
        runs: the number of averaged runs.

    Returns:
        ``E`` with the shape of ``sigma2``.
    """
    return np.sum(ideal_terms(post_var, err2, sigma2, sampler, runs), axis=-1)


def ideal_distance(post_var: np.ndarray, err2: np.ndarray, sigma2, sampler: str = "ddpm") -> np.ndarray:
    """D(sigma^2) (the Theorem-1 two-run quantity) with the exact posterior score, shape of ``sigma2``."""
    _check_sampler(sampler)
    s = np.asarray(post_var, dtype=np.float64)
    e2 = np.asarray(err2, dtype=np.float64)
    u = wiener_gain(s, sigma2)
    if sampler == "ddpm":
        return np.sum(u**2 * e2 + 2 * s * (1 - u**2), axis=-1)
    return np.sum(u * e2 + 2 * s * (1 - u), axis=-1)


def direction_optimum(post_var, err2, sampler: str = "ddpm") -> tuple[np.ndarray, np.ndarray]:
    r"""Per-direction optimum: ``sigma*^2`` and the optimal error ``s (2 - s/e^2)`` (or e^2 if e^2 <= s).

    DDPM: ``sigma*^2 = e^2 - s``; DDIM: ``sigma*^2 = (e^4 - s^2)/s`` (0 when ``e^2 <= s``: do not diffuse).

    Returns:
        ``(sigma2_star, error_star)``, each shaped like the inputs.
    """
    _check_sampler(sampler)
    s = np.asarray(post_var, dtype=np.float64)
    e2 = np.asarray(err2, dtype=np.float64)
    helps = e2 > s
    if sampler == "ddpm":
        sig = np.where(helps, e2 - s, 0.0)
    else:
        sig = np.where(helps, (e2**2 - s**2) / s, 0.0)
    err = np.where(helps, s * (2 - s / np.where(helps, e2, 1.0)), e2)
    return sig, err


def optimal_sigma2(post_var, err2, *, grid_size: int = 400) -> float:
    r"""Optimal common DDPM noise level (docs/reference/THEORY.md §3 item 2), 0 when diffusion does not help.

    The stationary points satisfy the weighted fixed point ``sigma*^2 = sum_k w_k (e_k^2 - s_k) / sum_k w_k`` with
    ``w_k = s_k^2/(s_k + sigma*^2)^3``, i.e. ``g(sigma^2) = sum_k w_k (s_k + sigma^2 - e_k^2) = 0``
    (g = dE/dsigma^2 / 2).
    Plain iteration of the fixed point can oscillate, so the roots are bracketed on a log grid and refined
    by bisection; among the local minima (g crossing from - to +) the one with the smallest E is returned.

    Args:
        post_var: ``[K]`` s_k > 0; err2: ``[K]`` e_k^2.
        grid_size: points of the bracketing grid.

    Returns:
        ``sigma*^2 >= 0``.
    """
    s = np.asarray(post_var, dtype=np.float64).reshape(-1)
    e2 = np.broadcast_to(np.asarray(err2, dtype=np.float64).reshape(-1), s.shape)

    def g(x: float) -> float:
        return float(np.sum(s**2 * (s + x - e2) / (s + x) ** 3))

    hi = float(np.max(e2) + np.max(s)) * 2 + 1e-300
    xs = np.concatenate([[0.0], np.geomspace(hi * 1e-12, hi, grid_size)])
    gs = np.array([g(x) for x in xs])
    cands = [0.0]
    for k in np.flatnonzero((gs[:-1] < 0) & (gs[1:] >= 0)):
        lo, up = xs[k], xs[k + 1]
        for _ in range(100):
            mid = 0.5 * (lo + up)
            lo, up = (mid, up) if g(mid) < 0 else (lo, mid)
        cands.append(0.5 * (lo + up))
    errs = [float(ideal_error(s, e2, x)) for x in cands]
    return float(cands[int(np.argmin(errs))])


def diffusion_helps(post_var, err2) -> bool:
    r"""Ideal local criterion: a little diffusion lowers E iff ``e^T Sigma_post^+ e > n_u`` (``sum e_k^2/s_k > K``)."""
    s = np.asarray(post_var, dtype=np.float64)
    return bool(np.sum(np.asarray(err2, dtype=np.float64) / s) > s.size)


def helps_threshold_ideal(post_var, weights=None) -> float:
    r"""Smallest ``eps0`` for which diffusion helps locally (ideal), with ``e_k^2 = eps0 w_k``.

    For isotropic weights (``w_k = 1/K``) it equals ``K`` times the harmonic mean of the s_k.
    """
    s = np.asarray(post_var, dtype=np.float64)
    w = np.full_like(s, 1.0 / s.size) if weights is None else np.asarray(weights, dtype=np.float64)
    return float(s.size / np.sum(w / s))


def no_diffusion_threshold(V: np.ndarray, h: np.ndarray) -> float:
    r"""Largest eps0 for which N' = 0 is optimal, ``min_{N' >= 1} V/(1 - h)`` (exact, any sampler; THEORY §8).

    Args:
        V: ``[N+1]`` spread term; h: ``[N+1]`` forgetting factor (h(0) = 1).
    """
    v, hh = np.asarray(V)[1:], np.asarray(h)[1:]
    ok = hh < 1
    return float(np.min(v[ok] / (1 - hh[ok]))) if ok.any() else float("inf")


def feasibility_threshold(D0: np.ndarray, h: np.ndarray, mu: float) -> float:
    r"""Theorem-2 form: smallest eps0 with ``D(N') <= mu eps0`` for some N' >= 1, ``min D0/(mu - h)`` over h < mu."""
    d0, hh = np.asarray(D0)[1:], np.asarray(h)[1:]
    ok = hh < mu
    return float(np.min(d0[ok] / (mu - hh[ok]))) if ok.any() else float("inf")


def min_steps_for_ratio(D0: np.ndarray, h: np.ndarray, eps0: float, mu: float) -> int | None:
    """The smallest N' >= 1 with ``D0 + eps0 h <= mu eps0``, or None when none exists."""
    ok = np.flatnonzero(np.asarray(D0)[1:] + eps0 * np.asarray(h)[1:] <= mu * eps0)
    return int(ok[0]) + 1 if ok.size else None


def beats_full_run(V: np.ndarray, h: np.ndarray, eps0: float) -> np.ndarray:
    """``[N+1]`` bool: E(N') < E(N) (the full run from N' = N)."""
    e = np.asarray(V) + eps0 * np.asarray(h)
    return e < e[-1]


def full_run_sufficient_sigma2(post_var, err2) -> float:
    r"""Ideal sufficient condition for beating the full run: ``sigma^2(t0) > max_k (e_k^2/2 - s_k)``."""
    return float(np.max(np.asarray(err2, dtype=np.float64) / 2 - np.asarray(post_var, dtype=np.float64)))


def correlated_init_error(post_var, err2_indep, kappa: float, sigma2, sampler: str = "ddpm") -> np.ndarray:
    r"""E for ``x_init = mu + kappa (x_true - mu) + e'`` (e' independent), docs/reference/THEORY.md §3 item 7.

    ``E = sum_k s_k [2 - 2 kappa g_k + (kappa^2 - 1) g_k^2] + sum_k g_k^2 e'_k^2`` with g = u (DDPM) or
    sqrt(u) (DDIM); here mu is the posterior mean and s_k the posterior variances.

    Returns:
        E with the shape of ``sigma2``.
    """
    _check_sampler(sampler)
    s = np.asarray(post_var, dtype=np.float64)
    e2 = np.asarray(err2_indep, dtype=np.float64)
    u = wiener_gain(s, sigma2)
    g = u if sampler == "ddpm" else np.sqrt(u)
    return np.sum(s * (2 - 2 * kappa * g + (kappa**2 - 1) * g**2) + g**2 * e2, axis=-1)


def ideal_curve(
    schedule, num_steps: int, post_var, err2, sampler: str = "ddpm", chunk: int = 8192, runs: int = 1
) -> np.ndarray:
    """Ideal E at every grid N' = 0..N (``[N+1]``), summing over directions in chunks (any size); ``runs`` = K:
    of the mean of K runs."""
    s2 = grid_sigma2(schedule, num_steps)
    s = np.asarray(post_var, dtype=np.float64).reshape(-1)
    e2 = np.broadcast_to(np.asarray(err2, dtype=np.float64).reshape(-1), s.shape)
    out = np.zeros_like(s2)
    for k in range(0, s.size, chunk):
        out += ideal_error(s[k : k + chunk], e2[k : k + chunk], s2, sampler, runs)
    return out


@dataclass
class T0Choice:
    """Result of :func:`optimal_t0`.

    Attributes:
        t0: the start time, in ``[1/N, 1]``.
        num_reverse_steps: the optimal N' (0 = do not diffuse; t0 is then the smallest, 1/N).
        helps: whether diffusing (N' >= 1) lowers the predicted error below no diffusion.
        sigma2: the forward-jump noise level at t0.
        error: predicted E at the optimum; ``error_no_diffusion``: at N' = 0 (``sum e_k^2``).
    """

    t0: float
    num_reverse_steps: int
    helps: bool
    sigma2: float
    error: float
    error_no_diffusion: float


def optimal_t0(schedule, num_steps: int, post_var, err2, sampler: str = "ddpm", runs: int = 1) -> T0Choice:
    r"""MSE-optimal CCDF start time from per-direction posterior variances and initial errors (ideal model).

    Minimises the closed-form E (exact posterior score; DDPM ``u``, DDIM ``sqrt u``) over the sampler's
    grid N' = 0..N. The inputs may be per-pixel estimates (an initializer's squared error on a
    calibration split, and the posterior variance) treated as independent directions.

    Args:
        schedule: the sampler's schedule.
        num_steps: N.
        post_var: ``[K]`` (any shape) posterior variances s_k > 0.
        err2: squared initial errors e_k^2, same shape (or broadcastable).
        sampler: ``"ddpm"`` or ``"ddim"``.
        runs: K, for the mean of K independent runs (``sampler.average=K``; :func:`ideal_terms`).

    Returns:
        :class:`T0Choice`; ``t0`` is clamped to ``[1/N, 1]``, and ``helps`` is False when N' = 0 wins.
    """
    _check_sampler(sampler)
    s = np.asarray(post_var, dtype=np.float64).reshape(-1)
    if s.size == 0 or np.any(s <= 0):
        raise ValueError("post_var must be non-empty and positive")
    curve = ideal_curve(schedule, num_steps, s, err2, sampler, runs=runs)
    j = int(np.argmin(curve))
    t_grid = schedule.timesteps(num_steps, 1.0).flip(0).double().numpy()
    s2 = grid_sigma2(schedule, num_steps)
    jj = max(j, 1)
    return T0Choice(
        t0=float(min(max(t_grid[jj], 1.0 / num_steps), 1.0)),
        num_reverse_steps=j,
        helps=j > 0,
        sigma2=float(s2[jj]),
        error=float(curve[j]),
        error_no_diffusion=float(curve[0]),
    )
