"""Data parallel training: two CPU processes (gloo) see the same global batch and noise as one process.

Each item's noise comes from a generator keyed by (seed, step, data-set index) and the global batch
of a step is fixed by the step-indexed sampler, so the all-reduced gradients of a 2-process run
with 2 x 4 items must equal those of a 1-process run with 8 items (up to float summation order).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from ccdf.data.datasets import GaussianFieldDataset
from ccdf.lightning.data import StepDataModule
from ccdf.lightning.diffusion_module import DiffusionModule
from ccdf.schedules import DiscreteVP
from tests.helpers import H, field_prior, tiny_unet


class FirstStepRecorder(L.Callback):
    """Saves each process's first-step loss and (all-reduced) gradients."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step == 0:
            grads = {n: p.grad.detach().clone() for n, p in pl_module.net.named_parameters() if p.grad is not None}
            torch.save(grads, Path(self.out) / f"grads_rank{trainer.global_rank}.pt")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 1:
            torch.save(
                {"loss": float(outputs["loss"]), "index": batch["index"]},
                Path(self.out) / f"loss_rank{trainer.global_rank}.pt",
            )


def run(out: Path, devices: int, strategy: str) -> None:
    out.mkdir()
    torch.manual_seed(0)
    module = DiffusionModule(tiny_unet(), DiscreteVP.linear(), ema_decay=0.9)
    data = StepDataModule(GaussianFieldDataset(field_prior(), H, length=64, seed=0), global_batch=8, max_steps=3)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_steps=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
        callbacks=[FirstStepRecorder(str(out))],
    )
    trainer.fit(module, datamodule=data)


@pytest.mark.e2e  # spawns two processes (make test-e2e)
def test_two_process_gloo_run_matches_one_process(tmp_path):
    run(tmp_path / "one", 1, "auto")
    run(tmp_path / "two", 2, "ddp_spawn")
    single = torch.load(tmp_path / "one" / "grads_rank0.pt", weights_only=True)
    for rank in (0, 1):
        grads = torch.load(tmp_path / "two" / f"grads_rank{rank}.pt", weights_only=True)
        assert set(grads) == set(single)
        for name, g in single.items():
            torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6, msg=name)
    one = torch.load(tmp_path / "one" / "loss_rank0.pt", weights_only=True)
    two = [torch.load(tmp_path / "two" / f"loss_rank{r}.pt", weights_only=True) for r in (0, 1)]
    # the two shards partition the global batch, and their mean loss is the global loss
    assert sorted(two[0]["index"].tolist() + two[1]["index"].tolist()) == sorted(one["index"].tolist())
    assert (two[0]["loss"] + two[1]["loss"]) / 2 == pytest.approx(one["loss"], rel=1e-5)
