"""Denoisers D(x_t, t) -> x0_hat: protocol, counting wrapper, exact Gaussian priors."""

from ccdf.denoisers.base import CountingDenoiser, Denoiser, DenoiserOutput, PerItemDenoiser, as_output
from ccdf.denoisers.gaussian import DenseGaussianPrior, GaussianDenoiser, StationaryGaussianPrior

__all__ = [
    "CountingDenoiser",
    "DenseGaussianPrior",
    "Denoiser",
    "DenoiserOutput",
    "GaussianDenoiser",
    "PerItemDenoiser",
    "StationaryGaussianPrior",
    "as_output",
]
