"""Distributed, resumable CCDF evaluation as a Lightning predict loop.

The work list is every (data-set index, t0) pair without a stored result
(:class:`ccdf.evaluation.ResultStore`). Lightning shards it over devices; each image draws its
measurement noise, forward jump and reverse-step noise from its own generator, seeded by
(seed, data-set index), so an image's result does not depend on the number of devices, on
its batch, or on which other t0 values share the pass (on a GPU the sampler's draws come from
generators on the device: the same results for any batch size and number of GPUs, different from
a CPU run; :mod:`ccdf.utils.rng`). Results go to the store as each batch
finishes, which makes the loop resumable, and are read back by index (so the items that DDP
repeats to even out shards count once). Each result carries its item's content key
(:func:`ccdf.data.check.item_key`), so a cached result is reused only for the same image.

With ``batch_invariant`` (the default) the networks (denoiser, and the initializer) run one item at
a time: an image's result is then bit-identical whatever the batch size. Without it they run on
the whole batch, and results differ between batch sizes by float32 rounding (the noise is the same).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ccdf.data.check import item_key
from ccdf.data.datasets import UpscaledImageWarning
from ccdf.denoisers.base import CountingDenoiser, PerItemDenoiser
from ccdf.evaluation import ResultStore, score_item
from ccdf.operators.base import Operator, measure
from ccdf.utils.rng import per_sample_generators, sampler_generators


class PendingItems(Dataset):
    """The (index, t0) work items of a data set: the item (``{"x0", "index", "name"}`` and whatever else it
    carries, e.g. a multi-coil item's ``maps`` and ``ref``) plus ``"t0"``."""

    def __init__(self, dataset: Any, work: Sequence[tuple[float, int]]) -> None:
        self.dataset = dataset
        self.work = list(work)

    def __len__(self) -> int:
        return len(self.work)

    def __getitem__(self, k: int) -> dict[str, Any]:
        t0, index = self.work[k]
        with warnings.catch_warnings():  # the pre-flight check (ccdf.data.check) reported them once
            warnings.simplefilter("ignore", UpscaledImageWarning)
            item = self.dataset[index]
        if int(item["index"]) != index:
            raise RuntimeError(f"data set item {index} reports index {item['index']}")
        return {**item, "x0": item["x0"], "index": index, "name": str(item["name"]), "t0": float(t0)}


class ReconstructionModule(L.LightningModule):
    """Measure -> initialise -> CCDF -> score -> store, one batch of (image, t0) items per step.

    Args:
        denoiser, schedule, operator, initializer: the components (:func:`ccdf.app.build`).
        sampler: ``sample_ccdf`` with its settings bound (``functools.partial``); ``t0`` is
            passed per item.
        store: where results go.
        seed: the run's seed (each image's generator is seeded from (seed, index)).
        sigma_y: measurement noise.
        num_steps: N of the grid.
        is_mri: score magnitudes with fastMRI's conventions.
        lpips: optional LPIPS distance ``[B, 3, H, W] x2 -> [B]`` on [-1, 1] images.
        progress: show the sampler's step bar on rank 0.
        batch_invariant: run the denoiser and the initializer one item at a time
            (:class:`ccdf.denoisers.base.PerItemDenoiser`): per-image results are then bit-identical
            for any batch size; otherwise they differ by float32 rounding between batch sizes.
    """

    def __init__(
        self,
        denoiser: nn.Module | Callable,
        schedule: Any,
        operator: Operator,
        initializer: Callable,
        sampler: Callable,
        store: ResultStore,
        *,
        seed: int,
        sigma_y: float,
        num_steps: int,
        is_mri: bool = False,
        lpips: nn.Module | None = None,
        progress: bool = True,
        batch_invariant: bool = True,
    ) -> None:
        super().__init__()
        self.batch_invariant = bool(batch_invariant)
        self.counter = CountingDenoiser(PerItemDenoiser(denoiser) if self.batch_invariant else denoiser)
        self.schedule = schedule
        self.operator = operator
        self.initializer = initializer
        if isinstance(initializer, nn.Module):
            self.initializer_module = initializer  # moved to the device with the rest
        self.sampler = sampler
        self.store = store
        self.seed = int(seed)
        self.sigma_y = float(sigma_y)
        self.num_steps = int(num_steps)
        self.is_mri = is_mri
        self.lpips = lpips
        self.progress = progress

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> int:
        x0: Tensor = batch["x0"]
        index = [int(i) for i in batch["index"]]
        t0 = [float(t) for t in batch["t0"]]
        gens = per_sample_generators(self.seed, index)  # on the CPU: the same numbers on any device
        op = self.operator.for_batch(batch, gens)  # per-image operator parameters are each image's first draws
        y = measure(op, x0, self.sigma_y, gens)
        if self.batch_invariant:
            x_init = torch.cat([self.initializer(y[b : b + 1], op.select([b])) for b in range(y.shape[0])])
        else:
            x_init = self.initializer(y, op)
        if x_init.shape != x0.shape:
            raise ValueError(f"initializer returned shape {tuple(x_init.shape)}, images are {tuple(x0.shape)}")
        self.counter.reset()
        tic = time.perf_counter()
        gens = sampler_generators(self.seed, index, x0.device, gens)  # on a GPU: Philox draws on the device
        x = self.sampler(
            self.counter, self.schedule, op, y, x_init, t0=t0, sigma_y=self.sigma_y, generator=gens,
            progress=self.progress and self.global_rank == 0,
        )  # fmt: skip
        seconds = time.perf_counter() - tic
        nfe = self.counter.per_item  # counted per item by the solver loop (ccdf.sampling.solvers.base)
        if len(nfe) != len(index) or self.counter.items != sum(nfe):
            raise RuntimeError(f"network evaluations not counted per item: {nfe} ({self.counter.items} in all)")
        _check_finite(x_init, x, index, batch["name"], t0)  # before anything of this batch is stored
        for b, i in enumerate(index):
            sl = slice(b, b + 1)
            ref = batch["ref"][sl] if "ref" in batch else None  # e.g. the RSS reference of multi-coil data
            row = score_item(x[sl], x_init[sl], x0[sl], y[sl], op.select([b]), self.is_mri, self.lpips, ref=ref)
            row = {"name": batch["name"][b], "key": item_key(x0[b], batch["name"][b]), **row, "nfe": nfe[b],
                   "seconds": seconds * nfe[b] / sum(nfe)}  # fmt: skip
            self.store.write_inputs(i, x0[b], x_init[b], y[sl])
            self.store.write(t0[b], i, row, x[b])
        return len(index)


def _check_finite(x_init: Tensor, x: Tensor, index: Sequence[int], names: Sequence[str], t0: Sequence[float]) -> None:
    """Refuse a non-finite initializer output or reconstruction, naming the image (nothing is cached)."""
    for what, value in (("initializer output", x_init), ("reconstruction", x)):
        ok = torch.isfinite(torch.view_as_real(value) if value.is_complex() else value).flatten(1).all(1)
        if not bool(ok.all()):
            b = int((~ok).nonzero()[0])
            raise FloatingPointError(
                f"the {what} of image {index[b]} ({names[b]!r}) at t0={t0[b]:g} is not finite (NaN or inf); "
                "check the model and initializer weights, sigma_y and the data. Nothing of this batch was stored"
            )


def run_predict(
    module: ReconstructionModule,
    dataset: Any,
    work: Sequence[tuple[float, int]],
    *,
    batch_size: int,
    devices: int | str = 1,
    accelerator: str = "auto",
    strategy: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
) -> bool:
    """Run ``module`` over the pending ``work`` with a Lightning ``Trainer.predict``.

    With ``devices > 1`` on CPU use ``strategy="ddp_spawn"`` (gloo); on GPUs ``ddp`` also works
    (Lightning relaunches the script once per device). The results are in the module's store;
    the return value says whether this process is the global rank 0, the one that should
    gather them (after a barrier, all ranks have written theirs).
    """
    if not work:
        return True
    loader = DataLoader(PendingItems(dataset, work), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        inference_mode=False,  # gradient-guided solvers (DPS, PiGDM) differentiate through the net
    )
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier("ccdf-evaluation-done")
    return trainer.is_global_zero
