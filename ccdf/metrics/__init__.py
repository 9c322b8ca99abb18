"""Metrics: functional per-image metrics (PSNR, SSIM, NMSE), FID/KID and LPIPS from local weights.

``fid`` and ``lpips`` import clean-fid and torchvision only when their functions run.
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
