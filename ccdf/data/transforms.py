"""Value ranges: the only place where images change range.

* Natural images: files hold [0, 255]; the model range is [-1, 1] (``to_model``/``to_unit``).
* MRI: complex images normalised to magnitude max 1; displayed and scored as magnitude.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def to_model(x_unit: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1]."""
    return x_unit * 2 - 1


def to_unit(x: Tensor) -> Tensor:
    """Model range -> [0, 1] for display and metrics: [-1, 1] images are mapped and clamped;
    complex (MRI) images become their magnitude, clamped to [0, 1]."""
    if torch.is_complex(x):
        return x.abs().clamp(0, 1)
    return ((x + 1) / 2).clamp(0, 1)


def normalize_complex(x: Tensor, what: str = "image") -> Tensor:
    """Scale a complex image so that its largest magnitude is 1.

    Args:
        x: the image.
        what: how error messages name it (e.g. ``"slice 3 of fastMRI file /data/file1.h5"``).

    Raises:
        ValueError: ``x`` is all zero, or its peak magnitude is not finite (NaN or infinity).
    """
    peak = float(x.abs().max())
    if peak == 0:
        raise ValueError(f"{what}: all-zero image, cannot scale it to magnitude max 1")
    if not math.isfinite(peak):
        raise ValueError(f"{what}: peak magnitude is {peak} (NaN or infinite values), cannot scale it to max 1")
    return x / peak
