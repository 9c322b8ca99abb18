"""Lightning training of score networks (VP epsilon / VE score) around the pure losses in ccdf.training."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from ccdf.denoisers.adapters import EpsDenoiser, VEScoreDenoiser
from ccdf.lightning.base import TrainingModule
from ccdf.training.losses import ve_dsm_loss, vp_eps_loss

LOSSES: dict[str, Callable] = {
    "vp_eps": vp_eps_loss,
    "vp_hybrid": partial(vp_eps_loss, learn_sigma=True),
    "ve_dsm": ve_dsm_loss,
}

#: The denoiser adapter (:mod:`ccdf.denoisers.adapters`) for the parameterisation each loss trains.
ADAPTERS: dict[str, Callable[[nn.Module, object], nn.Module]] = {
    "vp_eps": EpsDenoiser,
    "vp_hybrid": EpsDenoiser,
    "ve_dsm": VEScoreDenoiser,
}


class DiffusionModule(TrainingModule):
    """Train ``net`` with one of :data:`LOSSES`; keeps an EMA of the weights.

    Randomness is a pure function of (seed, global step, data-set index): each item's noise level
    and noise come from its own generator, so a run resumed from a checkpoint, or split over any
    number of processes, draws exactly the noise of an uninterrupted single-process run.

    Args:
        net: the score network (built by the caller, e.g. ``GuidedUNet``).
        schedule: the forward process the loss uses.
        loss: a key of :data:`LOSSES`.
        optimizer: a ``functools.partial`` of a torch optimizer (all but the parameters).
        warmup_steps: linear learning-rate warm-up.
        ema_decay: EMA decay (0 disables the average).
        seed: the training seed.
    """

    def __init__(
        self,
        net: nn.Module,
        schedule,
        *,
        loss: str = "vp_eps",
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        warmup_steps: int = 0,
        ema_decay: float = 0.9999,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
        self.save_hyperparameters(ignore=["net", "schedule", "optimizer"])
        self.setup_training(net, optimizer, ema_decay)
        self.schedule = schedule
        self.loss_fn = LOSSES[loss]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x0 = batch["x0"]
        per_item = self.loss_fn(self.net, self.schedule, x0, self.generators(batch["index"]))
        loss = per_item.mean()
        self.log_loss(loss, x0.shape[0])
        return loss

    def denoiser(self, net: nn.Module | None = None) -> nn.Module:
        """``net`` (default: the trained one) as D(x_t, t) -> x0_hat for the loss's parameterisation:
        an eps adapter on the VP chain for ``vp_*``, the score adapter (Tweedie) for ``ve_dsm``."""
        return ADAPTERS[self.hparams.loss](self.net if net is None else net, self.schedule)
