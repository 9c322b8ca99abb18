r"""Exact Fréchet distances between Gaussians, and CCDF's output law from the exact propagation.

For Gaussian laws the FID formula is exact:
``d^2 = ||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr (S1^{1/2} S2 S1^{1/2})^{1/2}``.
CCDF's output ``x_rec = T x_{N'} + K y + xi`` (:mod:`ccdf.theory.propagation`) is Gaussian, so its
marginal law (over x_true ~ prior) and its law given y are exact, for every stored N'.
"""

from __future__ import annotations

import numpy as np

from ccdf.theory.problems import LinearGaussianProblem
from ccdf.theory.propagation import Propagation


def _psd_sqrt(mat: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(0.5 * (mat + mat.T))
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    r"""Squared Fréchet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2).

    Computed with symmetric eigendecompositions, ``tr sqrt(S1^{1/2} S2 S1^{1/2})``, which stays real and
    stable for singular covariances (no ``sqrtm`` of a non-symmetric product).

    Args:
        mu1, mu2: ``[n]`` means; cov1, cov2: ``[n, n]`` symmetric PSD covariances.

    Returns:
        ``d^2 >= 0`` (the FID formula without the feature network).
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    cov1, cov2 = np.asarray(cov1, dtype=np.float64), np.asarray(cov2, dtype=np.float64)
    s1 = _psd_sqrt(cov1)
    mid = s1 @ cov2 @ s1
    cross = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (mid + mid.T)), 0.0, None))))
    d2 = float(np.sum((mu1 - mu2) ** 2)) + float(np.trace(cov1) + np.trace(cov2)) - 2 * cross
    return max(d2, 0.0)


def output_maps(problem: LinearGaussianProblem, prop: Propagation, num_reverse: int) -> dict[str, np.ndarray]:
    r"""Pixel-basis T, K, Q of ``x_0 = T x_{N'} + K y + xi`` at a stored N' (``propagate(..., store=[N'])``).

    Returns:
        dict with ``T``, ``K``, ``Q`` (``[n, n]`` each), ``a`` = alpha(t0), ``s`` = sigma(t0).
    """
    n = problem.n
    j = int(num_reverse)
    if j == 0:
        return dict(T=np.eye(n), K=np.zeros((n, n)), Q=np.zeros((n, n)), a=1.0, s=0.0)
    if j not in prop.stored:
        raise KeyError(f"N'={j} was not stored; call propagate(..., store=[{j}])")
    st = prop.stored[j]
    vu, u = problem.basis_u, problem.evecs
    return dict(
        T=vu @ st["R"] @ u.T,
        K=problem.proj + vu @ st["Kr"] @ u.T,
        Q=vu @ st["Q"] @ vu.T,
        a=float(prop.alpha[j]),
        s=float(prop.sigma[j]),
    )


def output_covariance(
    problem: LinearGaussianProblem, prop: Propagation, num_reverse: int, *, eps0: float = 0.0, error_cov=None
) -> np.ndarray:
    r"""Covariance of CCDF's output law, marginal over ``x_true ~ N(0, Sigma)``, e, y-noise and sampler noise.

    ``x_rec = (a T + K P) x_true + a T e + s T z + sigma_y K P n + xi``, so
    ``Cov = F Sigma F^T + eps0 a^2 T C_e T^T + s^2 T T^T + sigma_y^2 K P K^T + Q`` with ``F = a T + K P``.
    The output mean equals the prior mean (every map preserves it).

    Args:
        problem: the problem; prop: a propagation with ``num_reverse`` stored.
        num_reverse: N'.
        eps0: initial-error size; error_cov: ``[n, n]`` its shape ``B B^T`` (trace 1), pixel basis.

    Returns:
        ``[n, n]``.
    """
    m = output_maps(problem, prop, num_reverse)
    t, k, p = m["T"], m["K"], problem.proj
    f = m["a"] * t + k @ p
    cov = f @ problem.cov @ f.T + m["s"] ** 2 * t @ t.T + problem.sigma_y**2 * k @ p @ k.T + m["Q"]
    if eps0 and error_cov is not None:
        cov = cov + eps0 * m["a"] ** 2 * t @ np.asarray(error_cov) @ t.T
    return 0.5 * (cov + cov.T)


def conditional_output_law(
    problem: LinearGaussianProblem, prop: Propagation, num_reverse: int, *, eps0: float = 0.0, error_cov=None
) -> tuple[np.ndarray, np.ndarray]:
    r"""Law of CCDF's output given y: mean map and covariance.

    Given y, ``x_true ~ N(L y, Sigma_post)``, so ``x_rec | y ~ N(M y, C)`` with ``M = a T L + K`` and
    ``C = a^2 T (Sigma_post + eps0 C_e) T^T + s^2 T T^T + Q``.

    Returns:
        ``(M [n, n], C [n, n])``.
    """
    m = output_maps(problem, prop, num_reverse)
    t = m["T"]
    inner = problem.post_cov + (eps0 * np.asarray(error_cov) if (eps0 and error_cov is not None) else 0.0)
    cov = m["a"] ** 2 * t @ inner @ t.T + m["s"] ** 2 * t @ t.T + m["Q"]
    return m["a"] * t @ problem.post_gain + m["K"], 0.5 * (cov + cov.T)


def frechet_to_data(
    problem: LinearGaussianProblem, prop: Propagation, num_reverse: int, *, eps0: float = 0.0, error_cov=None
) -> float:
    """Fréchet distance between CCDF's (marginal) output law and the data law N(0, Sigma) at N'."""
    cov = output_covariance(problem, prop, num_reverse, eps0=eps0, error_cov=error_cov)
    zero = np.zeros(problem.n)
    return frechet_distance(zero, cov, zero, problem.cov)


def frechet_to_posterior(
    problem: LinearGaussianProblem, prop: Propagation, num_reverse: int, *, eps0: float = 0.0, error_cov=None
) -> float:
    r"""Expected (over y) Fréchet distance between the law of x_rec given y and the posterior at N'.

    ``E_y d^2 = tr((M - L) C_y (M - L)^T) + [tr C + tr Sigma_post - 2 tr (C^{1/2} Sigma_post C^{1/2})^{1/2}]`` with
    ``C_y = Cov y = P Sigma P + sigma_y^2 P`` (the covariance part does not depend on y).
    """
    mean_map, cov = conditional_output_law(problem, prop, num_reverse, eps0=eps0, error_cov=error_cov)
    diff = mean_map - problem.post_gain
    p = problem.proj
    cov_y = p @ problem.cov @ p + problem.sigma_y**2 * p
    zero = np.zeros(problem.n)
    return float(np.trace(diff @ cov_y @ diff.T)) + frechet_distance(zero, cov, zero, problem.post_cov)
