r"""Linear-Gaussian test problems of docs/reference/THEORY.md §1: a Gaussian prior and an orthogonal projection.

Notation (docs/reference/THEORY.md): prior ``x ~ N(0, Sigma)`` on R^n, measurement ``y = P x + sigma_y P n`` with P
the orthogonal projection onto the measured subspace, ``A = I - P`` the projection onto the unknown
subspace, ``n_u = rank A``. Everything is float64 numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LinearGaussianProblem:
    r"""Prior N(0, Sigma), measured-subspace projector P, and the bases the propagation works in.

    Attributes:
        cov: ``[n, n]`` prior covariance Sigma (pixel basis).
        proj: ``[n, n]`` orthogonal projector P onto the measured subspace.
        sigma_y: measurement noise std (noise ``sigma_y P n``, n white).
        evals: ``[n]`` eigenvalues of Sigma (ascending), in the basis ``evecs``.
        evecs: ``[n, n]`` orthonormal eigenvectors U of Sigma; when A commutes with Sigma they also
            diagonalise A (joint basis).
        basis_u: ``[n, n_u]`` orthonormal basis V_u of range(A) (the unknown subspace).
        basis_m: ``[n, n - n_u]`` orthonormal basis V_m of range(P).
        w: ``[n, n_u]`` ``U^T V_u`` (the unknown subspace in eigen-coordinates).
        commuting: whether A Sigma = Sigma A (then ``unknown`` indexes the eigen-directions in range(A)).
        unknown: ``[n_u]`` eigen-direction indices spanning range(A) (commuting case), else None.
        post_cov: ``[n, n]`` posterior covariance of x given y.
        post_gain: ``[n, n]`` L with posterior mean ``L y`` (prior mean 0).
        post_var: ``[k]`` the nonzero eigenvalues of ``post_cov`` (ascending; k = n_u when sigma_y = 0).
        post_evecs: ``[n, k]`` the matching eigenvectors.
        name: a label.
    """

    cov: np.ndarray
    proj: np.ndarray
    sigma_y: float
    evals: np.ndarray
    evecs: np.ndarray
    basis_u: np.ndarray
    basis_m: np.ndarray
    w: np.ndarray
    commuting: bool
    unknown: np.ndarray | None
    post_cov: np.ndarray
    post_gain: np.ndarray
    post_var: np.ndarray
    post_evecs: np.ndarray
    name: str = ""

    @property
    def n(self) -> int:
        return int(self.cov.shape[0])

    @property
    def n_u(self) -> int:
        return int(self.basis_u.shape[1])

    @property
    def tau(self) -> float:
        """The paper's ``tau = Tr(A^T A) / n = n_u / n``."""
        return self.n_u / self.n


def _range_basis(proj: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Orthonormal basis ``[n, r]`` of the range of an orthogonal projector."""
    vals, vecs = np.linalg.eigh(0.5 * (proj + proj.T))
    if not np.all((np.abs(vals) < tol) | (np.abs(vals - 1) < tol)):
        raise ValueError(f"not an orthogonal projector: eigenvalues in [{vals.min():.3g}, {vals.max():.3g}]")
    return vecs[:, vals > 0.5]


def make_problem(
    cov: np.ndarray,
    proj: np.ndarray | None = None,
    *,
    mask: np.ndarray | None = None,
    sigma_y: float = 0.0,
    name: str = "",
    commute_tol: float = 1e-10,
) -> LinearGaussianProblem:
    r"""Build a :class:`LinearGaussianProblem` from Sigma and a projection (or a pixel mask).

    Args:
        cov: ``[n, n]`` symmetric PSD prior covariance.
        proj: ``[n, n]`` orthogonal projector onto the measured subspace; or give ``mask``.
        mask: ``[n]`` 0/1 (1 = measured pixel): ``P = diag(mask)``, as :class:`ccdf.operators.Inpainting`.
        sigma_y: measurement noise std, ``y = P x + sigma_y P n``.
        name: a label.
        commute_tol: relative tolerance of the test ``||A Sigma - Sigma A|| <= tol ||Sigma||``.

    Returns:
        The problem, with the joint eigenbasis when A commutes with Sigma.
    """
    cov = np.asarray(cov, dtype=np.float64)
    n = cov.shape[0]
    if (proj is None) == (mask is None):
        raise ValueError("give exactly one of proj and mask")
    if mask is not None:
        mask = np.asarray(mask, dtype=np.float64).reshape(-1)
        if mask.shape != (n,) or not np.all((mask == 0) | (mask == 1)):
            raise ValueError("mask must be [n] with 0/1 entries")
        proj = np.diag(mask)
    proj = np.asarray(proj, dtype=np.float64)
    basis_m = _range_basis(proj)
    basis_u = _range_basis(np.eye(n) - proj)
    if basis_u.shape[1] == 0:
        raise ValueError("nothing is unknown: A = I - P is zero")
    a_mat = basis_u @ basis_u.T
    commuting = bool(np.linalg.norm(a_mat @ cov - cov @ a_mat) <= commute_tol * np.linalg.norm(cov))
    if commuting:
        # joint eigenbasis: diagonalise Sigma inside range(A) and inside range(P) separately
        lu, vu = np.linalg.eigh(basis_u.T @ cov @ basis_u)
        blocks_v, blocks_l = [basis_u @ vu], [lu]
        if basis_m.shape[1]:
            lm, vm = np.linalg.eigh(basis_m.T @ cov @ basis_m)
            blocks_v.append(basis_m @ vm)
            blocks_l.append(lm)
        evals = np.concatenate(blocks_l)
        evecs = np.concatenate(blocks_v, axis=1)
        is_u = np.zeros(n, dtype=bool)
        is_u[: basis_u.shape[1]] = True
        order = np.argsort(evals, kind="stable")
        evals, evecs, is_u = evals[order], evecs[:, order], is_u[order]
        unknown = np.flatnonzero(is_u)
        basis_u = evecs[:, unknown]  # same subspace, eigen-aligned basis
    else:
        evals, evecs = np.linalg.eigh(cov)
        unknown = None
    evals = np.clip(evals, 0.0, None)
    w = evecs.T @ basis_u
    # posterior of x given y = P x + sigma_y P n (prior mean 0): gain L = Sigma V_m (V_m^T Sigma V_m + s^2 I)^-1 V_m^T
    s_m = cov @ basis_m
    gram = basis_m.T @ s_m + sigma_y**2 * np.eye(basis_m.shape[1])
    gain_m = np.linalg.solve(gram, s_m.T).T if basis_m.shape[1] else np.zeros((n, 0))
    post_gain = gain_m @ basis_m.T
    post_cov = cov - gain_m @ s_m.T
    post_cov = 0.5 * (post_cov + post_cov.T)
    pv, pe = np.linalg.eigh(post_cov)
    keep = pv > 1e-10 * max(float(pv.max()), 1e-300)
    return LinearGaussianProblem(
        cov=cov,
        proj=proj,
        sigma_y=float(sigma_y),
        evals=evals,
        evecs=evecs,
        basis_u=basis_u,
        basis_m=basis_m,
        w=w,
        commuting=commuting,
        unknown=unknown,
        post_cov=post_cov,
        post_gain=post_gain,
        post_var=pv[keep],
        post_evecs=pe[:, keep],
        name=name,
    )


def power_law_spectrum(size: int = 16, f0: float | None = None, pixel_var: float = 0.25) -> np.ndarray:
    r"""THEORY's prior spectrum ``P(f) ∝ (f0^2 + |f|^2)^{-3/2}`` on the ``fft2`` grid, mean = ``pixel_var``.

    Args:
        size: image side (the grid is ``size x size``, periodic).
        f0: the knee frequency in cycles/pixel (default ``1 / size``).
        pixel_var: per-pixel variance (the mean of the spectrum, orthonormal-FFT convention).

    Returns:
        ``[size, size]`` spectrum = the eigenvalues of the periodic covariance.
    """
    f0 = 1.0 / size if f0 is None else f0
    f = np.fft.fftfreq(size)
    p = (f0**2 + f[:, None] ** 2 + f[None, :] ** 2) ** -1.5
    return p * (pixel_var / p.mean())


def periodic_prior_cov(size: int = 16, f0: float | None = None, pixel_var: float = 0.25) -> np.ndarray:
    r"""The ``[n, n]`` (n = size^2) stationary periodic covariance with :func:`power_law_spectrum`.

    ``Sigma[p, q] = c(p - q)`` with the autocovariance ``c = ifft2(P)`` (row-major pixels).
    THEORY's check values for size 16: eigenvalues in [0.0078, 11.37], 13 of them > 1,
    neighbour correlation 0.77.
    """
    c = np.fft.ifft2(power_law_spectrum(size, f0, pixel_var)).real
    i = np.arange(size)
    di = (i[:, None] - i[None, :]) % size
    cov = c[di[:, None, :, None], di[None, :, None, :]].reshape(size * size, size * size)
    return 0.5 * (cov + cov.T)


def box_mask(size: int = 16, box: int = 8) -> np.ndarray:
    """``[size, size]`` 0/1 mask with a centred ``box x box`` hole (as :meth:`Inpainting.box`)."""
    mask = np.ones((size, size))
    top = (size - box) // 2
    mask[top : top + box, top : top + box] = 0
    return mask


def box_inpainting(size: int = 16, box: int = 8) -> LinearGaussianProblem:
    """THEORY's box inpainting: the 16x16 prior with a central 8x8 hole (does not commute with Sigma)."""
    return make_problem(periodic_prior_cov(size), mask=box_mask(size, box).reshape(-1), name="box inpainting")


def eigen_subsampling(size: int = 16, factor: int = 4) -> LinearGaussianProblem:
    """THEORY's eigen-subsampling (MRI-like, commuting): Sigma diagonal, every ``factor``-th eigen-coefficient measured.

    Sigma = diag of the prior's eigenvalues sorted in decreasing order; coefficients 0, factor,
    2 factor, ... (the largest first) are measured.
    """
    lam = np.sort(power_law_spectrum(size).reshape(-1))[::-1]
    mask = (np.arange(lam.size) % factor == 0).astype(np.float64)
    return make_problem(np.diag(lam), mask=mask, name=f"eigen-subsampling x{factor}")


def error_shape(problem: LinearGaussianProblem, kind: str = "iso", k: int | None = None) -> np.ndarray:
    r"""A factor B ``[n, r]`` of an initial-error covariance ``B B^T`` with ``tr(B B^T) = 1``.

    Args:
        problem: the problem.
        kind: ``"iso"`` (isotropic on the unknown subspace, ``B B^T = A / n_u``), ``"top"`` /
            ``"bottom"`` (spread over the ``k`` largest / smallest eigen-directions of Sigma_post).
        k: number of directions for top/bottom (default ``n_u // 8``).

    Returns:
        ``[n, r]`` with Frobenius norm 1.
    """
    if kind == "iso":
        return problem.basis_u / np.sqrt(problem.n_u)
    k = max(problem.n_u // 8, 1) if k is None else k
    if kind == "top":
        return problem.post_evecs[:, -k:] / np.sqrt(k)
    if kind == "bottom":
        return problem.post_evecs[:, :k] / np.sqrt(k)
    raise ValueError(f"unknown error shape {kind!r}; choose iso, top or bottom")
