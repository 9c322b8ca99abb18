r"""Reverse steps from t to s < t, written for any (alpha, sigma) schedule.

Notation: a_t = alpha(t), s_t = sigma(t); the transition q(x_t | x_s) has mean
(a_t / a_s) x_s and variance :math:`\sigma_{ts}^2 = s_t^2 - (a_t/a_s)^2 s_s^2` (for a discrete
VP chain this is the (respaced) beta, for VE it is s_t^2 - s_s^2), and the posterior
q(x_s | x_t, x0) has variance :math:`\tilde\sigma^2 = \sigma_{ts}^2 s_s^2 / s_t^2` (beta-tilde).
Every step returns x_s; no noise is added on the last step (s = 0).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ccdf.denoisers.base import DenoiserOutput
from ccdf.schedules.base import Schedule, memoized
from ccdf.utils.rng import Generator, randn_like
from ccdf.utils.tensor import batch_sq_norm, bcast, bcast_key

StepFn = Callable[..., Tensor]
VARIANCES = ("beta", "beta_tilde", "learned")


def _coefs(schedule: Schedule, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(a_t, s_t, a_s, s_s, sigma_ts^2, beta-tilde), float64, once per pair of grid times (the schedule's memo)."""
    return memoized(schedule, "step_coefs", (t, s), lambda t, s: _coefs_of(schedule, t, s))


def _coefs_of(schedule: Schedule, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    a_t, s_t, a_s, s_s = schedule.alpha(t), schedule.sigma(t), schedule.alpha(s), schedule.sigma(s)
    var_ts = (s_t**2 - (a_t / a_s) ** 2 * s_s**2).clamp(min=0)
    var_post = var_ts * s_s**2 / s_t**2
    return a_t, s_t, a_s, s_s, var_ts, var_post


def ancestral_step(
    schedule: Schedule,
    x: Tensor,
    out: DenoiserOutput,
    t: Tensor,
    s: Tensor,
    *,
    variance: str = "beta",
    generator: Generator = None,
    **_: object,
) -> Tensor:
    r"""DDPM ancestral step (Ho et al. 2020, eq. 6-7; IDDPM learned range, Nichol & Dhariwal eq. 15).

    Mean: the posterior mean of q(x_s | x_t, x0_hat),
    :math:`\mu = \frac{a_s \sigma_{ts}^2}{s_t^2} \hat x_0 + \frac{(a_t/a_s) s_s^2}{s_t^2} x_t`.
    Variance: ``beta`` (sigma_ts^2, DDPM's "fixed large"; for VE this is score-SDE's reverse
    diffusion predictor), ``beta_tilde`` (fixed small) or ``learned`` (IDDPM's
    ``exp(f log beta + (1 - f) log beta_tilde)``, f = ``out.var_frac``, any real value: nets output
    v = 2f - 1 beyond [-1, 1]). The last step (s = 0) returns the mean, with no noise, whatever the
    variance (guided-diffusion's ``p_sample``; it still draws that step's noise, and so does this).
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {VARIANCES}")

    def coefs(t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor | None, bool | None]:
        a_t, s_t, a_s, s_s, var_ts, var_post = _coefs(schedule, t, s)
        std = {"beta": var_ts, "beta_tilde": var_post}.get(variance)
        host = s.ndim == 0 and s.device.type == "cpu"  # a host time (the solvers'): decided on the host, no sync
        return (bcast(a_s * var_ts / s_t**2, x), bcast((a_t / a_s) * s_s**2 / s_t**2, x),
                None if std is None else bcast(std.sqrt(), x), bool(s > 0) if host else None)  # fmt: skip

    c_x0, c_x, std, noisy_host = memoized(schedule, ("ancestral", variance, *bcast_key(x)), (t, s), coefs)
    mean = c_x0 * out.x0_hat + c_x * x
    if variance == "learned":
        a_t, s_t, a_s, s_s, var_ts, var_post = _coefs(schedule, t, s)
        if out.var_frac is None:
            raise ValueError("variance='learned' needs a denoiser that predicts the variance (IDDPM learn_sigma)")
        # log beta_tilde is -inf on the last step (s = 0), where guided-diffusion uses its clipped
        # posterior log-variance; no noise is added there, so any finite value serves: log beta keeps
        # the exponent finite for every var_frac (v > 1.54 once overflowed float32, and inf * 0 = NaN).
        var_lo = torch.where(var_post > 0, var_post, var_ts)
        log_hi = bcast(var_ts.clamp(min=1e-300).log(), x)
        log_lo = bcast(var_lo.clamp(min=1e-300).log(), x)
        std = torch.exp(0.5 * (out.var_frac * log_hi + (1 - out.var_frac) * log_lo))
    z = randn_like(x, generator)  # drawn on the last step too (as guided-diffusion's p_sample does)
    if noisy_host is not None:  # z is this step's own: scaled and added in place (mean + std z, the same bits)
        return z.mul_(std).add_(mean) if noisy_host else mean
    s = torch.as_tensor(s)
    noisy = bcast((s > 0).to(torch.float64), x) > 0
    return torch.where(noisy, mean + std * z, mean)  # the mean alone on the last step: never inf * 0


def ddim_step(
    schedule: Schedule,
    x: Tensor,
    out: DenoiserOutput,
    t: Tensor,
    s: Tensor,
    *,
    eta: float = 0.0,
    generator: Generator = None,
    **_: object,
) -> Tensor:
    r"""DDIM step (Song, Meng & Ermon 2021, eq. 12).

    :math:`x_s = a_s \hat x_0 + \sqrt{s_s^2 - \sigma^2}\,\hat\epsilon + \sigma z`.

    :math:`\hat\epsilon = (x_t - a_t \hat x_0)/s_t` and :math:`\sigma = \eta\,\tilde\sigma`; eta = 0 is
    deterministic, eta = 1 is DDPM with the beta-tilde variance.
    """

    def coefs(t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        a_t, s_t, a_s, s_s, _, var_post = _coefs(schedule, t, s)
        var_eta = eta**2 * var_post
        return (bcast(a_t, x), bcast(s_t, x), bcast(a_s, x), bcast((s_s**2 - var_eta).clamp(min=0).sqrt(), x),
                bcast(var_eta.sqrt(), x))  # fmt: skip

    c_a_t, c_s_t, c_a_s, c_eps, c_z = memoized(schedule, ("ddim", eta, *bcast_key(x)), (t, s), coefs)
    eps_hat = (x - c_a_t * out.x0_hat) / c_s_t
    x_s = c_a_s * out.x0_hat + c_eps * eps_hat
    if eta > 0:
        x_s = x_s + c_z * randn_like(x, generator)
    return x_s


def langevin_correct(
    schedule: Schedule,
    x: Tensor,
    out: DenoiserOutput,
    t: Tensor,
    s: Tensor,
    *,
    snr: float,
    step_size: str = "sigma",
    generator: Generator = None,
) -> Tensor:
    r"""One Langevin corrector step at level t (Song et al. 2021, Alg. 4-5).

    score = (a_t x0_hat - x) / s_t^2 and x <- x + eps * score + sqrt(2 eps) z, with
    alpha = a_t^2 / a_s^2 (1 for VE) and the step size eps chosen by ``step_size``:

    * ``"sigma"`` (default): eps = 2 alpha (snr s_t)^2, the annealed-Langevin rule of SMLD
      (Song & Ermon 2019). It does not depend on the state, so each corrector step is an
      unadjusted Langevin step whose stationary law deviates from p_t by O(snr^2) only.
    * ``"norm"``: eps = 2 alpha (snr ||z|| / ||score||)^2, score-SDE's rule, with norms per
      item (score-SDE averages them over the batch, which would make an image's result depend
      on its batch). In image dimensions ||score|| ~ sqrt(d) / s_t at high noise, so the two
      agree there; in low dimensions the state-dependent step inflates the sampled variance
      (measured: +33% at d = 16, +15% at d = 64 for a Gaussian prior). On complex (MRI) images
      the real and imaginary parts are corrected separately, each with its own step size from
      its own ||z|| and ||score|| (score-MRI's ``get_pc_fouriercs_RI`` runs the corrector on
      ``real(x)`` and ``imag(x)`` in turn). One joint step size for both parts (this function
      before) moves an update by 20% or more of its size when the parts' norms differ (over 50%
      on the test fixture, whose Im is five times smaller than its Re).
    """
    if step_size not in ("sigma", "norm"):
        raise ValueError(f"unknown corrector step_size {step_size!r}; choose 'sigma' or 'norm'")

    def coefs(t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        a_t, s_t, a_s = schedule.alpha(t), schedule.sigma(t), schedule.alpha(s)
        alpha = (a_t / a_s) ** 2
        if step_size != "sigma":
            return bcast(a_t, x), bcast(s_t**2, x), alpha, None, None
        eps = 2 * alpha * (snr * s_t) ** 2 * torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        return bcast(a_t, x), bcast(s_t**2, x), alpha, bcast(eps, x), bcast((2 * eps).sqrt(), x)

    c_a_t, c_var, alpha, c_eps, c_noise = memoized(schedule, ("langevin", step_size, snr, *bcast_key(x)), (t, s), coefs)
    score = c_a_t * out.x0_hat
    score = score.sub_(x).div_(c_var) if not score.requires_grad else (score - x) / c_var  # (a x0 - x) / s^2
    z = randn_like(x, generator)
    if step_size == "norm":
        if torch.is_complex(x):  # score-MRI: Re and Im as two images, each with its own step size
            real = langevin_norm_update(x.real, score.real, z.real, alpha, snr)
            return torch.complex(real, langevin_norm_update(x.imag, score.imag, z.imag, alpha, snr))
        return langevin_norm_update(x, score, z, alpha, snr)
    # x + eps score + sqrt(2 eps) z, the same operations in the same order, with fewer temporaries
    return (c_eps * score).add_(x).add_(z.mul_(c_noise))


def langevin_norm_update(x: Tensor, score: Tensor, z: Tensor, alpha: Tensor, snr: float) -> Tensor:
    """score-SDE's ``LangevinCorrector`` update of real ``x`` ``[B, ...]`` with per-item norms:
    eps = 2 alpha (snr ||z|| / ||score||)^2, x + eps score + sqrt(2 eps) z."""
    ratio = batch_sq_norm(z).sqrt() / batch_sq_norm(score).sqrt().clamp(min=1e-30)
    eps = 2 * alpha * (snr * ratio.to(torch.float64)) ** 2
    return x + bcast(eps, x) * score + bcast((2 * eps).sqrt(), x) * z


STEPS: dict[str, StepFn] = {"ancestral": ancestral_step, "ddpm": ancestral_step, "ddim": ddim_step}
CORRECTORS: dict[str, StepFn] = {"langevin": langevin_correct}
