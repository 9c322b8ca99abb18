"""The ``Operator`` contract: a linear measurement A with adjoint, pseudo-inverse and projection."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ccdf.utils.rng import Generator, randn_like
from ccdf.utils.tensor import batch_sq_norm, bcast


def inner(a: Tensor, b: Tensor) -> Tensor:
    """Batched real inner product Re<a, b> per item, ``[B]`` (complex entries: Re(sum conj(a) b))."""
    return (a.conj() * b).real.flatten(1).sum(1) if torch.is_complex(a) else (a * b).flatten(1).sum(1)


def conjugate_gradient(
    apply: Callable[[Tensor], Tensor], b: Tensor, *, max_iter: int = 200, tol: float = 1e-10
) -> Tensor:
    """Solve ``apply(v) = b`` for a Hermitian positive semi-definite ``apply``, per batch item (CG)."""
    v = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = batch_sq_norm(r)
    b_norm = batch_sq_norm(b).clamp(min=torch.finfo(rs.dtype).tiny)
    for _ in range(max_iter):
        if bool((rs <= tol**2 * b_norm).all()):
            break
        ap = apply(p)
        denom = inner(p, ap)
        step = torch.where(denom > 0, rs / denom.clamp(min=torch.finfo(rs.dtype).tiny), torch.zeros_like(rs))
        v = v + bcast(step, v) * p
        r = r - bcast(step, r) * ap
        rs_new = batch_sq_norm(r)
        p = r + bcast(rs_new / rs.clamp(min=torch.finfo(rs.dtype).tiny), p) * p
        rs = rs_new
    return v


class Operator(nn.Module, ABC):
    r"""Linear forward model A: x -> y (noise-free). Masks and matrices are buffers.

    Contract (checked for every subclass by ``tests/test_operators.py``, in float64):

    * ``adjoint`` is the adjoint of ``forward``: <A x, v> = <x, A^H v>;
    * ``pinv(y)`` is the minimum-norm solution: A(A^+ y) = y for y in range(A);
    * ``project(x, y)`` is the orthogonal projection onto {x : A x = y}: consistent
      (A P(x) = y), idempotent and non-expansive, which is what CCDF's contraction
      argument needs from its data-consistency step.
    """

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """A x."""

    @abstractmethod
    def adjoint(self, y: Tensor) -> Tensor:
        """A^H y."""

    def pinv(self, y: Tensor) -> Tensor:
        """A^+ y = A^H (A A^H)^+ y; subclasses override with closed forms."""
        return self.adjoint(conjugate_gradient(lambda v: self(self.adjoint(v)), y))

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        """Closest point to ``x`` with A x = y: x + A^+ (y - A x)."""
        return x + self.pinv(y - self(x))

    def select(self, idx: list[int]) -> Operator:
        """The operator of the batch items ``idx``: itself when its parameters are shared by the batch;
        operators with per-item parameters (a leading batch dimension) return the sub-batch's."""
        return self

    def for_batch(self, batch: dict, generators: list[torch.Generator]) -> Operator:
        """The operator of one batch of data-set items (``batch``: ``x0`` ``[B, ...]``, ``index``, ``name``).

        Shared operators return themselves. An operator with per-image parameters returns a batched
        operator here: parameters drawn from each item's own generator (its first draws, before the
        measurement noise, so an image's operator does not depend on its batch), read from a file per
        image name, or taken from the batch (e.g. coil maps that come with the data).
        """
        return self

    def check_names(self, names: list[str]) -> None:
        """Check, before any sampling, the per-image inputs of the named images (e.g. one mask file per
        image name); shared and randomly drawn operators have none."""

    def measurement_noise(self, n: Tensor) -> Tensor:
        """The part of white noise ``n`` (shaped like y) that lands on actual measurements: ``A A^+ n`` here
        (the observed entries of a mask, the sampled k-space). Operators whose every output entry is a
        measurement (a blur) return ``n``. :func:`measure` adds ``sigma_y`` times this to ``A x0``."""
        return self(self.pinv(n))

    def prox(self, x: Tensor, y: Tensor, lam: float) -> Tensor:
        r"""Proximal data step :math:`\arg\min_v \|A v - y\|^2 + \lambda \|v - x\|^2
        = x + A^H (A A^H + \lambda I)^{-1} (y - A x)`.

        With noise variance :math:`\sigma_y^2` and step :math:`\gamma` (the objective
        :math:`\|Av - y\|^2/(2\sigma_y^2) + \|v - x\|^2/(2\gamma)`), ``lam`` = sigma_y^2 / gamma.
        ``lam = 0`` is :meth:`project`. Conjugate gradients here; subclasses override with closed forms.
        """
        if not float(lam) >= 0:
            raise ValueError(f"prox needs lam >= 0, got {lam}")
        if lam == 0:
            return self.project(x, y)
        r = y - self(x)
        return x + self.adjoint(conjugate_gradient(lambda v: self(self.adjoint(v)) + lam * v, r))


def measure(op: Operator, x0: Tensor, sigma_y: float = 0.0, generator: Generator = None) -> Tensor:
    """y = A x0 + sigma_y n, with n white Gaussian noise on the measurements (:meth:`Operator.measurement_noise`:
    ``A A^+`` applied to white noise unless the operator says otherwise).

    For masks this is noise on the observed entries only; for a full-row-rank A (down-sampling) and
    for a blur it is white noise on every measurement.
    """
    y = op(x0)
    if sigma_y < 0:
        raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
    if sigma_y == 0:
        return y
    n = randn_like(y, generator)
    return y + sigma_y * op.measurement_noise(n)


def check_spatial(x: Tensor, size: tuple[int, int], what: str) -> None:
    """Raise a clear error when ``x`` is not ``[B, C, H, W]`` with the operator's ``(H, W)``."""
    if x.ndim != 4 or tuple(x.shape[-2:]) != tuple(size):
        raise ValueError(f"{what} expects [B, C, {size[0]}, {size[1]}] tensors, got shape {tuple(x.shape)}")
