"""Exponential moving average of weights (Polyak averaging), as in DDPM/IDDPM/score-SDE training."""

from __future__ import annotations

import torch
from torch import nn


class EMA(nn.Module):
    """Shadow copy of a module's floating-point parameters, updated as ``shadow <- d shadow + (1 - d) param``.

    With ``warmup=True`` the decay is ``min(decay, (1 + n) / (10 + n))`` after n updates (score-SDE's
    ``ExponentialMovingAverage(use_num_updates=True)``). The shadow weights are buffers, so they are
    saved and restored with the owning module's state dict.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        for i, name in enumerate(self.names):
            self.register_buffer(f"shadow_{i}", dict(model.named_parameters())[name].detach().clone())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def shadows(self) -> list[torch.Tensor]:
        return [getattr(self, f"shadow_{i}") for i in range(len(self.names))]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        n = float(self.num_updates)
        d = min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay
        params = dict(model.named_parameters())
        for name, shadow in zip(self.names, self.shadows(), strict=True):
            shadow.lerp_(params[name].detach(), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (e.g. before sampling or saving)."""
        params = dict(model.named_parameters())
        for name, shadow in zip(self.names, self.shadows(), strict=True):
            params[name].copy_(shadow)

    def state_dict_for(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``model``'s state dict with the averaged weights in place of the raw ones."""
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for name, shadow in zip(self.names, self.shadows(), strict=True):
            sd[name] = shadow.detach().clone()
        return sd
