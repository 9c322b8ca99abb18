"""Training objectives and EMA as pure functions and small classes (no Lightning)."""

from ccdf.training.ema import EMA
from ccdf.training.losses import initializer_l1_loss, ve_dsm_loss, vp_eps_loss

__all__ = ["EMA", "initializer_l1_loss", "ve_dsm_loss", "vp_eps_loss"]
