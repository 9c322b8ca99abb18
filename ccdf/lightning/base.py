"""What every ccdf training module shares: step-keyed randomness, EMA, Adam with warm-up."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import lightning as L
import torch
from torch import Tensor, nn

from ccdf.training.ema import EMA
from ccdf.utils.rng import per_sample_generators, sample_seed


class TrainingModule(L.LightningModule):
    """Base of :class:`DiffusionModule` and :class:`InitializerModule` (subclasses add ``training_step``).

    * randomness: :meth:`generators` gives each item a generator keyed by (seed, global step,
      data-set index), so resumed and multi-process runs draw exactly the numbers of an
      uninterrupted single-process run;
    * EMA of the weights, updated right after each optimizer step (a checkpoint of step k holds
      the EMA of step k);
    * the optimizer from ``optimizer_factory`` with a linear warm-up of ``hparams.warmup_steps``.

    Subclasses call ``save_hyperparameters`` with ``seed`` and ``warmup_steps`` among them, then
    :meth:`setup_training`.
    """

    net: nn.Module

    def setup_training(
        self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer] | None, ema_decay: float
    ) -> None:
        self.net = net
        self.optimizer_factory = optimizer or partial(torch.optim.Adam, lr=2e-4)
        self.ema = EMA(net, decay=ema_decay) if ema_decay > 0 else None

    def generators(self, index: Tensor) -> list[torch.Generator]:
        return per_sample_generators(sample_seed(self.hparams.seed, int(self.global_step)), index)

    def log_loss(self, loss: Tensor, batch_size: int) -> None:
        self.log("train/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch_size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=batch_size)

    def optimizer_step(self, *args, **kwargs) -> None:
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

    def averaged_state_dict(self) -> dict[str, Tensor]:
        """The net's weights with the EMA in place (what inference should use)."""
        if self.ema is None:
            return {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        return self.ema.state_dict_for(self.net)
