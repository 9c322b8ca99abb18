"""Image-quality metrics, one value per image (``[B]``): PSNR and SSIM through torchmetrics, MSE and NMSE.

PSNR and SSIM are torchmetrics' ``peak_signal_noise_ratio`` and ``structural_similarity_index_measure``
evaluated in float64. A per-image ``data_range`` (MRI: each reference's maximum) is applied by dividing
both images by it and scoring with range 1, which is the same number (both metrics are invariant to a
common scaling of images and range) and keeps one vectorised call per batch. torchmetrics is imported
when a metric first runs (``import ccdf.metrics`` stays light).
"""

from __future__ import annotations

import torch
from torch import Tensor

MSE_FLOOR = 1e-20  # psnr's smallest MSE: identical images score 10 log10(range^2 / 1e-20), not inf


def _check(x: Tensor, ref: Tensor) -> None:
    if x.shape != ref.shape or x.ndim != 4:
        raise ValueError(
            f"metrics need two [B, C, H, W] tensors of one shape, got {tuple(x.shape)}, {tuple(ref.shape)}"
        )


def mse(x: Tensor, ref: Tensor) -> Tensor:
    """Mean squared error per image (complex inputs: of the modulus of the difference)."""
    _check(x, ref)
    return (x - ref).abs().pow(2).flatten(1).mean(1)


def nmse(x: Tensor, ref: Tensor) -> Tensor:
    """Normalised MSE ||x - ref||^2 / ||ref||^2 per image (fastMRI's NMSE; no library has a per-image one)."""
    _check(x, ref)
    return (x - ref).abs().pow(2).flatten(1).sum(1) / ref.abs().pow(2).flatten(1).sum(1).clamp(min=1e-20)


def _unit_range(x: Tensor, ref: Tensor, data_range: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``x / r``, ``ref / r`` in float64 and ``r`` as ``[B or 1]`` float64, for a scalar or per-image range."""
    _check(x, ref)
    r = torch.as_tensor(data_range, dtype=torch.float64, device=x.device).reshape(-1)
    if r.numel() not in (1, x.shape[0]):
        raise ValueError(f"data_range must be a number or one value per image ({x.shape[0]}), got {r.numel()}")
    scale = r.view(-1, 1, 1, 1)
    return x.to(torch.float64) / scale, ref.to(torch.float64) / scale, r


def psnr(x: Tensor, ref: Tensor, data_range: float | Tensor = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB, 10 log10(range^2 / MSE), per image (torchmetrics, float64).

    ``data_range`` is a number or one value per image. An MSE below ``MSE_FLOOR`` (1e-20) counts as
    that floor, so identical images score 10 log10(range^2 / 1e-20) (200 dB at range 1) instead of
    ``inf``: means stay finite and metrics.json valid JSON.

    >>> round(psnr(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.1)).item(), 4)
    20.0
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    x, ref, r = _unit_range(x, ref, data_range)
    value = peak_signal_noise_ratio(x, ref, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return torch.minimum(value, 10 * torch.log10(r**2 / MSE_FLOOR))


def ssim(
    x: Tensor,
    ref: Tensor,
    data_range: float | Tensor = 1.0,
    *,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    border: str = "valid",
) -> Tensor:
    """Structural similarity (Wang et al. 2004) with a Gaussian window (sigma 1.5: 11x11), averaged over
    channels and pixels: one value per image (torchmetrics' SSIM map, float64).

    ``border="valid"`` averages the SSIM map where the window fits inside the image (Wang et al.'s
    reference code, scikit-image; the paper tables use it): torchmetrics pads by reflection, and its
    full map (``return_full_image=True``) equals the valid map away from the padded border, so the
    border of width (window - 1) / 2 is cropped. ``border="reflect"`` is torchmetrics' own value (the
    whole reflect-padded map).
    """
    if border not in ("valid", "reflect"):
        raise ValueError(f"border must be 'valid' or 'reflect', got {border!r}")
    from torchmetrics.functional.image import structural_similarity_index_measure

    x, ref, _ = _unit_range(x, ref, data_range)
    value, full = structural_similarity_index_measure(
        x, ref, sigma=sigma, reduction="none", data_range=1.0, k1=k1, k2=k2, return_full_image=True
    )
    if border == "reflect":
        return value
    pad = int(3.5 * sigma + 0.5)  # torchmetrics' Gaussian window is 2 * pad + 1 wide
    return full[..., pad:-pad, pad:-pad].flatten(1).mean(1)
