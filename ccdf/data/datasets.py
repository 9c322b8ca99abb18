"""Data sets: image folders (PNG/JPEG), complex MRI slices (.npy), and the bundled samples.

Every item is a dict ``{"x0": Tensor [C, H, W], "index": int, "name": str}``; ``index`` keys
random generators and saved files, so results do not depend on batching or devices. The readers
live by family (:mod:`ccdf.data.images`, :mod:`ccdf.data.mri_slices`, :mod:`ccdf.data.multicoil`);
their names stay importable from here (``_target_: ccdf.data.datasets.FastMRISlices``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ccdf.data.images import (
    IMAGE_EXTENSIONS,
    UPSCALE_WARN_FACTOR,
    ImageFolder,
    UpscaledImageWarning,
    apply_split,
    center_crop,
    check_finite,
    list_files,
    load_image,
    read_split,
    samples_root,
    splits_root,
)
from ccdf.data.mri_slices import ARRAY_EXTENSIONS, ComplexSliceFolder, FastMRISlices
from ccdf.data.multicoil import ESPIRIT, FastMRIMultiCoil, bundled_multicoil, espirit_maps

__all__ = [
    "ARRAY_EXTENSIONS",
    "ESPIRIT",
    "IMAGE_EXTENSIONS",
    "UPSCALE_WARN_FACTOR",
    "ComplexSliceFolder",
    "FastMRIMultiCoil",
    "FastMRISlices",
    "GaussianFieldDataset",
    "ImageFolder",
    "UpscaledImageWarning",
    "apply_split",
    "bundled_multicoil",
    "bundled_samples",
    "center_crop",
    "check_finite",
    "espirit_maps",
    "list_files",
    "load_image",
    "read_split",
    "samples_root",
    "splits_root",
    "stack_images",
]


def bundled_samples(name: str = "ffhq", split: str = "eval", size: int = 256, max_images: int | None = None) -> Dataset:
    """The bundled real samples: ``ffhq`` (RGB faces) or ``fastmri_knee`` (complex knee slices).

    ``split="eval"`` is what the demo reconstructs; ``split="prior"`` is what the Gaussian
    prior is fitted to; the two never overlap.
    """
    if split not in ("eval", "prior"):
        raise ValueError(f"split must be 'eval' or 'prior', got {split!r}")
    root = samples_root() / name / split
    if name == "ffhq":
        return ImageFolder(root, size=size, channels=3, max_images=max_images)
    if name == "fastmri_knee":
        return ComplexSliceFolder(root, size=size, max_images=max_images)
    raise ValueError(f"unknown bundled sample set {name!r}; choose 'ffhq' or 'fastmri_knee'")


def stack_images(dataset: Dataset, max_images: int | None = None) -> Tensor:
    """All items' ``x0`` stacked: ``[M, C, H, W]``."""
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    return torch.stack([dataset[i]["x0"] for i in range(n)])


class GaussianFieldDataset(Dataset):
    """Draws from a Gaussian prior as a data set (item i is seeded by (seed, i)).

    With :class:`ccdf.denoisers.gaussian.StationaryGaussianPrior` the exact MMSE denoiser is
    known, which makes it the ground truth for checking that training learns.
    """

    kind = "image"

    def __init__(self, prior, size: int, length: int = 10000, seed: int = 0) -> None:
        self.prior, self.size, self.length, self.seed = prior, size, length, seed
        self.channels = prior.channels

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        from ccdf.utils.rng import sample_seed

        g = torch.Generator().manual_seed(sample_seed(self.seed, index))
        x0 = self.prior.sample(1, self.size, self.size, g, dtype=torch.float32)[0]
        return {"x0": x0, "index": index, "name": f"field_{index:06d}"}
