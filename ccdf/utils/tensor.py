"""Tensor helpers shared by the math modules."""

from __future__ import annotations

import torch
from torch import Tensor


def bcast(v: Tensor | float, x: Tensor) -> Tensor:
    """Shape a scalar or a per-item ``[B]`` tensor so it broadcasts against ``x`` ``[B, ...]``."""
    v = torch.as_tensor(v, device=x.device)
    if v.ndim == 0:
        return v.to(dtype=_real(x.dtype))
    if v.ndim != 1 or v.shape[0] != x.shape[0]:
        raise ValueError(f"expected a scalar or a [{x.shape[0]}] tensor, got shape {tuple(v.shape)}")
    return v.to(dtype=_real(x.dtype)).reshape(-1, *([1] * (x.ndim - 1)))


def _real(dtype: torch.dtype) -> torch.dtype:
    return torch.empty((), dtype=dtype).real.dtype if dtype.is_complex else dtype


def batch_sq_norm(x: Tensor) -> Tensor:
    """Squared Euclidean norm per item, ``[B]``; complex entries count |z|^2."""
    return x.abs().pow(2).flatten(1).sum(1)
