"""Augmented views of a small data set: random crops and flips, a pure function of (seed, index).

:class:`RandomCropFlip` turns a handful of images into a long virtual data set: item ``i`` is a
random crop (and flips) of base image ``i mod len(base)``, drawn from a generator seeded by
``(seed, i)``. With :class:`ccdf.lightning.data.StepDataModule` the whole training stream is then
fixed by the seed, whatever the batching, resumption or number of processes.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ccdf.utils.rng import sample_seed

__all__ = ["RandomCropFlip", "random_crop_flip"]


def random_crop_flip(x: Tensor, size: int | None, generator: torch.Generator, *, hflip: bool = True,
                     vflip: bool = False) -> Tensor:  # fmt: skip
    """A random ``size`` x ``size`` crop of ``x`` ``[C, H, W]`` (None: no crop), then random flips."""
    h, w = x.shape[-2:]
    if size is not None:
        if h < size or w < size:
            raise ValueError(f"image of {h}x{w} is smaller than the crop size {size}")
        top = int(torch.randint(h - size + 1, (), generator=generator))
        left = int(torch.randint(w - size + 1, (), generator=generator))
        x = x[..., top : top + size, left : left + size]
    if hflip and bool(torch.rand((), generator=generator) < 0.5):
        x = x.flip(-1)
    if vflip and bool(torch.rand((), generator=generator) < 0.5):
        x = x.flip(-2)
    return x.contiguous()


class RandomCropFlip(Dataset):
    """``length`` augmented items of ``base``: crops of ``size`` with horizontal (and vertical) flips.

    The base items are read once and kept in memory (the bundled splits are a few images).

    Args:
        base: a data set of ``{"x0": [C, H, W], ...}`` items.
        size: crop side length (None: keep the full image, flips only).
        length: number of virtual items.
        seed: augmentation seed.
        hflip, vflip: random horizontal / vertical flips.
    """

    def __init__(self, base: Dataset, size: int | None, *, length: int = 100_000, seed: int = 0,
                 hflip: bool = True, vflip: bool = False) -> None:  # fmt: skip
        if len(base) < 1:
            raise ValueError("cannot augment an empty data set")
        self.base = base
        self.items = [base[i] for i in range(len(base))]
        self.size, self.length, self.seed = size, int(length), int(seed)
        self.hflip, self.vflip = hflip, vflip
        self.kind = getattr(base, "kind", "image")
        self.channels = getattr(base, "channels", self.items[0]["x0"].shape[0])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        item = self.items[index % len(self.items)]
        g = torch.Generator().manual_seed(sample_seed(self.seed, index))
        x0 = random_crop_flip(item["x0"], self.size, g, hflip=self.hflip, vflip=self.vflip)
        return {"x0": x0, "index": index, "name": f"{item['name']}_aug{index}"}
