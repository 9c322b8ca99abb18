"""Image-quality metrics as pure functions, one value per image (``[B]``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(x: Tensor, ref: Tensor) -> None:
    if x.shape != ref.shape or x.ndim != 4:
        raise ValueError(
            f"metrics need two [B, C, H, W] tensors of one shape, got {tuple(x.shape)}, {tuple(ref.shape)}"
        )


def mse(x: Tensor, ref: Tensor) -> Tensor:
    _check(x, ref)
    return (x - ref).abs().pow(2).flatten(1).mean(1)


def psnr(x: Tensor, ref: Tensor, data_range: float | Tensor = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB, 10 log10(range^2 / MSE), per image.

    >>> round(psnr(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.1)).item(), 4)
    20.0
    """
    data_range = torch.as_tensor(data_range, dtype=torch.float64).reshape(-1)
    return 10 * torch.log10(data_range**2 / mse(x, ref).to(torch.float64).clamp(min=1e-20))


def nmse(x: Tensor, ref: Tensor) -> Tensor:
    """Normalised MSE ||x - ref||^2 / ||ref||^2 per image (fastMRI's NMSE)."""
    _check(x, ref)
    return (x - ref).abs().pow(2).flatten(1).sum(1) / ref.abs().pow(2).flatten(1).sum(1).clamp(min=1e-20)


def _gaussian_window(size: int, sigma: float, dtype, device) -> Tensor:
    u = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (u / sigma) ** 2)
    return g / g.sum()


def ssim(
    x: Tensor,
    ref: Tensor,
    data_range: float | Tensor = 1.0,
    *,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    border: str = "valid",
) -> Tensor:
    """Structural similarity (Wang et al. 2004) with an 11x11 Gaussian window (sigma 1.5),
    averaged over channels and pixels: one value per image.

    ``border="valid"`` averages the SSIM map where the window fits inside the image (Wang et
    al.'s reference code, scikit-image); ``border="reflect"`` pads by reflection and averages
    the whole map, which is what torchmetrics' ``structural_similarity_index_measure`` does.
    """
    if border not in ("valid", "reflect"):
        raise ValueError(f"border must be 'valid' or 'reflect', got {border!r}")
    _check(x, ref)
    x, ref = x.to(torch.float64), ref.to(torch.float64)
    b, c, h, w = x.shape
    data_range = torch.as_tensor(data_range, dtype=torch.float64, device=x.device).reshape(-1, 1, 1, 1)
    g = _gaussian_window(window, sigma, x.dtype, x.device)
    kern = (g[:, None] * g[None, :]).expand(c, 1, window, window)

    pad = (window - 1) // 2

    def filt(z: Tensor) -> Tensor:
        if border == "reflect":
            z = F.pad(z, (pad, pad, pad, pad), mode="reflect")
        return F.conv2d(z, kern, groups=c)

    mu_x, mu_y = filt(x), filt(ref)
    sxx = (filt(x * x) - mu_x**2).clamp(min=0)
    syy = (filt(ref * ref) - mu_y**2).clamp(min=0)
    sxy = filt(x * ref) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)
