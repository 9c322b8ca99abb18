"""Schedules: VP identities, the discrete DDPM recurrence, IDDPM respacing, VE levels, q(x_t | x0)."""

from __future__ import annotations

import math

import pytest
import torch

from ccdf.schedules import (
    VE,
    DiscreteVP,
    cosine_betas,
    forward_diffuse,
    linear_betas,
    space_timesteps,
    uniform_timesteps,
)
from tests.conftest import gen


@pytest.mark.parametrize("schedule", [DiscreteVP.linear(), DiscreteVP.cosine(), DiscreteVP.linear(250)])
def test_vp_identities_and_monotonicity(schedule):
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    a, s = schedule.alpha(t), schedule.sigma(t)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(t))
    assert a[0] == 1 and s[0] == 0
    assert bool((a[1:] <= a[:-1]).all()) and bool((s[1:] >= s[:-1]).all())


def test_discrete_vp_matches_ddpm_recurrence_on_a_toy():
    betas = torch.linspace(0.05, 0.4, 10, dtype=torch.float64)
    schedule = DiscreteVP(betas)
    abar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, 11, dtype=torch.float64) / 10
    torch.testing.assert_close(schedule.alpha(t) ** 2, abar)
    torch.testing.assert_close(schedule.to_index(t), torch.arange(10))


def test_linear_and_cosine_betas():
    b = linear_betas(1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    assert linear_betas(250)[-1] == pytest.approx(0.08)  # guided-diffusion's 1000 / N scaling
    c = cosine_betas(1000)
    abar = torch.cumprod(1 - c, 0)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert abar[499].item() == pytest.approx(f(0.5) / f(0), rel=1e-9)
    assert c.max() <= 0.999


@pytest.mark.parametrize("num_steps,t0", [(1000, 0.1), (1000, 1.0), (100, 0.2), (37, 0.5), (20, 0.05)])
def test_timesteps_grid(num_steps, t0):
    ts = uniform_timesteps(num_steps, t0)
    k = round(t0 * num_steps)
    assert ts.shape == (k + 1,) and ts[-1] == 0 and ts[0] == pytest.approx(k / num_steps)
    assert bool((ts[1:] < ts[:-1]).all())


def test_space_timesteps_matches_iddpm_examples():
    s100 = space_timesteps(1000, "100")
    assert len(s100) == 100 and s100[:3] == [0, 10, 20] and s100[-3:] == [979, 989, 999]
    s250 = space_timesteps(1000, "250")
    assert s250[:3] == [0, 4, 8] and s250[-2:] == [995, 999]
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(100, "10,10") == sorted(set(space_timesteps(100, "10,10")))
    with pytest.raises(ValueError):
        space_timesteps(10, "20")


def test_iddpm_spacing_grid_hits_the_kept_indices():
    schedule = DiscreteVP.linear(spacing="iddpm")
    ts = schedule.timesteps(100, 1.0)
    assert ts.shape == (101,) and ts[-1] == 0
    torch.testing.assert_close(schedule.to_index(ts[:-1]).flip(0), torch.tensor(space_timesteps(1000, "100")))
    # respaced betas: 1 - abar(t) / abar(s) = 1 - abar[tau_k] / abar[tau_{k-1}]
    abar = torch.cumprod(1 - schedule.betas, 0)
    kept = space_timesteps(1000, "100")
    t, s = ts[0], ts[1]
    torch.testing.assert_close(1 - schedule.alpha(t) ** 2 / schedule.alpha(s) ** 2, 1 - abar[kept[-1]] / abar[kept[-2]])
    short = schedule.timesteps(100, 0.2)
    assert short.shape == (21,) and torch.equal(short, ts[-21:])


def test_ve_levels():
    ve = VE(0.01, 378.0)
    assert ve.sigma(0.0) == 0 and ve.sigma(1.0).item() == pytest.approx(378.0)
    assert ve.sigma(0.5).item() == pytest.approx(math.sqrt(0.01 * 378.0))
    assert ve.alpha(torch.tensor([0.3, 0.9])).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        VE(1.0, 0.5)


@pytest.mark.parametrize("schedule", [DiscreteVP.linear(), VE(0.01, 50.0)])
def test_forward_diffuse_moments(schedule):
    x0 = torch.full((20000, 1, 1, 2), 0.7, dtype=torch.float64)
    t = 0.3
    xt = forward_diffuse(schedule, x0, t, gen(0))
    a, s = schedule.alpha(t).item(), schedule.sigma(t).item()
    # s.e. of the mean: s / sqrt(20000); of the std: s / sqrt(40000)
    assert abs(xt.mean().item() - a * 0.7) < 5 * s / math.sqrt(40000)
    assert abs(xt.std().item() - s) < 5 * s / math.sqrt(80000)
    torch.testing.assert_close(forward_diffuse(schedule, x0[:3], 0.0, gen(0)), x0[:3])
