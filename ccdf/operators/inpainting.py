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
        if mask.ndim == 3:
            mask = mask[None]  # shared by the batch
        if mask.ndim != 4:
            raise ValueError(f"mask must be [H, W], [C, H, W] or per image [B, C, H, W], got shape {tuple(mask.shape)}")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask entries must be 0 or 1")
        self.register_buffer("mask", mask.to(torch.float32))

    @property
    def per_image(self) -> bool:
        """Whether the mask has one entry per batch item (``[B, C, H, W]`` with B > 1 or from ``for_batch``)."""
        return self.mask.shape[0] > 1

    def select(self, idx: list[int]) -> Inpainting:
        return Inpainting(self.mask[idx]) if self.per_image else self

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.mask.shape[-2:])  # type: ignore[return-value]

    def _m(self, x: Tensor) -> Tensor:
        check_spatial(x, self.size, "Inpainting")
        if self.mask.shape[1] not in (1, x.shape[1]):
            raise ValueError(f"mask has {self.mask.shape[1]} channels, images have {x.shape[1]}")
        if self.mask.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"{self.mask.shape[0]} per-image masks for a batch of {x.shape[0]}")
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
    def random(
        cls, image_size: int | Sequence[int], ratio: float, seed: int = 0, per_image: bool = False
    ) -> Inpainting:
        """Exactly ``round(ratio * H * W)`` missing pixels chosen at random (same for all channels).

        ``per_image=False``: one mask (drawn with ``seed``) for every image. ``per_image=True``: each
        image of a batch gets its own mask drawn from its own generator (:meth:`for_batch`; results do
        not depend on batching); the ``seed`` mask stands in where no batch is given.
        """
        h, w = _size2(image_size)
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 1:
            raise ValueError(f"ratio (of missing pixels) must be in [0, 1), got {ratio!r}")
        op_cls = RandomMaskInpainting if per_image else cls
        op = op_cls(_random_mask(h, w, ratio, torch.Generator().manual_seed(seed)))
        op.ratio = float(ratio)
        return op

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
        """A mask image (PNG, JPEG or .npy) of the images' size: pixels > 0.5 of full scale are observed."""
        return cls(_read_mask(Path(path), _size2(image_size)))

    @classmethod
    def from_folder(
        cls, root: str | Path, image_size: int | Sequence[int], suffix: str = ".png"
    ) -> MaskFolderInpainting:
        """One mask file per image: ``<root>/<image name><suffix>`` (white = observed), read per batch
        (:meth:`for_batch`); a missing file or one of another size is an error naming it."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"mask folder not found: {root}")
        h, w = _size2(image_size)
        op = MaskFolderInpainting(torch.ones(h, w))
        op.root, op.suffix = root, suffix
        return op


def _random_mask(h: int, w: int, ratio: float, generator: torch.Generator) -> Tensor:
    missing = torch.randperm(h * w, generator=generator)[: round(ratio * h * w)]
    mask = torch.ones(h * w)
    mask[missing] = 0
    return mask.reshape(h, w)


def _read_mask(path: Path, size: tuple[int, int]) -> Tensor:
    """A mask file as ``[H, W]`` 0/1 (> half of full scale = observed); its size must be ``size``."""
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False).astype(np.float64)
            if arr.ndim != 2 or not np.isfinite(arr).all():
                raise ValueError(f"expected a finite 2-D array, got shape {arr.shape}")
            arr = arr / max(float(arr.max()), 1e-12)
        else:
            with Image.open(path) as f:
                arr = np.asarray(f.convert("L"), dtype=np.float64) / 255.0
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read mask file {path}: {err}") from err
    if arr.shape != size:
        raise ValueError(f"mask file {path} is {arr.shape[0]}x{arr.shape[1]}, the images are {size[0]}x{size[1]}")
    return torch.from_numpy(arr > 0.5).float()


class RandomMaskInpainting(Inpainting):
    """Random-pixel inpainting with a mask drawn per image (``Inpainting.random(..., per_image=True)``)."""

    ratio: float = 0.0

    def for_batch(self, batch: dict, generators: list[torch.Generator]) -> Inpainting:
        h, w = self.size
        return Inpainting(torch.stack([_random_mask(h, w, self.ratio, g) for g in generators])[:, None])


class MaskFolderInpainting(Inpainting):
    """Inpainting with one mask file per image name (``Inpainting.from_folder``)."""

    root: Path
    suffix: str = ".png"

    def check_names(self, names: list[str]) -> None:
        for name in names:
            _read_mask(self.root / f"{name}{self.suffix}", self.size)

    def for_batch(self, batch: dict, generators: list[torch.Generator]) -> Inpainting:
        masks = [_read_mask(self.root / f"{name}{self.suffix}", self.size) for name in batch["name"]]
        return Inpainting(torch.stack(masks)[:, None])

    def _m(self, x: Tensor) -> Tensor:
        raise RuntimeError(f"per-image masks from {self.root}: the operator exists per batch of named images only")
