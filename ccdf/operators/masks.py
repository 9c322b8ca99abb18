"""1-D Cartesian under-sampling masks for MRI (columns of a centred k-space)."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

PATTERNS = ("uniform", "gaussian")


def cartesian_mask(
    width: int,
    acceleration: float,
    center_fraction: float,
    pattern: str = "uniform",
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A ``[width]`` 0/1 column mask with exactly ``round(width / acceleration)`` sampled columns.

    The ``round(width * center_fraction)`` columns around ``width // 2`` (the DC column of a
    centred k-space) are always sampled, as in fastMRI's ``RandomMaskFunc``. The remaining
    columns are drawn without replacement, uniformly (``uniform``) or with a Gaussian density
    around the centre of standard deviation ``width * 15 / 128`` (score-MRI's ``gaussian1d``).
    Unlike fastMRI's Bernoulli draw, the count is fixed, so the realised acceleration
    ``width / mask.sum()`` equals the requested one up to rounding. The draw uses ``generator`` when
    given (a per-image mask from the image's own generator), else a generator seeded with ``seed``.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
        raise ValueError(f"image_size (the mask width) must be a positive integer, got {width!r}")
    if not acceleration >= 1 or not math.isfinite(acceleration):  # NaN fails the first test
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    if not 0 <= center_fraction < 1:  # NaN fails too
        raise ValueError(f"center_fraction must be in [0, 1), got {center_fraction}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    total = round(width / acceleration)
    num_center = round(width * center_fraction)
    if num_center > total:
        raise ValueError(
            f"center_fraction={center_fraction} samples {num_center} columns, more than the "
            f"{total} that acceleration {acceleration} allows"
        )
    mask = torch.zeros(width)
    start = width // 2 - num_center // 2
    mask[start : start + num_center] = 1
    free = torch.nonzero(mask == 0).reshape(-1)
    if pattern == "uniform":
        weights = torch.ones(free.shape[0], dtype=torch.float64)
    else:
        std = width * 15 / 128
        weights = torch.exp(-0.5 * ((free.double() - width / 2) / std) ** 2)
    if total > num_center:
        g = generator if generator is not None else torch.Generator().manual_seed(int(seed))
        pick = torch.multinomial(weights, total - num_center, replacement=False, generator=g)
        mask[free[pick]] = 1
    return mask


def realised_acceleration(mask: Tensor) -> float:
    """Ratio of k-space columns to sampled columns."""
    return mask.numel() / max(float(mask.sum()), 1.0) if mask.ndim == 1 else math.nan
