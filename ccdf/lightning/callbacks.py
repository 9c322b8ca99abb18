"""Callbacks: export the EMA weights in ccdf's checkpoint format, so sampling loads them directly."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

from ccdf.denoisers.loaders import save_checkpoint


class ExportWeights(L.Callback):
    """Every ``every_n_steps`` and at the end, write the EMA weights as ``<dir>/ema_step<N>.safetensors``
    and ``<dir>/ema_last.safetensors`` (safetensors with the net's family and config in its metadata:
    ``model.ckpt=<file> model.preset=null`` samples with it)."""

    def __init__(self, dirpath: str | Path, family: str, config: Mapping[str, Any], every_n_steps: int = 1000) -> None:
        self.dirpath = Path(dirpath)
        self.family, self.config, self.every_n_steps = family, dict(config), int(every_n_steps)
        self.written: list[Path] = []

    def _export(self, trainer: L.Trainer, module) -> None:
        if not trainer.is_global_zero:
            return
        net = copy.deepcopy(module.net).cpu()
        net.load_state_dict(module.averaged_state_dict())
        step = int(trainer.global_step)
        for name in (f"ema_step{step:07d}.safetensors", "ema_last.safetensors"):
            self.written.append(save_checkpoint(self.dirpath / name, net, layout="ccdf", family=self.family,
                                                config=self.config))  # fmt: skip

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._export(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._export(trainer, pl_module)
