"""Lightning training of score networks (VP epsilon / VE score) around the pure losses in ccdf.training."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import lightning as L
import torch
from torch import nn

from ccdf.training.ema import EMA
from ccdf.training.losses import ve_dsm_loss, vp_eps_loss
from ccdf.utils.rng import per_sample_generators, sample_seed

LOSSES: dict[str, Callable] = {
    "vp_eps": vp_eps_loss,
    "vp_hybrid": partial(vp_eps_loss, learn_sigma=True),
    "ve_dsm": ve_dsm_loss,
}


class DiffusionModule(L.LightningModule):
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
        self.net = net
        self.schedule = schedule
        self.loss_fn = LOSSES[loss]
        self.optimizer_factory = optimizer or partial(torch.optim.Adam, lr=2e-4)
        self.ema = EMA(net, decay=ema_decay) if ema_decay > 0 else None

    def generators(self, index: torch.Tensor) -> list[torch.Generator]:
        return per_sample_generators(sample_seed(self.hparams.seed, int(self.global_step)), index)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x0 = batch["x0"]
        per_item = self.loss_fn(self.net, self.schedule, x0, self.generators(batch["index"]))
        loss = per_item.mean()
        self.log("train/loss", loss, prog_bar=True, sync_dist=True, batch_size=x0.shape[0])
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=x0.shape[0])
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        # The EMA follows each optimizer step here, before any on_train_batch_end hook: a
        # checkpoint saved at the end of step k then holds the EMA of step k.
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.net)

    def configure_optimizers(self):
        opt = self.optimizer_factory(self.net.parameters())
        warmup = int(self.hparams.warmup_steps)
        if warmup <= 0:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def averaged_state_dict(self) -> dict[str, torch.Tensor]:
        """The net's weights with the EMA in place (what sampling should use)."""
        if self.ema is None:
            return {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        return self.ema.state_dict_for(self.net)
