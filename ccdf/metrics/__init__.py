"""Functional metrics (per image)."""

from ccdf.metrics.functional import mse, nmse, psnr, ssim

__all__ = ["mse", "nmse", "psnr", "ssim"]
