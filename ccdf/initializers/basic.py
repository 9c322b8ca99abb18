"""Classical initial estimates x_init from the measurement (what CCDF starts from)."""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from ccdf.operators.base import Operator
from ccdf.operators.superres import SuperResolution

#: Wiener's default nsr = max(NSR_MIN, NSR_PER_SIGMA * sigma_y), an empirical rule: with natural images' spectra
#: the best constant nsr grows about linearly with sigma_y; 0.7 sigma_y is within 0.35 dB of the best constant for
#: the Gaussian (61, std 3), uniform (9) and motion (61, 0.5) blurs of the bundled faces at sigma_y = 0.01 .. 0.1,
#: and 1e-7 was the best for noise-free (float32) measurements.
NSR_PER_SIGMA = 0.7
NSR_MIN = 1e-7


@runtime_checkable
class Initializer(Protocol):
    def __call__(self, y: Tensor, op: Operator) -> Tensor:
        """Return x_init ``[B, C, H, W]`` in the model's value range."""
        ...


class PseudoInverse:
    """x_init = A^+ y (zero-filled for masks and k-space, low-pass up-sampling for SR)."""

    def __call__(self, y: Tensor, op: Operator) -> Tensor:
        return op.pinv(y)

    def __repr__(self) -> str:
        return "PseudoInverse()"


class Wiener:
    r"""Regularised inverse (Wiener / Tikhonov): :math:`x = \arg\min_v \|A v - y\|^2 + \text{nsr}\,\|v\|^2
    = A^H (A A^H + \text{nsr}\, I)^{-1} y`, i.e. ``op.prox(0, y, nsr)``: it works for every operator,
    in closed form where the operator's prox has one. For a blur it is the classical Wiener filter
    :math:`F^{-1}(\bar K Y / (|K|^2 + \text{nsr}))` with a constant noise-to-signal ratio.

    Args:
        nsr: the noise-to-signal ratio; ``None`` derives it from ``sigma_y``:
            ``max(nsr_min, nsr_per_sigma * sigma_y)`` (:data:`NSR_PER_SIGMA`: an empirical rule).
        sigma_y: the measurement noise std (model range; the run's ``sigma_y``).
        nsr_per_sigma: the default's slope in sigma_y.
        nsr_min: the default's floor, for noise-free data: it keeps ``1 / K`` from amplifying float32
            rounding where ``|K|`` is tiny (nsr = 0 is the pseudo-inverse).
    """

    def __init__(self, nsr: float | None = None, sigma_y: float = 0.0, nsr_per_sigma: float = NSR_PER_SIGMA,
                 nsr_min: float = NSR_MIN) -> None:  # fmt: skip
        for key, value in (("sigma_y", sigma_y), ("nsr_per_sigma", nsr_per_sigma), ("nsr_min", nsr_min)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
        if nsr is None:
            nsr = max(float(nsr_min), float(nsr_per_sigma) * float(sigma_y))
        if isinstance(nsr, bool) or not isinstance(nsr, int | float) or not 0 <= nsr < math.inf:
            raise ValueError(f"nsr must be a finite number >= 0 (or null: derived from sigma_y), got {nsr!r}")
        self.nsr = float(nsr)

    def __call__(self, y: Tensor, op: Operator) -> Tensor:
        x = op.adjoint(y)
        return op.prox(torch.zeros_like(x), y, self.nsr)

    def __repr__(self) -> str:
        return f"Wiener(nsr={self.nsr:g})"


class Gray:
    r"""The gray image for colorization: the luminance in every channel, :math:`y / A(\mathbf 1)`, which is
    consistent (:math:`A x = y`) for any channel weighting. (The pseudo-inverse :math:`w y / |w|^2` is
    consistent too but tints the image: its channels are scaled by :math:`w_c / |w|^2`.)
    """

    def __call__(self, y: Tensor, op: Operator) -> Tensor:
        like = op.adjoint(y)
        if y.ndim != 4 or y.shape[1] != 1 or y.shape[-2:] != like.shape[-2:]:
            raise TypeError(
                "initializer=gray needs one-channel measurements of the image's size (colorization), "
                f"got y {tuple(y.shape)} for images {tuple(like.shape)} from {type(op).__name__}"
            )
        return (y / op(torch.ones_like(like[:1]))).expand_as(like).contiguous()

    def __repr__(self) -> str:
        return "Gray()"


class Zero:
    """x_init = 0: with t0 = 1 this is the usual sampler from pure noise."""

    def __call__(self, y: Tensor, op: Operator) -> Tensor:
        return torch.zeros_like(op.pinv(y))

    def __repr__(self) -> str:
        return "Zero()"


class Bicubic:
    """Bicubic up-sampling of the low-resolution measurement (super-resolution only)."""

    def __call__(self, y: Tensor, op: Operator) -> Tensor:
        if not isinstance(op, SuperResolution):
            raise TypeError(f"initializer=bicubic needs a SuperResolution operator, got {type(op).__name__}")
        return op.upsample_bicubic(y)

    def __repr__(self) -> str:
        return "Bicubic()"


class MaskedFill:
    r"""Fill unobserved pixels by normalised convolution (Knutsson & Westin 1993), coarse to fine.

    The observation weights are ``w = A^+ A 1`` (the mask, computed through the operator), so
    the fill needs only ``Operator`` methods. At scale ``2^k`` the image is
    ``blur(w x) / blur(w)``; each pixel takes the finest scale with enough observed weight,
    and observed pixels keep their measured value.

    Args:
        num_scales: number of dyadic Gaussian scales (the coarsest must reach across the hole).
    """

    def __init__(self, num_scales: int = 8) -> None:
        self.num_scales = num_scales

    def __repr__(self) -> str:
        return f"MaskedFill(num_scales={self.num_scales})"

    def __call__(self, y: Tensor, op: Operator) -> Tensor:
        x = op.pinv(y)
        if torch.is_complex(x):
            raise TypeError("initializer=masked_fill is for real images (use pinv for MRI)")
        w = op.pinv(op(torch.ones_like(x))).clamp(0, 1)
        filled = x.clone()
        done = w > 0.5
        for k in range(self.num_scales):
            sigma = 2.0**k
            num = _blur(w * x, sigma)
            den = _blur(w, sigma)
            est = num / den.clamp(min=1e-8)
            take = (~done) & (den > 1e-3)
            filled = torch.where(take, est, filled)
            done = done | take
        if not bool(done.all()):  # nothing observed nearby: fall back to the mean of the observed pixels
            mean = (w * x).sum(dim=(-2, -1), keepdim=True) / w.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-8)
            filled = torch.where(done, filled, mean.expand_as(filled))
        return filled


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with reflect padding (kernel radius 3 sigma, at most the image size)."""
    radius = int(min(3 * sigma, (min(x.shape[-2:]) - 1)))
    if radius < 1:
        return x
    u = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (u / sigma) ** 2)
    k = k / k.sum()
    b, c, h, w = x.shape
    z = x.reshape(b * c, 1, h, w)
    z = F.conv2d(F.pad(z, (radius, radius, 0, 0), mode="reflect"), k.reshape(1, 1, 1, -1))
    z = F.conv2d(F.pad(z, (0, 0, radius, radius), mode="reflect"), k.reshape(1, 1, -1, 1))
    return z.reshape(b, c, h, w)
