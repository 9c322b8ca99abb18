"""Measurement operators with forward, adjoint, pseudo-inverse and data-consistency projection."""

from ccdf.operators.base import Operator, conjugate_gradient, measure
from ccdf.operators.blur import Blur, MotionBlur
from ccdf.operators.color import Colorization
from ccdf.operators.inpainting import Inpainting
from ccdf.operators.masks import cartesian_mask, poisson_mask
from ccdf.operators.mri import SingleCoilMRI, fft2c, ifft2c
from ccdf.operators.multicoil import CoilKSpace, MultiCoilMRI, rss, sense_combine
from ccdf.operators.superres import SuperResolution

__all__ = [
    "Blur",
    "CoilKSpace",
    "Colorization",
    "Inpainting",
    "MotionBlur",
    "MultiCoilMRI",
    "Operator",
    "SingleCoilMRI",
    "SuperResolution",
    "cartesian_mask",
    "conjugate_gradient",
    "fft2c",
    "ifft2c",
    "measure",
    "poisson_mask",
    "rss",
    "sense_combine",
]
