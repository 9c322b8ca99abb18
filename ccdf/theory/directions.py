r"""Directions for the automatic t0 (:mod:`ccdf.theory.auto`): a basis T (pixels or the 2-D DFT), the
unknown share ``d_k`` of each direction and the per-direction energies of the initial error and of the
posterior spread (docs/reference/THEORY.md §3: the closed form holds per posterior eigen-direction)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ccdf.operators.base import Operator

BASES = ("fourier", "pixel")


def null_component(op: Operator, x: Tensor) -> Tensor:
    r"""``(I - A^+A) x``: the part of ``x`` that the measurement does not see."""
    return x - op.pinv(op(x))


def _coefficients(x: Tensor, basis: str) -> Tensor:
    """``x`` ``[B, C, H, W]`` in the direction basis: pixels, or the orthonormal 2-D DFT per channel."""
    if basis == "pixel":
        return x
    if basis == "fourier":
        return torch.fft.fft2(x, norm="ortho")
    raise ValueError(f"unknown basis {basis!r}; choose one of {BASES}")


def _split(v: Tensor, is_complex: bool) -> Tensor:
    """Real directions: a complex image's element (pixel or frequency) carries two, with half the energy each.

    A real image's DFT bin is one real direction's worth of white noise (E|F z|_k^2 = 1 for white real z).
    """
    return torch.stack([v / 2, v / 2], dim=-1) if is_complex else v


def direction_energy(x: Tensor, basis: str = "fourier") -> Tensor:
    r"""``sum_b |(T x_b)_k|^2`` per direction k (T: the basis), float64 ``[C, H, W]`` (``[..., 2]`` if complex)."""
    c = _coefficients(x.to(_wide(x.dtype)), basis)
    return _split((c.abs() ** 2).sum(0), x.is_complex()).cpu()


def _diagonal_share(op: Operator, like: Tensor, basis: str, *, probes: int, seed: int) -> Tensor:
    """Ratio Hutchinson estimate of ``diag(T M T^H)`` (``M = I - A^+A``), ``[C, H, W]``."""
    shape = tuple(like.shape[1:])
    g = torch.Generator().manual_seed(seed)
    num, den = None, None
    for start in range(0, int(probes), 8):
        k = min(8, int(probes) - start)
        r = torch.randint(0, 2, (k, *shape), generator=g).to(torch.float64) * 2 - 1
        if like.is_complex():
            r = r.to(torch.complex128)
        r = r.to(like.device)
        z, mz = _coefficients(r, basis), _coefficients(null_component(op, r), basis)
        a, b = (z.conj() * mz).real.sum(0), (z.abs() ** 2).sum(0)
        num, den = (a, b) if num is None else (num + a, den + b)
    return (num / den.clamp(min=1e-300)).clamp(0, 1).cpu()


def _is_diagonal(op: Operator, like: Tensor, basis: str, d: Tensor, *, seed: int) -> bool:
    """Whether ``M = I - A^+A`` acts on a fresh probe as ``diag(d)`` in the basis (to 1e-6)."""
    g = torch.Generator().manual_seed(seed + 1)
    r = torch.randn(tuple(like.shape[1:]), generator=g, dtype=torch.float64)[None]
    r = (r.to(torch.complex128) if like.is_complex() else r).to(like.device)
    z, mz = _coefficients(r, basis), _coefficients(null_component(op, r), basis)
    return bool((mz - d.to(mz.device) * z).abs().norm() <= 1e-6 * max(float(mz.abs().norm()), 1e-300))


def unknown_diagonal(op: Operator, like: Tensor, *, basis: str = "fourier", probes: int = 32, seed: int = 0) -> Tensor:
    r"""``d_k = (T (I - A^+A) T^H)_{kk}``, the unknown share of each direction.

    Exact in two cases: when ``M = I - A^+A`` is diagonal in the basis (masks in pixels, Cartesian MRI
    in frequencies; the ratio ``sum_r Re(conj(T r)_k (T M r)_k) / sum_r |T r|_k^2`` over Rademacher
    probes r is then exact), and when it is diagonal in the *other* basis: every pixel and every DFT
    vector has the same energy ``1/n`` in each element of the other basis, so then ``d_k`` is the
    channel's mean unknown share (a mask's missing fraction for every frequency). Otherwise (e.g. the
    super-resolution low-pass band, nearly diagonal in frequencies) the ratio estimate.

    Args:
        op: the operator.
        like: ``[B, C, H, W]`` (real or complex) images of the right shape.
        basis: ``"pixel"`` or ``"fourier"``.
        probes: number of probes of the ratio estimate.
        seed: seeds the probes.

    Returns:
        ``[C, H, W]`` in [0, 1] (``[C, H, W, 2]`` for complex images).
    """
    if basis not in BASES:
        raise ValueError(f"unknown basis {basis!r}; choose one of {BASES}")
    d = _diagonal_share(op, like, basis, probes=2, seed=seed)
    if not _is_diagonal(op, like, basis, d, seed=seed):
        other = BASES[1 - BASES.index(basis)]
        d_other = _diagonal_share(op, like, other, probes=2, seed=seed)
        if _is_diagonal(op, like, other, d_other, seed=seed):
            d = d_other.mean(dim=(-2, -1), keepdim=True).expand_as(d_other).clone()
        else:
            d = _diagonal_share(op, like, basis, probes=probes, seed=seed)
    return torch.stack([d, d], dim=-1) if like.is_complex() else d


def initial_error_sum(op: Operator, x0: Tensor, x_init: Tensor, basis: str = "fourier") -> Tensor:
    r"""``sum_b |T (I - A^+A)(x_init - x0)|_k^2`` per direction k, float64."""
    return direction_energy(null_component(op, (x_init - x0).to(_wide(x0.dtype))), basis)


def posterior_variance_sum(
    denoiser: Callable,
    schedule,
    op: Operator,
    y: Tensor,
    x_init: Tensor,
    *,
    num_steps: int,
    generators_a: Sequence[torch.Generator],
    generators_b: Sequence[torch.Generator],
    sampler_kwargs: dict[str, Any] | None = None,
    basis: str = "fourier",
    sigma_y: float = 0.0,
) -> Tensor:
    r"""``sum_b |T (I - A^+A)(x_a - x_b)|_k^2 / 2`` per direction k for two posterior samples per item.

    Both samples run :func:`ccdf.sampling.sample_ccdf` from t0 = 1 (x_init diffused to pure noise) with the
    run's ``sigma_y`` (DDNM+, the prox step and ΠGDM use it), in one batched pass, item b of sample a with
    ``generators_a[b]`` and of sample b with ``generators_b[b]``.

    Returns:
        float64 ``[C, H, W]`` (``[..., 2]`` for complex images).
    """
    from ccdf.sampling import sample_ccdf

    kw = dict(sampler_kwargs or {})
    x = sample_ccdf(
        denoiser, schedule, op, torch.cat([y, y]), torch.cat([x_init, x_init]), t0=1.0, num_steps=int(num_steps),
        generator=[*generators_a, *generators_b], sigma_y=float(sigma_y), **kw,
    )  # fmt: skip
    half = x.shape[0] // 2
    return direction_energy(null_component(op, (x[:half] - x[half:]).to(_wide(x.dtype))), basis) / 2


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype.is_complex else torch.float64
