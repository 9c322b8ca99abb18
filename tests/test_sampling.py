"""Samplers against exact answers with Gaussian priors (the exact denoiser is known in closed form).

Statistical tolerances: with M independent samples, a whitened coordinate's sample mean has
standard error 1/sqrt(M) and its sample variance 1 +- sqrt(2/M); a sample covariance entry of
two independent unit coordinates has s.e. 1/sqrt(M). We compare each of k such statistics with
a bound of 4.5 standard errors, which a correct sampler exceeds with probability below
k * 7e-6 (Bonferroni; k <= 136 here, so < 0.1%), while the discretisation errors we guard
against (wrong variance, wrong mean, wrong step) give tens of standard errors.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ccdf.denoisers import CountingDenoiser, DenoiserOutput, DenseGaussianPrior, GaussianDenoiser
from ccdf.denoisers.gaussian import StationaryGaussianPrior
from ccdf.operators import Inpainting, SingleCoilMRI, fft2c
from ccdf.sampling import ancestral_step, ddim_step, expected_nfe, sample_ccdf
from ccdf.schedules import VE, DiscreteVP
from ccdf.utils.rng import per_sample_generators
from tests.helpers import gen, periodic_cov

Z = 4.5
N_PIX = 16
M = 3000


def dense_prior() -> DenseGaussianPrior:
    mu = torch.linspace(-0.3, 0.3, N_PIX, dtype=torch.float64)
    return DenseGaussianPrior(mu, periodic_cov(N_PIX), (1, 1, N_PIX))


def whitened(x: torch.Tensor, mean: torch.Tensor, evecs: torch.Tensor, evals: torch.Tensor) -> torch.Tensor:
    return ((x.reshape(x.shape[0], -1) - mean) @ evecs) / evals.sqrt()


def assert_standard_normal(w: torch.Tensor) -> None:
    """Rows of w should be iid N(0, I): check means, variances and covariances (see module doc)."""
    m, k = w.shape
    mean_z = w.mean(0) * math.sqrt(m)
    var_z = (w.var(0) - 1) / math.sqrt(2 / m)
    cov = torch.cov(w.T)
    off = (cov - torch.diag(torch.diag(cov)))[torch.triu_indices(k, k, 1).unbind()] * math.sqrt(m)
    assert mean_z.abs().max() < Z, f"mean off by {mean_z.abs().max():.2f} s.e."
    assert var_z.abs().max() < Z, f"variance off by {var_z.abs().max():.2f} s.e."
    assert off.abs().max() < Z, f"covariance off by {off.abs().max():.2f} s.e."


SAMPLERS = {
    "ddpm_beta": (DiscreteVP.linear, dict(step="ddpm", variance="beta")),
    "ddpm_beta_tilde": (DiscreteVP.linear, dict(step="ddpm", variance="beta_tilde")),
    "ddim_eta0": (DiscreteVP.linear, dict(step="ddim", eta=0.0)),
    "ve_pc": (lambda: VE(0.01, 50.0), dict(step="ancestral", corrector="langevin", snr=0.16)),
}


def e2e_unless(names, keep):
    """``names`` as parameters; those not in ``keep`` run in make test-e2e (VE-PC's law is checked in make test by
    tests/test_theory_mc.py's box_ve_pc case)."""
    return [n if n in keep else pytest.param(n, marks=pytest.mark.e2e) for n in names]


@pytest.mark.parametrize("name", e2e_unless(SAMPLERS, keep=("ddpm_beta_tilde", "ddim_eta0")))
def test_unconditional_samples_match_prior(name):
    """t0 = 1 from x_init = 0, no data consistency: samples ~ N(mu, Sigma)."""
    make_schedule, kw = SAMPLERS[name]
    schedule = make_schedule()
    prior = dense_prior()
    z = torch.zeros(M, 1, 1, N_PIX, dtype=torch.float64)
    op = Inpainting(torch.ones(1, N_PIX))
    x = sample_ccdf(
        GaussianDenoiser(prior, schedule), schedule, op, z, z, t0=1.0, num_steps=1000, dc="none", generator=gen(1), **kw
    )
    assert_standard_normal(whitened(x, prior.mean, prior.evecs, prior.evals))


@pytest.mark.parametrize("name", e2e_unless(["ddpm_beta", "ddim_eta0", "ve_pc"], keep=("ddim_eta0",)))
def test_conditional_samples_match_posterior_commuting_pixel_mask(name):
    """Diagonal Sigma with a pixel mask (A commutes with Sigma): the replacement sampler is exact.

    Observed pixels equal y exactly; the missing ones are N(mu_i, Sigma_ii), independent of y.
    """
    make_schedule, kw = SAMPLERS[name]
    schedule = make_schedule()
    var = torch.linspace(0.05, 1.5, N_PIX, dtype=torch.float64)
    mu = torch.linspace(0.2, -0.2, N_PIX, dtype=torch.float64)
    prior = DenseGaussianPrior(mu, torch.diag(var), (1, 1, N_PIX))
    mask = (torch.arange(N_PIX) % 3 == 0).double().reshape(1, N_PIX)
    op = Inpainting(mask)
    x_true = prior.sample(1, gen(5)).expand(M, -1, -1, -1)
    y = op(x_true)
    x = sample_ccdf(
        GaussianDenoiser(prior, schedule), schedule, op, y, op.pinv(y), t0=1.0, num_steps=1000, generator=gen(2), **kw
    )
    assert torch.equal(op(x), y) if schedule.kind == "vp" else torch.allclose(op(x), y, atol=1e-12)
    # exact posterior of the missing pixels (closed form, also via the generic dense formula)
    a_mat = torch.diag(mask.reshape(-1))
    post_mean, post_cov = prior.posterior(a_mat, y[:1])
    keep = mask.reshape(-1) == 0
    torch.testing.assert_close(post_mean[0, keep], mu[keep])
    torch.testing.assert_close(post_cov[keep][:, keep], torch.diag(var[keep]))
    cov = post_cov[keep][:, keep]
    evals, evecs = torch.linalg.eigh(cov)
    xs = x.reshape(M, -1)[:, keep]
    assert_standard_normal(whitened(xs, post_mean[0, keep], evecs, evals))


@pytest.mark.e2e  # the longest Monte Carlo law test, about 20 s (make test-e2e)
def test_conditional_samples_match_posterior_stationary_prior_mri():
    """Stationary prior, complex images, Fourier-domain (k-space) mask: A commutes with Sigma.

    Exact posterior: measured k-space coefficients equal y; every unmeasured coefficient K is
    circular complex Gaussian with mean 0 and E|K|^2 = 2 P(k) (Re and Im images are iid with
    spectrum P), so |K|^2 / (2P) ~ Exp(1): mean 1, s.e. 1/sqrt(M).
    """
    h = w = 12
    m = 1000
    radii = torch.linspace(0, 0.7072, 32, dtype=torch.float64)
    log_power = torch.log(0.2 / (1 / 64 + radii**2) ** 1.5 / 300)[None]
    prior = StationaryGaussianPrior(torch.tensor([0.1]), torch.eye(1), radii, log_power)
    schedule = DiscreteVP.linear()
    op = SingleCoilMRI.cartesian(w, 3, 0.17, "uniform", seed=4)
    x_true = torch.complex(prior.sample(1, h, w, gen(0)), prior.sample(1, h, w, gen(1)))
    y = op(x_true).expand(m, -1, -1, -1)
    x = sample_ccdf(
        GaussianDenoiser(prior, schedule), schedule, op, y, op.pinv(y), t0=1.0, num_steps=500, generator=gen(3)
    )
    k = fft2c(x)
    mask = op.mask[0, 0].bool()
    torch.testing.assert_close(k[..., mask], y[..., mask], atol=1e-10, rtol=0)
    p = torch.fft.fftshift(prior.power(h, w)[0])[~mask]
    ku = k[:, 0][:, ~mask]
    ratio_z = ((ku.abs() ** 2).mean(0) / (2 * p) - 1) * math.sqrt(m)
    mean_z = ku.mean(0).abs() / (2 * p / m).sqrt()
    assert ratio_z.abs().max() < Z, ratio_z.abs().max()
    assert mean_z.max() < Z, mean_z.max()


@pytest.mark.parametrize("t0,n_corrector", [(0.1, 0), (0.37, 0), (1.0, 0), (0.2, 1), (0.05, 2)])
def test_nfe_counts(t0, n_corrector):
    schedule = DiscreteVP.linear()
    prior = dense_prior()
    counter = CountingDenoiser(GaussianDenoiser(prior, schedule))
    x = prior.sample(3, gen(0))
    op = Inpainting(torch.ones(1, N_PIX))
    sample_ccdf(
        counter,
        schedule,
        op,
        op(x),
        x,
        t0=t0,
        num_steps=1000,
        generator=gen(0),
        corrector="langevin" if n_corrector else None,
        n_corrector=n_corrector,
    )
    assert counter.calls == round(t0 * 1000) * (1 + n_corrector) == expected_nfe(t0, 1000, n_corrector)
    assert counter.items == 3 * counter.calls


def _setup():
    schedule = DiscreteVP.linear()
    prior = dense_prior()
    op = Inpainting((torch.arange(N_PIX) % 2 == 0).double().reshape(1, N_PIX))
    x = prior.sample(4, gen(0))
    return schedule, GaussianDenoiser(prior, schedule), op, op(x), op.pinv(op(x))


@pytest.mark.parametrize("kw", [dict(step="ddpm"), dict(step="ddim", eta=0.5), dict(corrector="langevin")])
def test_same_seed_same_output(kw):
    schedule, den, op, y, x_init = _setup()
    run = lambda s: sample_ccdf(den, schedule, op, y, x_init, t0=0.3, num_steps=100, generator=gen(s), **kw)  # noqa: E731
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_per_item_generators_make_batching_irrelevant_and_t0_batchable():
    """One batched pass with per-item t0 equals separate runs (per-item generators)."""
    schedule, den, op, y, x_init = _setup()
    t0s = [0.05, 0.3, 0.3, 0.12]
    batched = sample_ccdf(
        den, schedule, op, y, x_init, t0=torch.tensor(t0s), num_steps=100, generator=per_sample_generators(7, range(4))
    )
    for b, t0 in enumerate(t0s):
        alone = sample_ccdf(
            den,
            schedule,
            op,
            y[b : b + 1],
            x_init[b : b + 1],
            t0=t0,
            num_steps=100,
            generator=per_sample_generators(7, [b]),
        )
        torch.testing.assert_close(batched[b : b + 1], alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize("t0", [0.0, -0.1, 1.5, float("nan"), 0.0004])
def test_bad_t0_is_a_clear_error(t0):
    schedule, den, op, y, x_init = _setup()
    with pytest.raises(ValueError, match="t0"):
        sample_ccdf(den, schedule, op, y, x_init, t0=t0, num_steps=1000)


def test_shape_mismatches_are_clear_errors():
    schedule, den, op, y, x_init = _setup()
    with pytest.raises(ValueError, match="batch size"):
        sample_ccdf(den, schedule, op, y[:2], x_init, t0=0.1, num_steps=10)
    with pytest.raises(ValueError, match="expects"):
        sample_ccdf(den, schedule, Inpainting(torch.ones(1, 8)), y, x_init, t0=0.1, num_steps=10)
    with pytest.raises(ValueError, match="y has shape"):
        sample_ccdf(den, schedule, op, y[..., :8], x_init, t0=0.1, num_steps=10)
    with pytest.raises(ValueError, match="t0 values"):
        sample_ccdf(den, schedule, op, y, x_init, t0=[0.1, 0.2], num_steps=10)
    with pytest.raises(ValueError, match="unknown step"):
        sample_ccdf(den, schedule, op, y, x_init, t0=0.1, num_steps=10, step="heun")


def test_better_init_gives_smaller_error_at_small_t0():
    """CCDF's premise: started close, a short reverse run ends closer."""
    schedule, den, op, _, _ = _setup()
    prior = den.prior
    x_true = prior.sample(2000, gen(9))
    y = op(x_true)
    errs = []
    for scale in (0.1, 1.0):
        x_init = op.project(x_true + scale * torch.randn(x_true.shape, generator=gen(10), dtype=torch.float64), y)
        x = sample_ccdf(den, schedule, op, y, x_init, t0=0.05, num_steps=1000, generator=gen(11))
        errs.append(float((x - x_true).pow(2).mean()))
    assert errs[0] < 0.5 * errs[1]


def test_ddim_eta1_is_ddpm_with_beta_tilde():
    """DDIM with eta = 1 is the ancestral step with the posterior variance (identity, same noise)."""
    schedule = DiscreteVP.linear()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=gen(0))
    out = DenoiserOutput(torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=gen(1)))
    t, s = torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.48, dtype=torch.float64)
    a = ddim_step(schedule, x, out, t, s, eta=1.0, generator=gen(2))
    b = ancestral_step(schedule, x, out, t, s, variance="beta_tilde", generator=gen(2))
    torch.testing.assert_close(a, b)


def test_learned_variance_interpolates_between_beta_and_beta_tilde():
    schedule = DiscreteVP.linear()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=gen(0))
    x0 = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=gen(1))
    t, s = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.29, dtype=torch.float64)
    for frac, variance in ((1.0, "beta"), (0.0, "beta_tilde")):
        learned = ancestral_step(
            schedule, x, DenoiserOutput(x0, torch.full_like(x, frac)), t, s, variance="learned", generator=gen(3)
        )
        fixed = ancestral_step(schedule, x, DenoiserOutput(x0), t, s, variance=variance, generator=gen(3))
        torch.testing.assert_close(learned, fixed)
    with pytest.raises(ValueError, match="predicts the variance"):
        ancestral_step(schedule, x, DenoiserOutput(x0), t, s, variance="learned")


def test_learned_variance_last_step_is_the_finite_mean_for_any_fraction():
    """On the last step (s = 0) no noise is added, so the result is the posterior mean (= x0_hat) for every
    var_frac, in float32 too: v = 2f - 1 above ~1.54 once overflowed exp() and gave inf * 0 = NaN."""
    schedule = DiscreteVP.linear()
    x = torch.randn(2, 3, 4, 4, generator=gen(0))
    x0 = torch.randn(2, 3, 4, 4, generator=gen(1)).clamp(-1, 1)
    t, s = torch.tensor(0.01, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    for frac in (-2.0, 0.0, 1.0, 1.3, 3.0, 50.0):
        out = ancestral_step(schedule, x, DenoiserOutput(x0, torch.full_like(x, frac)), t, s, variance="learned")
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), frac
        # mean = a_s beta / s_t^2 x0_hat + 0 x_t with a_s = 1 and beta = s_t^2: x0_hat up to float32 rounding
        torch.testing.assert_close(out, x0, rtol=1e-6, atol=1e-6)


def test_ancestral_matches_ddpm_posterior_coefficients():
    """Mean = sqrt(abar_s) beta / (1 - abar_t) x0 + sqrt(alpha) (1 - abar_s) / (1 - abar_t) x_t (Ho et al. eq. 7)."""
    schedule = DiscreteVP.linear()
    abar = torch.cumprod(1 - schedule.betas, 0)
    i = 300  # t = (i + 1) / N -> guided index i, s -> i - 1
    t, s = torch.tensor((i + 1) / 1000, dtype=torch.float64), torch.tensor(i / 1000, dtype=torch.float64)
    beta, ab_t, ab_s = schedule.betas[i], abar[i], abar[i - 1]
    x = torch.randn(1, 1, 2, 2, dtype=torch.float64, generator=gen(0))
    x0 = torch.randn(1, 1, 2, 2, dtype=torch.float64, generator=gen(1))
    mean = ancestral_step(schedule, x, DenoiserOutput(x0), t, s, variance="beta_tilde", generator=gen(2))
    noise = torch.randn(1, 1, 2, 2, dtype=torch.float64, generator=gen(2))
    expected = ab_s.sqrt() * beta / (1 - ab_t) * x0 + (1 - beta).sqrt() * (1 - ab_s) / (1 - ab_t) * x
    expected = expected + (beta * (1 - ab_s) / (1 - ab_t)).sqrt() * noise
    torch.testing.assert_close(mean, expected)


def test_ve_ancestral_is_score_sde_reverse_diffusion():
    """VE: x_mean = x + (s_t^2 - s_s^2) score, noise std sqrt(s_t^2 - s_s^2) (score-SDE's predictor)."""
    schedule = VE(0.01, 50.0)
    x = torch.randn(2, 1, 3, 3, dtype=torch.float64, generator=gen(0))
    x0 = torch.randn(2, 1, 3, 3, dtype=torch.float64, generator=gen(1))
    t, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.59, dtype=torch.float64)
    st, ss = schedule.sigma(t), schedule.sigma(s)
    got = ancestral_step(schedule, x, DenoiserOutput(x0), t, s, variance="beta", generator=gen(2))
    score = (x0 - x) / st**2
    want = (
        x
        + (st**2 - ss**2) * score
        + (st**2 - ss**2).sqrt() * torch.randn(2, 1, 3, 3, dtype=torch.float64, generator=gen(2))
    )
    torch.testing.assert_close(got, want)


def test_final_output_is_exactly_consistent_for_vp():
    """Noiseless replacement: the last DC step at t = 0 sets A x = y exactly."""
    schedule, den, op, y, x_init = _setup()
    x = sample_ccdf(den, schedule, op, y, x_init, t0=0.2, num_steps=1000, generator=gen(0))
    assert torch.equal(op(x), y)


# --------------------------------------------------------------------------------------------
# Langevin corrector "norm" on complex images: score-MRI's per-part rule
# --------------------------------------------------------------------------------------------

LANGEVIN_RI = Path(__file__).resolve().parent / "fixtures" / "score_mri" / "langevin_real_imag.safetensors"


class TanhScore(torch.nn.Module):
    """The fixture's score model: ``-(x + tanh(x W) + b) / (0.25 + sigma^2)`` per item (flattened)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = torch.nn.Parameter(w), torch.nn.Parameter(b)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        return (-(flat + torch.tanh(flat @ self.w) + self.b) / (0.25 + sigma[:, None] ** 2)).reshape(x.shape)


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_norm_corrector_on_complex_images_is_score_mri_per_part(monkeypatch, dtype, rtol):
    """``corrector_step="norm"`` on complex x: Re and Im each get their own step size from their own noise and
    score norms, as score-MRI corrects them (``get_pc_fouriercs_RI``).

    Fixture ``tests/fixtures/score_mri/langevin_real_imag.safetensors`` (provenance also in its metadata):
    HJ-harry/score-MRI at commit 8359aae5a4eca1e6d9447d35820e07f5188f9b00, unmodified ``sampling.py`` /
    ``sde_lib.py`` / ``models/utils.py`` (sigpy stubbed: only imported), torch 2.14.1 CPU, one-off script
    outside this repository. For each item b of a [3, 1, 6, 6] complex batch (run alone, so score-MRI's batch
    means are that item's norms) and each t in ``t`` (0.0625: sigma 0.017; 0.5: sigma 1.94): the lines of
    ``get_pc_fouriercs_RI.fouriercs_update_fn`` before its data step, ``update_fn(real(x), t)`` then
    ``update_fn(imag(x), t)`` with ``update_fn = shared_corrector_update_fn(sde=VESDE(0.01, 378, N=2000),
    corrector=LangevinCorrector, continuous=True, snr=0.16, n_steps=1)``, the model :class:`TanhScore` with the
    stored ``w``, ``b`` (``torch.Generator().manual_seed(31)``), and ``torch.randn_like`` patched to return the
    stored ``noise[k, 0, b]`` (Re) then ``noise[k, 1, b]`` (Im). ``out_f32`` ran in float32 / complex64,
    ``out_f64`` in float64 / complex128; both [t, part, item, 1, 6, 6].
    Tolerances: float32 rtol 1e-5, float64 rtol 1e-10 (ccdf recovers the score from x0_hat = x + sigma^2 s,
    a different rounding path than score-MRI's direct score; tanh differs in its last bits across CPUs).
    """
    from safetensors.torch import load_file

    import ccdf.sampling.steps as steps_module
    from ccdf.denoisers.adapters import VEScoreDenoiser
    from ccdf.denoisers.base import as_output
    from ccdf.sampling import langevin_correct

    ref = load_file(str(LANGEVIN_RI))
    expected = ref["out_f32" if dtype == torch.float32 else "out_f64"]
    schedule = VE(0.01, 378.0)
    denoiser = VEScoreDenoiser(TanhScore(ref["w"].to(dtype), ref["b"].to(dtype)), schedule)
    x = torch.complex(ref["x_re"].to(dtype), ref["x_im"].to(dtype))
    joint_gap = []
    for k, t in enumerate(ref["t"]):
        z = torch.complex(ref["noise"][k, 0].to(dtype), ref["noise"][k, 1].to(dtype))
        monkeypatch.setattr(steps_module, "randn_like", lambda x, generator, z=z: z)
        out = as_output(denoiser(x, t.expand(x.shape[0])))
        got = langevin_correct(schedule, x, out, t, t, snr=0.16, step_size="norm")
        assert got.dtype == x.dtype
        torch.testing.assert_close(got.real, expected[k, 0], rtol=rtol, atol=rtol)
        torch.testing.assert_close(got.imag, expected[k, 1], rtol=rtol, atol=rtol)
        # not vacuous: one joint step size for the complex image (the rule before) moves far from score-MRI
        score = (out.x0_hat - x) / schedule.sigma(t).to(dtype) ** 2
        ratio = z.abs().pow(2).flatten(1).sum(1).sqrt() / score.abs().pow(2).flatten(1).sum(1).sqrt()
        eps = (2 * (0.16 * ratio) ** 2).reshape(-1, 1, 1, 1)
        joint = x + eps * score + (2 * eps).sqrt() * z
        update = torch.complex(expected[k, 0], expected[k, 1]) - x
        joint_gap.append(((joint - x - update).abs().max() / update.abs().max()).item())
    assert max(joint_gap) > 0.1, joint_gap
