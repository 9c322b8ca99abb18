r"""The CCDF paper's contraction constants and bounds (Chung, Sim & Ye 2022, Thm. 1-2), docs/reference/THEORY.md §4-5.

Index i = 1..N of the discrete VP chain sits at the sampler's grid time ``t_i = i/N``
(``alpha_bar_i = alpha(t_i)^2``, ``alpha_i = alpha_bar_i / alpha_bar_{i-1}``, ``beta_i = 1 - alpha_i``), so
the constants below are those of the project's (respaced) chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ccdf.theory.problems import LinearGaussianProblem
from ccdf.theory.propagation import grid_coefficients


@dataclass
class PaperConstants:
    r"""Per-step constants, arrays indexed by i = 0..N (entry 0 unused, set to nan except ``alpha_bar``).

    Attributes:
        alpha_bar: ``[N+1]`` cumulative alpha-bar (``alpha_bar[0] = 1``).
        alpha: ``[N+1]`` alpha_i; ``beta``: ``[N+1]`` beta_i.
        lam: ``[N+1]`` the paper's ``lambda_i = sqrt(alpha_i) (1 - alpha_bar_{i-1}) / (1 - alpha_bar_i)``.
        c: ``[N+1]`` ``c_i = beta_i alpha_bar_i / (sqrt(alpha_i) (1 - alpha_bar_i)^2)`` (Jacobian
            ``J_i = lambda_i I + c_i Cov[x0 | x_i]``).
    """

    alpha_bar: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    lam: np.ndarray
    c: np.ndarray


def paper_constants(schedule, num_steps: int) -> PaperConstants:
    """:class:`PaperConstants` of a VP schedule at the sampler's grid ``timesteps(num_steps, 1)``."""
    if getattr(schedule, "kind", "vp") != "vp":
        raise ValueError("the paper's constants are defined for VP chains")
    _, a, _ = grid_coefficients(schedule, num_steps)
    ab = a**2
    alpha = np.full_like(ab, np.nan)
    alpha[1:] = ab[1:] / ab[:-1]
    beta = 1 - alpha
    lam = np.full_like(ab, np.nan)
    lam[1:] = np.sqrt(alpha[1:]) * (1 - ab[:-1]) / (1 - ab[1:])
    c = np.full_like(ab, np.nan)
    c[1:] = beta[1:] * ab[1:] / (np.sqrt(alpha[1:]) * (1 - ab[1:]) ** 2)
    return PaperConstants(alpha_bar=ab, alpha=alpha, beta=beta, lam=lam, c=c)


def contraction_factor(schedule, num_steps: int, s: float) -> np.ndarray:
    r"""True DDPM per-step factor along a prior direction of variance s, ``m_i(s) = sqrt(alpha_i) v_{i-1}/v_i``.

    ``v_i(s) = alpha_bar_i s + 1 - alpha_bar_i``; equals ``lambda_i + c_i Cov[x0|x_i]`` (THEORY §4).

    Returns:
        ``[N+1]`` (entry 0 nan).
    """
    pc = paper_constants(schedule, num_steps)
    v = pc.alpha_bar * s + 1 - pc.alpha_bar
    m = np.full_like(v, np.nan)
    m[1:] = np.sqrt(pc.alpha[1:]) * v[:-1] / v[1:]
    return m


def unknown_block_norm(problem: LinearGaussianProblem, schedule, num_steps: int) -> np.ndarray:
    r"""``||A M_i A||_2`` for the DDPM step ``M_i`` with the exact marginal score (THEORY §4), ``[N+1]``."""
    pc = paper_constants(schedule, num_steps)
    out = np.full(num_steps + 1, np.nan)
    lam = problem.evals
    w = problem.w
    for i in range(1, num_steps + 1):
        v_prev = pc.alpha_bar[i - 1] * lam + 1 - pc.alpha_bar[i - 1]
        v_cur = pc.alpha_bar[i] * lam + 1 - pc.alpha_bar[i]
        m = np.sqrt(pc.alpha[i]) * v_prev / v_cur
        if problem.commuting:
            out[i] = float(np.max(np.abs(m[problem.unknown])))
        else:
            out[i] = float(np.max(np.abs(np.linalg.eigvalsh((w.T * m) @ w))))
    return out


def noise_constant(schedule, num_steps: int, n: int) -> np.ndarray:
    r"""THEORY's reading of Theorem 1's constant, ``C(N') = n max_{i <= N'} sigma_i^2 = n beta_{N'}``, ``[N+1]``."""
    pc = paper_constants(schedule, num_steps)
    out = np.zeros(num_steps + 1)
    out[1:] = n * np.maximum.accumulate(pc.beta[1:])
    return out


def theorem1_bound(schedule, num_steps: int, *, n: int, tau: float, eps0: float = 0.0) -> np.ndarray:
    r"""Theorem 1's bound ``B(N') = 2 C tau/(1 - lambda^2) + lambda^{2N'} (alpha_bar eps0 + 2 (1 - alpha_bar) n)``.

    ``lambda = max_{i <= N'} lambda_i``, ``alpha_bar = alpha_bar_{N'}``, ``C = n beta_{N'}`` (:func:`noise_constant`).

    Args:
        schedule: VP schedule; num_steps: N.
        n: dimension; tau: ``Tr(A^T A)/n``; eps0: initial error.

    Returns:
        ``[N+1]`` (entry 0: ``eps0``).
    """
    pc = paper_constants(schedule, num_steps)
    lam = np.zeros(num_steps + 1)
    lam[1:] = np.maximum.accumulate(pc.lam[1:])
    cst = noise_constant(schedule, num_steps, n)
    k = np.arange(num_steps + 1)
    ab = pc.alpha_bar
    out = 2 * cst * tau / (1 - lam**2) + lam ** (2 * k) * (ab * eps0 + 2 * (1 - ab) * n)
    out[0] = eps0
    return out


def theorem2_conditions(schedule, num_steps: int, *, eps0_per_pixel: float, mu: float, tau: float) -> np.ndarray:
    r"""``[N+1]`` bool: N' satisfies both proof conditions of Theorem 2 (THEORY §5.2).

    ``N' beta_{N'} >= 2 log(4 n/(mu eps0))`` and ``N' beta_{N'} <= mu eps0/(4 n tau)``, written with
    ``x = eps0/n``.
    """
    pc = paper_constants(schedule, num_steps)
    g = np.zeros(num_steps + 1)
    g[1:] = np.arange(1, num_steps + 1) * pc.beta[1:]
    ok = (g >= 2 * np.log(4 / (mu * eps0_per_pixel))) & (g <= mu * eps0_per_pixel / (4 * tau))
    ok[0] = False
    return ok


def theorem2_threshold(schedule, num_steps: int, *, mu: float, tau: float) -> float:
    r"""Smallest ``eps0/n`` for which Theorem 2's proof conditions hold for some N' <= N.

    For each N', with ``g = N' beta_{N'}``, both hold iff ``x >= max(4 e^{-g/2}/mu, 4 tau g/mu)``.
    """
    pc = paper_constants(schedule, num_steps)
    g = np.arange(1, num_steps + 1) * pc.beta[1:]
    return float(np.min(np.maximum(4 * np.exp(-g / 2) / mu, 4 * tau * g / mu)))
