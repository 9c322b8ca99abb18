"""Value ranges: the only place where images change range.

* Natural images: files hold [0, 255]; the model range is [-1, 1] (``to_model``/``to_unit``).
* MRI: complex images normalised to magnitude max 1; displayed and scored as magnitude.
"""

from __future__ import annotations

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


def normalize_complex(x: Tensor) -> Tensor:
    """Scale a complex image so that its largest magnitude is 1."""
    peak = x.abs().max()
    if float(peak) == 0:
        raise ValueError("cannot normalise an all-zero image")
    return x / peak
