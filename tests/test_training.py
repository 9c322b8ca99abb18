"""Training losses against closed forms (Gaussian fields), EMA, step-indexed data, and that loss falls."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch

from ccdf.data.datasets import GaussianFieldDataset
from ccdf.lightning.data import StepBatchSampler, StepDataModule
from ccdf.lightning.diffusion_module import DiffusionModule
from ccdf.schedules import VE, DiscreteVP
from ccdf.training import EMA, ve_dsm_loss, vp_eps_loss
from ccdf.utils.rng import per_sample_generators
from tests.helpers import H, field_prior, gen, tiny_unet


def exact_eps_net(prior, schedule: DiscreteVP):
    """eps_hat = E[eps | x_t] for the Gaussian field: (x_t - a x0_hat) / s."""

    def net(x_t, index):
        t = (index.double() + 1) / schedule.num_train_steps
        a, s = schedule.alpha(t), schedule.sigma(t)
        x0_hat = prior.denoise(x_t.double(), a, s)
        return ((x_t.double() - a.reshape(-1, 1, 1, 1) * x0_hat) / s.reshape(-1, 1, 1, 1)).to(x_t.dtype)

    return net


def test_vp_eps_loss_of_the_exact_predictor_matches_closed_form():
    """E||eps - E[eps|x_t]||^2 / n = mean_k a^2 P_k / (a^2 P_k + s^2), averaged over the index."""
    prior, schedule = field_prior(), DiscreteVP.linear()
    m = 4000
    x0 = prior.sample(m, H, H, gen(0))
    losses = vp_eps_loss(exact_eps_net(prior, schedule), schedule, x0, per_sample_generators(0, range(m)))
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    a2, s2 = schedule.alpha(t) ** 2, schedule.sigma(t) ** 2
    p = prior.power(H, H).reshape(-1)
    expected = (a2[:, None] * p / (a2[:, None] * p + s2[:, None])).mean()
    # per-item losses are bounded by ~3 (chi-square / n); s.e. of the mean <= std / sqrt(m)
    assert abs(float(losses.mean()) - float(expected)) < 5 * float(losses.std()) / math.sqrt(m)


def test_ve_dsm_loss_of_the_exact_score_matches_closed_form():
    """E||sigma s + z||^2 / n = mean_k P_k / (P_k + sigma^2), averaged over t ~ U(t_min, 1)."""
    prior, schedule = field_prior(), VE(0.01, 50.0)
    m = 4000

    def score(x, sigma):
        s = sigma.double()
        return ((prior.denoise(x.double(), torch.ones_like(s), s) - x.double()) / s.reshape(-1, 1, 1, 1) ** 2).float()

    x0 = prior.sample(m, H, H, gen(1), dtype=torch.float32)
    losses = ve_dsm_loss(score, schedule, x0, per_sample_generators(1, range(m)))
    t = torch.linspace(1e-5, 1, 20001, dtype=torch.float64)
    s2 = schedule.sigma(t) ** 2
    p = prior.power(H, H).reshape(-1)
    expected = (p / (p + s2[:, None])).mean()
    assert abs(float(losses.mean()) - float(expected)) < 5 * float(losses.std()) / math.sqrt(m)


def test_hybrid_loss_vb_term_vanishes_for_the_true_posterior():
    """With eps_hat = eps and the learned variance at beta-tilde (v = -1), the KL term is 0 (i > 1)."""
    schedule = DiscreteVP.linear()
    x0 = torch.rand(64, 1, H, H, generator=gen(2)) * 2 - 1

    def true_net(x_t, index):
        t = (index.double() + 1) / 1000
        a, s = schedule.alpha(t).reshape(-1, 1, 1, 1), schedule.sigma(t).reshape(-1, 1, 1, 1)
        eps = (x_t.double() - a * x0.double()) / s
        return torch.cat([eps.float(), -torch.ones_like(x_t)], dim=1)

    gens = per_sample_generators(3, range(64))
    hybrid = vp_eps_loss(true_net, schedule, x0, gens, learn_sigma=True)
    idx = torch.stack(
        [(torch.rand((), generator=g, dtype=torch.float64) * 1000).floor() for g in per_sample_generators(3, range(64))]
    )
    keep = idx > 0
    assert keep.sum() > 50
    assert float(hybrid[keep].abs().max()) < 1e-4
    with pytest.raises(ValueError, match="output channels"):
        vp_eps_loss(lambda x, i: x, schedule, x0, gens, learn_sigma=True)


def test_ema():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.5, warmup=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    before = ema.shadows()[0].clone()
    ema.update(net)
    torch.testing.assert_close(ema.shadows()[0], 0.5 * before + 0.5)
    other = torch.nn.Linear(2, 1)
    ema.copy_to(other)
    torch.testing.assert_close(other.weight, ema.shadows()[0])
    assert set(ema.state_dict_for(net)) == set(net.state_dict())


def test_step_batch_sampler_is_a_function_of_the_step():
    full = list(StepBatchSampler(10, 4, 6, seed=3))
    assert len(full) == 6 and all(len(b) == 4 for b in full)
    # epochs are permutations: the first 10 positions cover every item once
    flat = [i for b in full for i in b]
    assert sorted(flat[:10]) == list(range(10))
    resumed = list(StepBatchSampler(10, 4, 6, seed=3, start_step=2))
    assert resumed == full[2:]
    shards = [list(StepBatchSampler(10, 4, 6, seed=3, rank=r, world_size=2)) for r in range(2)]
    for step in range(6):
        assert sorted(shards[0][step] + shards[1][step]) == sorted(full[step])
    with pytest.raises(ValueError, match="divisible"):
        StepBatchSampler(10, 3, 6, world_size=2)


def fit(module, steps: int, ckpt_path=None, default_root_dir=None):
    data = StepDataModule(GaussianFieldDataset(field_prior(), H, length=512, seed=0), global_batch=16, max_steps=steps)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=default_root_dir,
        enable_checkpointing=default_root_dir is not None,
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.e2e  # 60 optimiser steps: long training (make test-e2e)
def test_training_loss_falls():
    torch.manual_seed(0)
    module = DiffusionModule(
        tiny_unet(),
        DiscreteVP.linear(),
        loss="vp_eps",
        ema_decay=0.99,
        optimizer=lambda p: torch.optim.Adam(p, lr=2e-3),
    )
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    data = StepDataModule(GaussianFieldDataset(field_prior(), H, length=512, seed=0), global_batch=32, max_steps=60)
    L.Trainer(
        accelerator="cpu",
        max_steps=60,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        enable_checkpointing=False,
        callbacks=[Record()],
    ).fit(module, datamodule=data)
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10, losses


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    k = 4
    torch.manual_seed(0)
    straight = DiffusionModule(tiny_unet(), DiscreteVP.linear(), ema_decay=0.9, warmup_steps=3)
    torch.manual_seed(0)
    first = DiffusionModule(tiny_unet(), DiscreteVP.linear(), ema_decay=0.9, warmup_steps=3)
    fit(straight, 2 * k)
    trainer = fit(first, k, default_root_dir=tmp_path)
    ckpt = trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path
    assert ckpt, "a checkpoint was written"
    torch.manual_seed(123)  # a different global state must not matter
    resumed = DiffusionModule(tiny_unet(), DiscreteVP.linear(), ema_decay=0.9, warmup_steps=3)
    fit(resumed, 2 * k, ckpt_path=ckpt)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


class IsotropicScore(torch.nn.Module):
    """The exact score of N(0, v I) under VE noise sigma: s(x, sigma) = -x / (v + sigma^2)."""

    def __init__(self, var: float = 0.25) -> None:
        super().__init__()
        self.log_var = torch.nn.Parameter(torch.tensor(math.log(var)))

    def forward(self, x, sigma):
        return -x / (self.log_var.exp() + sigma.reshape(-1, 1, 1, 1) ** 2)


@pytest.mark.parametrize("loss", ["ve_dsm", "vp_eps"])
def test_sample_grid_uses_the_models_own_denoiser_and_step(tmp_path, loss):
    """The training sample grid of a VE score model samples with the score adapter and the VE predictor.
    Before: SampleGrid always wrapped the net in EpsDenoiser, which refuses a VE schedule (TypeError)."""
    from types import SimpleNamespace

    from PIL import Image

    from ccdf.data.transforms import to_unit
    from ccdf.denoisers.adapters import EpsDenoiser, VEScoreDenoiser
    from ccdf.lightning.callbacks import SampleGrid
    from ccdf.operators import Inpainting
    from ccdf.sampling import sample_ccdf
    from ccdf.utils.vis import image_grid

    if loss == "ve_dsm":
        net, schedule, adapter, step = IsotropicScore(), VE(0.01, 10.0), VEScoreDenoiser, "ancestral"
    else:
        net, schedule, adapter, step = tiny_unet(), DiscreteVP.linear(), EpsDenoiser, "ddim"
    module = DiffusionModule(net, schedule, loss=loss, ema_decay=0.9)
    grid = SampleGrid(tmp_path, (1, H, H), every_n_steps=1, num=3, num_steps=20, seed=7)
    grid._sample(SimpleNamespace(is_global_zero=True, global_step=5, loggers=[]), module)

    op = Inpainting(torch.zeros(H, H))
    x = torch.zeros(3, 1, H, H)
    expected = sample_ccdf(adapter(net, schedule), schedule, op, op(x), x, t0=1.0, num_steps=20, step=step,
                           dc="none", generator=per_sample_generators(7, range(3)))  # fmt: skip
    assert isinstance(module.denoiser(), adapter)
    with Image.open(tmp_path / "step0000005.png") as png:
        got = np.asarray(png).astype(int)
    want = np.asarray(image_grid([[to_unit(s) for s in expected]])).astype(int)
    # the same computation twice on one CPU; a one-level PNG rounding difference is allowed all the same
    assert got.shape == want.shape and np.abs(got - want).max() <= 1
    if loss == "ve_dsm":  # samples of N(0, 0.25): the exact score makes the predictor land near the prior
        assert 0.1 < float(expected.var()) < 0.5
