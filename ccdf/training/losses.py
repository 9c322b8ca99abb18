"""Training losses (plain functions of a net, a schedule, clean data and a generator).

* :func:`vp_eps_loss`: DDPM's epsilon-prediction MSE (Ho et al. 2020, "L_simple"), plus IDDPM's
  variational term for nets that learn the variance ("hybrid", Nichol & Dhariwal 2021, eq. 16).
* :func:`ve_dsm_loss`: denoising score matching for continuous VE score nets (Song et al. 2021,
  eq. 7 with lambda(t) = sigma(t)^2).
* :func:`initializer_l1_loss`: L1 of a feed-forward initializer (ESRGAN's pixel loss, fastMRI's
  U-Net loss).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ccdf.schedules.base import Schedule
from ccdf.schedules.vp import DiscreteVP
from ccdf.utils.rng import Generator, rand, randn_like
from ccdf.utils.tensor import bcast


def mean_flat(x: Tensor) -> Tensor:
    """Mean over all but the batch axis, ``[B]``."""
    return x.flatten(1).mean(1)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log p(x) of 8-bit data in [-1, 1] under a Gaussian discretised to bins of width 2/255 (DDPM's decoder)."""
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_std_normal_cdf(inv_std * (centred + 1.0 / 255))
    cdf_min = _approx_std_normal_cdf(inv_std * (centred - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_probs = torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log((cdf_plus - cdf_min).clamp(min=1e-12))),
    )
    return log_probs


def vp_eps_loss(
    net: Callable[[Tensor, Tensor], Tensor],
    schedule: DiscreteVP,
    x0: Tensor,
    generator: Generator = None,
    *,
    learn_sigma: bool = False,
    vb_weight: float | None = None,
) -> Tensor:
    r"""DDPM / IDDPM training loss, one value per item ``[B]``.

    Draws the chain index i uniformly in {1..N} (the net sees guided-diffusion's ``i - 1``),
    x_i = sqrt(abar_i) x0 + sqrt(1 - abar_i) eps, and returns ``mean((eps - eps_hat)^2)``. With
    ``learn_sigma`` the net outputs ``[eps, v]`` (2C channels) and IDDPM's hybrid loss adds
    ``vb_weight * L_vb`` (default N / 1000, IDDPM's ``rescale_learned_sigmas``): the KL between
    q(x_{i-1} | x_i, x0) and the model's Gaussian with the mean from a *frozen* eps and the
    learned-range variance, in bits per dimension; at i = 1 the discretised decoder NLL.
    """
    n = schedule.num_train_steps
    b = x0.shape[0]
    u = rand((b,), generator=generator, dtype=torch.float64)
    idx = (u * n).floor().long().clamp(max=n - 1) + 1  # 1..N
    t = idx.to(torch.float64) / n
    eps = randn_like(x0, generator)
    a_t, s_t = schedule.alpha(t), schedule.sigma(t)
    x_t = bcast(a_t, x0) * x0 + bcast(s_t, x0) * eps
    out = net(x_t, (idx - 1).to(x0.device))
    c = x0.shape[1]
    if learn_sigma:
        if out.shape[1] != 2 * c:
            raise ValueError(f"learn_sigma needs a net with {2 * c} output channels, got {out.shape[1]}")
        eps_hat, v = out[:, :c], out[:, c:]
    else:
        if out.shape != x0.shape:
            raise ValueError(f"net output {tuple(out.shape)} does not match the data {tuple(x0.shape)}")
        eps_hat, v = out, None
    loss = mean_flat((eps - eps_hat) ** 2)
    if v is None:
        return loss
    # IDDPM's variational bound term with a stop-gradient on the mean.
    s = (idx - 1).to(torch.float64) / n
    a_s, s_s = schedule.alpha(s), schedule.sigma(s)
    var_ts = s_t**2 - (a_t / a_s) ** 2 * s_s**2  # beta_i
    var_post = var_ts * s_s**2 / s_t**2  # beta-tilde_i
    x0_frozen = (x_t - bcast(s_t, x0) * eps_hat.detach()) / bcast(a_t, x0)
    coef_x0 = bcast(a_s * var_ts / s_t**2, x0)
    coef_xt = bcast((a_t / a_s) * s_s**2 / s_t**2, x0)
    model_mean = coef_x0 * x0_frozen + coef_xt * x_t
    true_mean = coef_x0 * x0 + coef_xt * x_t
    # beta-tilde_1 = 0: IDDPM clips its log at the value of the next step
    var_post_next = _beta_tilde(schedule, idx.clamp(min=2))
    min_log = bcast(torch.where(idx == 1, var_post_next, var_post).log(), x0)
    max_log = bcast(var_ts.log(), x0)
    frac = (v + 1) / 2
    model_logvar = frac * max_log + (1 - frac) * min_log
    true_logvar = bcast(torch.where(idx == 1, var_post_next, var_post).log(), x0)
    kl = mean_flat(normal_kl(true_mean, true_logvar, model_mean, model_logvar)) / math.log(2.0)
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar)) / math.log(2.0)
    vb = torch.where(idx.to(x0.device) == 1, nll, kl)
    weight = n / 1000.0 if vb_weight is None else vb_weight
    return loss + weight * vb


def _beta_tilde(schedule: DiscreteVP, idx: Tensor) -> Tensor:
    t = idx.to(torch.float64) / schedule.num_train_steps
    s = (idx - 1).to(torch.float64) / schedule.num_train_steps
    a_t, s_t, a_s, s_s = schedule.alpha(t), schedule.sigma(t), schedule.alpha(s), schedule.sigma(s)
    return (s_t**2 - (a_t / a_s) ** 2 * s_s**2) * s_s**2 / s_t**2


def ve_dsm_loss(
    net: Callable[[Tensor, Tensor], Tensor],
    schedule: Schedule,
    x0: Tensor,
    generator: Generator = None,
    *,
    t_min: float = 1e-5,
) -> Tensor:
    r"""Denoising score matching for a continuous VE score net s(x, sigma), per item ``[B]``.

    t ~ U(t_min, 1), x = x0 + sigma(t) z, loss = mean((sigma s(x, sigma) + z)^2): score-SDE's
    ``get_sde_loss_fn`` with lambda(t) = sigma(t)^2 and ``reduce_mean=True``.
    """
    b = x0.shape[0]
    t = t_min + (1 - t_min) * rand((b,), generator=generator, dtype=torch.float64)
    sigma = schedule.sigma(t)
    z = randn_like(x0, generator)
    x = x0 + bcast(sigma, x0) * z
    score = net(x, sigma.to(device=x0.device, dtype=x0.dtype))
    if score.shape != x0.shape:
        raise ValueError(f"score net output {tuple(score.shape)} does not match the data {tuple(x0.shape)}")
    return mean_flat((bcast(sigma, x0) * score + z) ** 2)


def initializer_l1_loss(net: Callable[[Tensor], Tensor], inputs: Tensor, x0: Tensor) -> Tensor:
    """Mean absolute error of ``net(inputs)`` against ``x0``, per item ``[B]``."""
    out = net(inputs)
    if out.shape != x0.shape:
        raise ValueError(f"initializer output {tuple(out.shape)} does not match the target {tuple(x0.shape)}")
    return mean_flat((out - x0).abs())
