"""Tensor helpers shared by the math modules."""

from __future__ import annotations

import torch
from torch import Tensor


def bcast(v: Tensor | float, x: Tensor) -> Tensor:
    """Shape a scalar or a per-item ``[B]`` tensor so it broadcasts against ``x`` ``[B, ...]``.

    A scalar stays where it is (a 0-d host tensor enters a device kernel as a scalar argument: no copy,
    no host-device synchronisation); a ``[B]`` tensor is copied to ``x``'s device without blocking."""
    v = torch.as_tensor(v)
    dtype = _real(x.dtype)
    if v.ndim == 0:
        return v.to(dtype=dtype)
    if v.ndim != 1 or v.shape[0] != x.shape[0]:
        raise ValueError(f"expected a scalar or a [{x.shape[0]}] tensor, got shape {tuple(v.shape)}")
    return v.to(dtype=dtype).to(x.device, non_blocking=True).reshape(-1, *([1] * (x.ndim - 1)))


def bcast_key(x: Tensor) -> tuple:
    """What :func:`bcast` of a given value for ``x`` depends on (dtype, rank, batch, device): the part of a memo's key
    that a coefficient shaped for ``x`` needs besides the times it was computed from."""
    return x.dtype, x.ndim, x.shape[0], x.device


_REAL = {torch.complex64: torch.float32, torch.complex128: torch.float64, torch.complex32: torch.float16}


def _real(dtype: torch.dtype) -> torch.dtype:
    return _REAL.get(dtype, dtype)


def batch_sq_norm(x: Tensor) -> Tensor:
    """Squared Euclidean norm per item, ``[B]``; complex entries count |z|^2."""
    return x.abs().pow(2).flatten(1).sum(1)
