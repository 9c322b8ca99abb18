"""Metrics: per-image PSNR, SSIM (torchmetrics), NMSE; FID/KID (clean-fid), LPIPS (torchmetrics) from local weights.

torchmetrics, clean-fid and torchvision are imported only when a metric runs.
"""

from ccdf.metrics.fid import (
    FeatureStats,
    InceptionFeatures,
    compute_fid_kid,
    fid_from_features,
    frechet_distance,
    image_features,
    kernel_distance,
    kid_from_features,
    load_inception,
    reference_stats,
)
from ccdf.metrics.functional import mse, nmse, psnr, ssim
from ccdf.metrics.lpips import LPIPS, load_lpips
from ccdf.metrics.weights import WEIGHT_FILES, CorruptWeightsError, MissingWeightsError

__all__ = [
    "LPIPS",
    "WEIGHT_FILES",
    "CorruptWeightsError",
    "FeatureStats",
    "InceptionFeatures",
    "MissingWeightsError",
    "compute_fid_kid",
    "fid_from_features",
    "frechet_distance",
    "image_features",
    "kernel_distance",
    "kid_from_features",
    "load_inception",
    "load_lpips",
    "mse",
    "nmse",
    "psnr",
    "reference_stats",
    "ssim",
]
