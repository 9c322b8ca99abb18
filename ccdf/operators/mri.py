"""Single-coil Cartesian MRI: A = M F with the centred orthonormal 2-D FFT.

Convention: images are complex tensors ``[B, 1, H, W]`` (complex64/128); k-space has the same
shape with the DC term at ``(H // 2, W // 2)`` (fastMRI's ``fft2c``). A real input is read as
a complex image with zero imaginary part. The mask selects columns (phase encodes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ccdf.operators.base import Operator, check_spatial
from ccdf.operators.masks import cartesian_mask


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D FFT over the last two axes."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def ifft2c(k: Tensor) -> Tensor:
    """Inverse of :func:`fft2c`."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def _complex(x: Tensor) -> Tensor:
    if torch.is_complex(x):
        return x
    return torch.complex(x, torch.zeros_like(x))


class CartesianColumns:
    """The ``cartesian`` constructor of the Cartesian k-space operators (single- and multi-coil): one signature.

    A subclass builds itself from the column mask in ``_from_columns(mask, (H, W), mask_args, per_image, maps)``.
    """

    @classmethod
    def cartesian(
        cls,
        image_size: int | Sequence[int],
        acceleration: float = 4,
        center_fraction: float = 0.08,
        pattern: str = "uniform",
        seed: int = 0,
        per_image: bool = False,
        maps: Tensor | None = None,
    ):
        """1-D random Cartesian column mask of the image width (:func:`ccdf.operators.masks.cartesian_mask`).

        Args:
            image_size: ``H = W`` or ``(H, W)``.
            acceleration, center_fraction, pattern, seed: the mask's (fastMRI's ``RandomMaskFunc``).
            per_image: :class:`SingleCoilMRI` only: each image of a batch gets its own mask, drawn from its
                own generator (:meth:`RandomCartesianMRI.for_batch`); the ``seed`` mask stands in where no
                batch is given.
            maps: :class:`ccdf.operators.MultiCoilMRI` only: the coil maps (``None``: they come with the data).
        """
        h, w = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
        mask = cartesian_mask(w, acceleration, center_fraction, pattern, seed)
        mask_args = (w, float(acceleration), float(center_fraction), pattern)
        return cls._from_columns(mask, (h, w), mask_args, per_image=bool(per_image), maps=maps)


class KSpaceMask(Operator):
    r"""y = M F x on the last two axes (every channel, e.g. every coil, its own image): adjoint = pinv =
    F^H M, ``project = F^H((1 - M) F x + M y)``, closed-form ``prox``. Subclasses give the mask: ``_m(x)``."""

    def _m(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self._m(x) * fft2c(_complex(x))

    def adjoint(self, y: Tensor) -> Tensor:
        return ifft2c(self._m(y) * _complex(y))

    def pinv(self, y: Tensor) -> Tensor:
        return self.adjoint(y)

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        m = self._m(x)
        return ifft2c((1 - m) * fft2c(_complex(x)) + m * _complex(y))

    def prox(self, x: Tensor, y: Tensor, lam: float) -> Tensor:
        """Closed form in k-space: sampled entries become (y + lam F x) / (1 + lam), the others stay."""
        if not float(lam) >= 0:
            raise ValueError(f"prox needs lam >= 0, got {lam}")
        m = self._m(x)
        k = fft2c(_complex(x))
        return ifft2c((1 - m) * k + m * (_complex(y) + lam * k) / (1 + lam))


class SingleCoilMRI(CartesianColumns, KSpaceMask):
    r"""k-space sub-sampling y = M F x; adjoint = pinv = F^H M; ``project = F^H((1 - M) F x + M y)``.

    Args:
        mask: ``[W]`` column mask or ``[H, W]`` k-space mask (0/1, centred grid).
        image_size: ``(H, W)``; required with a column mask.
    """

    def __init__(self, mask: Tensor, image_size: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask entries must be 0 or 1")
        if mask.ndim == 1:
            if image_size is None:
                raise ValueError("a column mask needs image_size")
            h = image_size if isinstance(image_size, int) else image_size[0]
            if isinstance(image_size, int):
                image_size = (image_size, image_size)
            if mask.shape[0] != image_size[1]:
                raise ValueError(f"column mask of {mask.shape[0]} does not fit width {image_size[1]}")
            mask = mask[None, :].expand(h, -1)
        if mask.ndim == 2:
            mask = mask[None]  # shared by the batch
        if mask.ndim != 3:
            raise ValueError(f"mask must be [W], [H, W] or per image [B, H, W], got shape {tuple(mask.shape)}")
        self.register_buffer("mask", mask.contiguous()[:, None])

    @classmethod
    def _from_columns(cls, mask: Tensor, size: tuple[int, int], mask_args: tuple, *, per_image: bool, maps):
        if maps is not None:
            raise ValueError("SingleCoilMRI has no coil maps: maps is for MultiCoilMRI (operator=mri_multicoil)")
        if not per_image:
            return cls(mask, size)
        op = RandomCartesianMRI(mask, size)
        op.mask_args = mask_args
        return op

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.mask.shape[-2:])  # type: ignore[return-value]

    @property
    def acceleration(self) -> float:
        return float(self.mask.numel() / self.mask.sum())

    def _m(self, x: Tensor) -> Tensor:
        check_spatial(x, self.size, "SingleCoilMRI")
        if self.mask.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"{self.mask.shape[0]} per-image masks for a batch of {x.shape[0]}")
        return self.mask.to(device=x.device, dtype=x.real.dtype)

    def select(self, idx: list[int]) -> SingleCoilMRI:
        return SingleCoilMRI(self.mask[idx, 0]) if self.mask.shape[0] > 1 else self


class RandomCartesianMRI(SingleCoilMRI):
    """Cartesian MRI with a 1-D mask drawn per image (``SingleCoilMRI.cartesian(..., per_image=True)``)."""

    mask_args: tuple = ()

    def for_batch(self, batch: dict, generators: list[torch.Generator]) -> SingleCoilMRI:
        width, acceleration, center_fraction, pattern = self.mask_args
        h = self.size[0]
        masks = [cartesian_mask(width, acceleration, center_fraction, pattern, generator=g) for g in generators]
        return SingleCoilMRI(torch.stack([m[None, :].expand(h, -1) for m in masks]))
