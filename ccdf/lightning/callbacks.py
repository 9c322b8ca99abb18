"""Callbacks: export the EMA weights in ccdf's checkpoint format, so sampling loads them directly."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

from ccdf.checkpoints import save_checkpoint


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


#: The sampler step of the training sample grid per schedule kind: DDIM for VP chains, the reverse-diffusion
#: predictor (ancestral step with variance beta, score-SDE's VE sampler without corrector) for VE.
GRID_STEPS = {"vp": "ddim", "ve": "ancestral"}


class SampleGrid(L.Callback):
    """Every ``every_n_steps``, draw ``num`` unconditional samples from the EMA weights (``num_steps``
    steps from pure noise, with the model's own denoiser: :meth:`DiffusionModule.denoiser`, i.e. an
    eps adapter for VP nets and the score adapter for VE nets, and the step of :data:`GRID_STEPS` for its
    schedule), save ``<dir>/step<N>.png`` and send it to the loggers that take images (W&B)."""

    def __init__(self, dirpath: str | Path, shape: tuple[int, ...], every_n_steps: int = 1000, num: int = 8,
                 num_steps: int = 50, seed: int = 0) -> None:  # fmt: skip
        self.dirpath, self.shape = Path(dirpath), tuple(shape)
        self.every_n_steps, self.num, self.num_steps, self.seed = int(every_n_steps), int(num), int(num_steps), seed

    def _sample(self, trainer: L.Trainer, module) -> None:
        import torch

        from ccdf.data.transforms import to_unit
        from ccdf.operators import Inpainting
        from ccdf.sampling import sample_ccdf
        from ccdf.utils.io import save_png
        from ccdf.utils.rng import per_sample_generators
        from ccdf.utils.vis import image_grid

        if not trainer.is_global_zero or self.every_n_steps <= 0:
            return
        net = copy.deepcopy(module.net).cpu().eval()
        net.load_state_dict(module.averaged_state_dict())
        denoiser = module.denoiser(net)
        kind = str(getattr(module.schedule, "kind", "vp"))
        if kind not in GRID_STEPS:
            raise ValueError(f"no sample-grid sampler for a {kind!r} schedule; known: {sorted(GRID_STEPS)}")
        c, h, w = self.shape
        x = torch.zeros(self.num, c, h, w)
        op = Inpainting(torch.zeros(h, w))  # observes nothing: unconditional sampling
        gens = per_sample_generators(self.seed, range(self.num))
        with torch.no_grad():
            samples = sample_ccdf(denoiser, module.schedule, op, op(x), x, t0=1.0, num_steps=self.num_steps,
                                  step=GRID_STEPS[kind], dc="none", generator=gens)  # fmt: skip
        step = int(trainer.global_step)
        path = save_png(self.dirpath / f"step{step:07d}.png", image_grid([[to_unit(s) for s in samples]]))
        for lg in trainer.loggers:
            if hasattr(lg, "log_image"):
                lg.log_image(key="train/samples", images=[str(path)], step=step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._sample(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._sample(trainer, pl_module)


class StopOnSignal(L.Callback):
    """Stop training at the end of the step in which SIGINT or SIGTERM arrived, with a checkpoint.

    The app runs ``fit`` inside ``guard.deferred()`` (:class:`ccdf.utils.signals.SignalGuard`): the
    signal is only recorded, and at the end of the step this callback writes ``<dir>/last.ckpt`` (the
    state a periodic checkpoint of that step would hold, so ``training.resume=<dir>/last.ckpt``
    continues exactly) and raises :class:`ccdf.utils.signals.Interrupted`. Processes of a
    multi-process run agree on the step (any rank's signal stops all).

    Args:
        guard: the app's signal guard.
        dirpath: the checkpoint folder.
    """

    def __init__(self, guard: Any, dirpath: str | Path) -> None:
        self.guard, self.dirpath = guard, Path(dirpath)
        self.saved: Path | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning's own SIGTERM handler (installed at the start of `fit`) would leave with SIGTERMException,
        # a SystemExit with status 0, at the end of the step and possibly before this callback saw the signal.
        # The guard's handler takes SIGTERM back; every rank stops together through the reduction below.
        self.guard.install()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import signal

        from ccdf.utils.signals import Interrupted

        stop = trainer.strategy.reduce_boolean_decision(self.guard.received is not None, all=False)
        if not stop:
            return
        self.saved = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(self.saved)
        raise Interrupted(self.guard.received or signal.SIGTERM)
