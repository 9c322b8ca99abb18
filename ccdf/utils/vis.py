"""Pictures: measurement previews and labelled image grids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ccdf.data.transforms import to_unit


def measurement_preview(y: Tensor, shape: Sequence[int]) -> Tensor:
    """Show a measurement as an image ``[B, C', H, W]`` in [0, 1].

    Complex (k-space) data: log magnitude, normalised per image; multi-coil k-space (more channels
    than ``shape``) shows the root-sum-of-squares over its coils. Smaller images (SR): nearest
    up-sampling. Otherwise the measurement itself in model range.
    """
    h, w = shape[-2:]
    if torch.is_complex(y):
        if len(shape) == 4 and y.ndim == 4 and y.shape[1] != shape[1]:
            y = y.abs().pow(2).sum(1, keepdim=True).sqrt()
        mag = torch.log1p(y.abs() / y.abs().flatten(1).amax(1).clamp(min=1e-12).reshape(-1, 1, 1, 1) * 1e3)
        return mag / mag.flatten(1).amax(1).clamp(min=1e-12).reshape(-1, 1, 1, 1)
    if tuple(y.shape[-2:]) != (h, w):
        y = F.interpolate(y.float(), size=(h, w), mode="nearest")
    return to_unit(y)


def image_grid(rows: Sequence[Sequence[Tensor]], titles: Sequence[str] | None = None, pad: int = 2) -> np.ndarray:
    """A uint8 ``[H, W, 3]`` grid; ``rows[i][j]`` is ``[C, h, w]`` in [0, 1] (C = 1 or 3)."""
    from PIL import Image, ImageDraw

    cells = [[(c.expand(3, -1, -1) if c.shape[0] == 1 else c).float().clamp(0, 1) for c in r] for r in rows]
    h = max(c.shape[1] for r in cells for c in r)
    w = max(c.shape[2] for r in cells for c in r)
    ncol = max(len(r) for r in cells)
    header = 16 if titles else 0
    canvas = np.full((header + len(cells) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, r in enumerate(cells):
        for j, c in enumerate(r):
            arr = (c.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
            top, left = header + pad + i * (h + pad), pad + j * (w + pad)
            canvas[top : top + c.shape[1], left : left + c.shape[2]] = arr
    if titles:
        img = Image.fromarray(canvas)
        draw = ImageDraw.Draw(img)
        for j, title in enumerate(titles):
            draw.text((pad + j * (w + pad) + 3, 2), title, fill=(0, 0, 0))
        canvas = np.asarray(img)
    return canvas


def load_png(path) -> Tensor:
    """A PNG written by :func:`ccdf.utils.io.save_png` as ``[C, H, W]`` in [0, 1]."""
    from PIL import Image

    arr = np.asarray(Image.open(path))
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
