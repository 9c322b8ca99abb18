"""Under-sampling masks for MRI on a centred k-space: 1-D Cartesian columns, 2-D variable-density Poisson disc."""

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


def poisson_mask(image_size: int | tuple[int, int], acceleration: float, calib_size: int = 24, seed: int = 0) -> Tensor:
    """A 2-D variable-density Poisson-disc ``[H, W]`` 0/1 mask (sigpy's ``sigpy.mri.poisson``, Bridson's algorithm).

    The ``calib_size x calib_size`` block around ``(H // 2, W // 2)`` is fully sampled (ESPIRiT's
    calibration region); the density falls as 1 / (1 + s r) with the k-space radius r, ``s`` found by
    sigpy's bisection so that the realised acceleration is within 0.1 of ``acceleration``; the corners
    beyond radius 1 are never sampled. ``seed`` fixes the draw (sigpy restores numpy's global state after).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int | tuple | list):
        raise ValueError(f"image_size must be a positive integer or a pair [H, W], got {image_size!r}")
    h, w = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    if h < 2 or w < 2:
        raise ValueError(f"image_size must be at least 2 x 2 for a Poisson-disc mask, got {(h, w)}")
    if not acceleration > 1 or not math.isfinite(acceleration):
        raise ValueError(f"acceleration must be > 1 for a Poisson-disc mask, got {acceleration}")
    if isinstance(calib_size, bool) or not isinstance(calib_size, int) or not 0 <= calib_size <= min(h, w):
        raise ValueError(f"calib_size must be an integer in [0, {min(h, w)}], got {calib_size!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    import numpy as np
    import sigpy.mri

    try:
        mask = sigpy.mri.poisson((h, w), float(acceleration), calib=(calib_size, calib_size), seed=seed,
                                 dtype=np.float32)  # fmt: skip
    except ValueError as err:  # sigpy: "Cannot generate mask to satisfy accel=..."
        raise ValueError(f"acceleration: {err} (image {h}x{w}, calib_size {calib_size})") from None
    return torch.from_numpy(np.ascontiguousarray(mask)).round().clamp(0, 1)


def realised_acceleration(mask: Tensor) -> float:
    """Ratio of k-space columns to sampled columns."""
    return mask.numel() / max(float(mask.sum()), 1.0) if mask.ndim == 1 else math.nan
