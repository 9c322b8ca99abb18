"""The shipped demo prior loads through its config and denoises (a trained net, not random weights)."""

from __future__ import annotations

import torch

from ccdf.data import bundled_samples, stack_images
from ccdf.denoisers.adapters import demo_prior_path, load_demo_prior
from ccdf.schedules import DiscreteVP, forward_diffuse
from tests.helpers import gen


def test_demo_prior_is_shipped_small_and_denoises():
    path = demo_prior_path()
    assert path.is_file() and path.stat().st_size < 10 * 2**20
    schedule = DiscreteVP.linear()
    denoiser = load_demo_prior(schedule)
    x0 = stack_images(bundled_samples("ffhq", "eval", size=32))
    t = torch.full((len(x0),), 0.1)
    x_t = forward_diffuse(schedule, x0, t, gen(0))
    with torch.no_grad():
        x0_hat = denoiser(x_t, t).x0_hat
    noisy_mse = float((x_t / schedule.alpha(0.1).float() - x0).pow(2).mean())
    # a trained denoiser removes most of the noise at this level (sigma/alpha ~ 0.34)
    assert float((x0_hat - x0).pow(2).mean()) < 0.5 * noisy_mse
