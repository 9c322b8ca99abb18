"""Noise schedules: ``Schedule`` protocol, discrete VP (linear, cosine, respacing) and VE."""

from ccdf.schedules.base import Schedule, forward_diffuse, num_steps_from_t0, uniform_timesteps
from ccdf.schedules.ve import VE
from ccdf.schedules.vp import DiscreteVP, cosine_betas, linear_betas, space_timesteps

__all__ = [
    "VE",
    "DiscreteVP",
    "Schedule",
    "cosine_betas",
    "forward_diffuse",
    "linear_betas",
    "num_steps_from_t0",
    "space_timesteps",
    "uniform_timesteps",
]
