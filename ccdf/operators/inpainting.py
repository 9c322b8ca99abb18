"""Inpainting: A = diag(m) with a 0/1 mask (1 = observed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ccdf.operators.base import Operator, check_spatial


def _size2(size: int | Sequence[int], name: str = "image_size") -> tuple[int, int]:
    """``(H, W)`` from one positive integer or a pair; anything else raises naming the argument."""
    pair = [size, size] if not isinstance(size, Sequence) or isinstance(size, str) else list(size)
    if len(pair) != 2 or not all(_is_count(v) for v in pair):
        raise ValueError(f"{name} must be a positive integer or a pair [H, W] of them, got {size!r}")
    return int(pair[0]), int(pair[1])


def _is_count(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return isinstance(value, int) and value > 0


class Inpainting(Operator):
    """Pixel mask A = diag(m): adjoint = pinv = A, ``project = (1 - m) x + m y``.

    Args:
        mask: ``[H, W]``, ``[1, H, W]`` or ``[C, H, W]`` with entries 0 or 1 (1 = observed).

    Example (3 x 3, centre pixel missing):

    >>> op = Inpainting(torch.tensor([[1., 1, 1], [1, 0, 1], [1, 1, 1]]))
    >>> x = torch.arange(9.).reshape(1, 1, 3, 3)
    >>> op(x)[0, 0]
    tensor([[0., 1., 2.],
            [3., 0., 5.],
            [6., 7., 8.]])
    >>> op.project(torch.zeros(1, 1, 3, 3), op(x))[0, 0, 1]
    tensor([3., 0., 5.])
    """

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        mask = torch.as_tensor(mask)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.ndim != 3:
            raise ValueError(f"mask must be [H, W] or [C, H, W], got shape {tuple(mask.shape)}")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask entries must be 0 or 1")
        self.register_buffer("mask", mask[None].to(torch.float32))

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.mask.shape[-2:])  # type: ignore[return-value]

    def _m(self, x: Tensor) -> Tensor:
        check_spatial(x, self.size, "Inpainting")
        if self.mask.shape[1] not in (1, x.shape[1]):
            raise ValueError(f"mask has {self.mask.shape[1]} channels, images have {x.shape[1]}")
        return self.mask.to(device=x.device, dtype=x.real.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self._m(x) * x

    def adjoint(self, y: Tensor) -> Tensor:
        return self._m(y) * y

    def pinv(self, y: Tensor) -> Tensor:
        return self._m(y) * y

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        m = self._m(x)
        return (1 - m) * x + m * y

    def prox(self, x: Tensor, y: Tensor, lam: float) -> Tensor:
        """Closed form: observed entries become (y + lam x) / (1 + lam), the others stay."""
        if not float(lam) >= 0:
            raise ValueError(f"prox needs lam >= 0, got {lam}")
        m = self._m(x)
        return (1 - m) * x + m * (y + lam * x) / (1 + lam)

    @classmethod
    def box(cls, image_size: int | Sequence[int], box_size: int | Sequence[int]) -> Inpainting:
        """A centred missing box of ``box_size`` pixels (CCDF's box inpainting)."""
        h, w = _size2(image_size)
        bh, bw = _size2(box_size, "box_size")
        if not (bh <= h and bw <= w):
            raise ValueError(f"box_size: a box of {bh}x{bw} does not fit an image of {h}x{w}")
        mask = torch.ones(h, w)
        top, left = (h - bh) // 2, (w - bw) // 2
        mask[top : top + bh, left : left + bw] = 0
        return cls(mask)

    @classmethod
    def random(cls, image_size: int | Sequence[int], ratio: float, seed: int = 0) -> Inpainting:
        """Exactly ``round(ratio * H * W)`` missing pixels chosen at random (same for all channels)."""
        h, w = _size2(image_size)
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 1:
            raise ValueError(f"ratio (of missing pixels) must be in [0, 1), got {ratio!r}")
        g = torch.Generator().manual_seed(seed)
        missing = torch.randperm(h * w, generator=g)[: round(ratio * h * w)]
        mask = torch.ones(h * w)
        mask[missing] = 0
        return cls(mask.reshape(h, w))

    @classmethod
    def half(cls, image_size: int | Sequence[int], side: str = "right") -> Inpainting:
        """Half of the image missing: ``side`` in left / right / top / bottom."""
        h, w = _size2(image_size)
        mask = torch.ones(h, w)
        if side == "left":
            mask[:, : w // 2] = 0
        elif side == "right":
            mask[:, w // 2 :] = 0
        elif side == "top":
            mask[: h // 2] = 0
        elif side == "bottom":
            mask[h // 2 :] = 0
        else:
            raise ValueError(f"side must be left, right, top or bottom, got {side!r}")
        return cls(mask)

    @classmethod
    def from_file(cls, path: str | Path, image_size: int | Sequence[int]) -> Inpainting:
        """A mask image (PNG, JPEG or .npy): pixels > 0.5 of full scale are observed."""
        from PIL import Image

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"mask file not found: {path}")
        h, w = _size2(image_size)
        try:
            if path.suffix == ".npy":
                arr = np.load(path, allow_pickle=False).astype(np.float64)
                arr = arr / max(float(arr.max()), 1e-12)
                img = Image.fromarray((arr * 255).astype(np.uint8))
            else:
                with Image.open(path) as f:
                    img = f.convert("L")
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read mask file {path}: {err}") from err
        if img.size != (w, h):
            img = img.resize((w, h), Image.NEAREST)
        return cls((torch.from_numpy(np.asarray(img, dtype=np.float32)) > 127.5).float())
