"""Solvers that own their loop, conditionings and the warm start (ccdf.sampling.solvers / conditioning).

Exact answers with the dense Gaussian oracle: a deterministic solver with the exact Gaussian
denoiser is an affine map x_T -> x_0 (every step is affine), so its output law is computed
exactly by pushing the identity through it (no Monte Carlo error).
"""

from __future__ import annotations

import pytest
import torch

from ccdf.denoisers import CountingDenoiser, DenseGaussianPrior, GaussianDenoiser
from ccdf.operators import (
    Blur,
    Colorization,
    Inpainting,
    MotionBlur,
    MultiCoilMRI,
    SingleCoilMRI,
    SuperResolution,
    cartesian_mask,
    poisson_mask,
)
from ccdf.operators.base import Operator
from ccdf.sampling import SOLVERS, Prox, StepSolver, sample_ccdf
from ccdf.sampling.ccdf import make_solver, reverse_steps
from ccdf.sampling.conditioning import NoConditioning, Problem
from ccdf.schedules import VE, DiscreteVP
from ccdf.utils.rng import per_sample_generators
from tests.helpers import gen, periodic_cov

N_PIX = 16


def dense_prior(n: int = N_PIX) -> DenseGaussianPrior:
    mu = torch.linspace(-0.3, 0.3, n, dtype=torch.float64)
    return DenseGaussianPrior(mu, periodic_cov(n), (1, 1, n))


def _ops():
    mri = SingleCoilMRI.cartesian(8, acceleration=2, center_fraction=0.25, seed=0)
    return {
        "inpaint": (Inpainting.random(8, 0.5, seed=0), (2, 3, 8, 8), False),
        "sr_box": (SuperResolution(2, kernel="box"), (2, 3, 8, 8), False),
        "sr_bicubic": (SuperResolution(2, kernel="bicubic"), (2, 3, 8, 8), False),
        "mri": (mri, (2, 1, 8, 8), True),
        # blurs with min |K| >= 0.15 away from exact zeros, as the lam = 1e-9 limit below needs
        "blur_gauss": (Blur.gaussian(0.5, 3, tol=1e-10), (2, 3, 8, 8), False),
        "blur_uniform": (Blur.uniform(2, tol=1e-10), (2, 3, 8, 8), False),  # K = 0 at 1 of 8 frequencies per axis
        "blur_motion": (MotionBlur(5, 0.5, tol=1e-10).for_batch({}, [gen(1), gen(3)]), (2, 3, 8, 8), False),
        "colorize": (Colorization(), (2, 3, 8, 8), False),
        # SENSE: column mask (exact per-row solve) and 2-D Poisson-disc mask (conjugate gradients)
        "multicoil_rows": (
            MultiCoilMRI(cartesian_mask(8, 2, 0.25, seed=0), _maps((2, 3, 8, 8)), 8),
            (2, 1, 8, 8),
            True,
        ),
        "multicoil_2d": (MultiCoilMRI(poisson_mask(8, 2, 2, seed=0), _maps((3, 8, 8))), (2, 1, 8, 8), True),
    }


def _maps(shape):
    """Random complex coil maps normalised to sum_c |S_c|^2 = 1 (float64)."""
    g = gen(7)
    maps = (
        torch.complex(
            torch.randn(shape, dtype=torch.float64, generator=g), torch.randn(shape, dtype=torch.float64, generator=g)
        )
        + 1.5
    )
    return maps / maps.abs().pow(2).sum(-3, keepdim=True).sqrt()


@pytest.mark.parametrize("name", list(_ops()))
@pytest.mark.parametrize("lam", [0.0, 0.05, 1.0, 20.0])
def test_prox_is_the_minimiser_and_its_closed_form(name, lam):
    """prox(x, y, lam) zeroes the gradient A^H(A v - y) + lam (v - x) of its objective, equals the
    generic conjugate-gradient form, and is the projection at lam = 0 (float64)."""
    op, shape, complex_ = _ops()[name]
    x = torch.randn(shape, dtype=torch.float64, generator=gen(1))
    r = torch.randn(shape, dtype=torch.float64, generator=gen(2))
    if complex_:
        x = torch.complex(x, torch.randn(shape, dtype=torch.float64, generator=gen(3)))
        r = torch.complex(r, torch.randn(shape, dtype=torch.float64, generator=gen(4)))
    y = op(r)
    v = op.prox(x, y, lam)
    grad = op.adjoint(op(v) - y) + lam * (v - x)
    assert float(grad.abs().max()) < 1e-9
    torch.testing.assert_close(v, Operator.prox(op, x, y, lam), rtol=0, atol=1e-8)
    if lam == 0:
        torch.testing.assert_close(v, op.project(x, y), rtol=0, atol=1e-12)
    # lam -> 0 tends to the projection, lam -> infinity keeps x
    torch.testing.assert_close(op.prox(x, y, 1e-9), op.project(x, y), rtol=0, atol=1e-7)


def test_prox_refuses_negative_lam():
    op = Inpainting.random(8, 0.5)
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="lam"):
        op.prox(x, op(x), -1.0)


def _affine_law(solver: str, num_steps: int, schedule, prior: DenseGaussianPrior):
    """Mean and covariance of a deterministic solver's output from the exact marginal at t = 1,
    x_T = a mu + L z (L L^T = a^2 Sigma + s^2 I, z ~ N(0, I)), exactly: the solver is affine, so
    pushing z = 0 and the unit vectors through it gives x_0 = T z + c."""
    n = prior.mean.numel()
    a, s = float(schedule.alpha(1.0)), float(schedule.sigma(1.0))
    chol = torch.linalg.cholesky(a**2 * prior.cov + s**2 * torch.eye(n, dtype=torch.float64))
    z = torch.cat([torch.zeros(1, n), torch.eye(n)]).double()
    x_t = (a * prior.mean + z @ chol.T).reshape(n + 1, 1, 1, n)
    op = Inpainting(torch.zeros(1, n))  # observes nothing (and the conditioning is none)
    out = make_solver(solver)(
        GaussianDenoiser(prior, schedule), schedule, x_t, schedule.timesteps(num_steps, 1.0), start=[0] * (n + 1),
        problem=Problem(op, op(x_t)), cond=NoConditioning().bind(schedule),
    ).reshape(n + 1, n)  # fmt: skip
    c = out[0]
    t = (out[1:] - c).T
    return c, t @ t.T


@pytest.mark.parametrize("solver", ["dpmpp_2m", "ddim"])
def test_deterministic_solvers_sample_the_prior_exactly_as_steps_grow(solver):
    """DPM-Solver++(2M) (and DDIM) from the exact marginal at t = 1 with the exact Gaussian denoiser:
    the output law N(c, T T^T) tends to the prior N(mu, Sigma) as the steps grow (exact, no sampling).

    Measured relative covariance errors (16 pixels, periodic AR(1) prior, linear betas):
    DPM-Solver++(2M) 10 / 20 / 50 / 100 steps: 0.121 / 0.0378 / 0.0085 / 0.0022 (second order: the
    error falls ~4x per halving of the step); DDIM: 0.310 / 0.170 / 0.072 / 0.037 (first order).
    The mean is a fixed point of both (error at rounding level). Bounds leave ~30% margin.
    """
    schedule = DiscreteVP.linear()
    prior = dense_prior()
    errs = {}
    for k in (10, 20, 50):
        mean, cov = _affine_law(solver, k, schedule, prior)
        assert float((mean - prior.mean).norm() / prior.mean.norm()) < 1e-12
        errs[k] = float((cov - prior.cov).norm() / prior.cov.norm())
    assert errs[50] < errs[20] < errs[10]
    if solver == "dpmpp_2m":
        assert errs[10] < 0.16 and errs[20] < 0.05 and errs[50] < 0.011
        assert errs[20] / errs[50] > 3.5  # a first-order solver gains (50 / 20) = 2.5 at best
    else:
        assert errs[20] / errs[50] < 2.6


def _setup(name):
    """(schedule, solver name, conditioning) of each sampler config."""
    from ccdf.sampling.guidance import DPS, MCG, PiGDM

    vp = DiscreteVP.linear
    return {
        "ddpm": (vp, "ddpm", "project"),
        "ddim": (vp, "ddim", "project"),
        "ve_pc": (lambda: VE(0.01, 50.0), "ve_pc", "project"),
        "dpmpp_2m": (vp, "dpmpp_2m", "project"),
        "dps": (vp, "ddpm", DPS(0.5)),
        "dps_ve": (lambda: VE(0.01, 50.0), "ddpm", DPS(0.5)),
        "mcg": (vp, "ddpm", MCG(0.5)),
        "pigdm": (vp, "ddim", PiGDM()),
        "ddnm": (vp, "ddnm", "none"),
        "ddnm_plus": (vp, "ddnm", "none"),
        "diffpir": (vp, "diffpir", "none"),
        "prox": (vp, "ddpm", Prox()),
    }[name]


SOLVER_SETUPS = [
    "ddpm",
    "ddim",
    "ve_pc",
    "dpmpp_2m",
    "dps",
    "dps_ve",
    "mcg",
    "pigdm",
    "ddnm",
    "ddnm_plus",
    "diffpir",
    "prox",
]


@pytest.mark.parametrize("name", SOLVER_SETUPS)
def test_per_item_t0_in_one_pass_equals_separate_runs_and_nfe_is_counted(name):
    """Items with different t0 in one batched pass give the results of separate runs (multistep
    solvers included: an item that joins has no history and takes the first-order start; gradient
    guidance included: norms and products are per item), and each item's counted NFE is what the
    solver documents (solver.nfe(N'))."""
    make_schedule, solver, dc = _setup(name)
    sigma_y = 0.05 if name in ("ddnm_plus", "prox") else 0.0
    schedule = make_schedule()
    prior = dense_prior()
    mask = torch.zeros(1, N_PIX)
    mask[0, ::3] = 1
    op = Inpainting(mask)
    x0 = torch.randn(3, 1, 1, N_PIX, dtype=torch.float64, generator=gen(5)) * 0.5
    y = op(x0)
    x_init = op.pinv(y)
    t0s = [0.3, 1.0, 0.55]
    num_steps = 20
    counter = CountingDenoiser(GaussianDenoiser(prior, schedule))
    batched = sample_ccdf(counter, schedule, op, y, x_init, t0=t0s, num_steps=num_steps, solver=solver, dc=dc,
                          sigma_y=sigma_y, generator=per_sample_generators(0, [0, 1, 2]))  # fmt: skip
    nfe = counter.per_item
    expected = [SOLVERS[solver]().nfe(int(k)) for k in reverse_steps(t0s, num_steps)]
    assert nfe == expected and counter.items == sum(expected)
    for b, t0 in enumerate(t0s):
        alone = sample_ccdf(GaussianDenoiser(prior, schedule), schedule, op, y[b : b + 1], x_init[b : b + 1], t0=t0,
                            num_steps=num_steps, solver=solver, dc=dc, sigma_y=sigma_y,
                            generator=per_sample_generators(0, [b]))  # fmt: skip
        torch.testing.assert_close(batched[b : b + 1], alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "ddnm"])
def test_a_solver_never_writes_into_the_callers_state(name):
    """Before: with items joining mid-pass the solver wrote the active items' new states into the tensor the
    caller passed (``x[idx] = ...`` on the caller's ``x``); sample_ccdf hid it by passing its own copy."""
    schedule = DiscreteVP.linear()
    prior = dense_prior()
    mask = torch.zeros(1, N_PIX)
    mask[0, ::3] = 1
    op = Inpainting(mask)
    x = torch.randn(2, 1, 1, N_PIX, dtype=torch.float64, generator=gen(3))
    before = x.clone()
    grid = schedule.timesteps(10, t_start=1.0)
    cond = NoConditioning().bind(schedule)
    out = make_solver(name)(GaussianDenoiser(prior, schedule), schedule, x, grid, start=[0, 4],
                            problem=Problem(op, op(x)), cond=cond, generator=per_sample_generators(0, [0, 1]))  # fmt: skip
    assert torch.equal(x, before) and not torch.equal(out, before)


def test_unknown_solver_and_mixed_settings_are_clear_errors():
    schedule = DiscreteVP.linear()
    prior = dense_prior()
    op = Inpainting(torch.ones(1, N_PIX))
    x = torch.zeros(1, 1, 1, N_PIX, dtype=torch.float64)
    den = GaussianDenoiser(prior, schedule)
    with pytest.raises(ValueError, match="unknown solver 'heun'"):
        sample_ccdf(den, schedule, op, x, x, t0=0.5, num_steps=10, solver="heun")
    with pytest.raises(ValueError, match="variance"):
        sample_ccdf(den, schedule, op, x, x, t0=0.5, num_steps=10, solver="dpmpp_2m", variance="learned")
    with pytest.raises(ValueError, match="unknown conditioning"):
        sample_ccdf(den, schedule, op, x, x, t0=0.5, num_steps=10, dc="soft")
    with pytest.raises(ValueError, match="gamma_scale"):
        Prox(gamma_scale=0)


def _affine_posterior_law(solver, cond, num_steps, schedule, prior, op, y, sigma_y):
    """Exact law of a deterministic solver's output for one measurement y, started from the diffused exact
    posterior at t = 1 (everything is affine in x_T for a Gaussian denoiser and a linear conditioning)."""
    n = prior.mean.numel()
    a_mat = op(torch.eye(n, dtype=torch.float64).reshape(n, *prior.shape)).reshape(n, -1).T  # [m, n]
    v = prior.cov
    gain = v @ a_mat.T @ torch.linalg.pinv(a_mat @ v @ a_mat.T + sigma_y**2 * torch.eye(a_mat.shape[0]).double())
    post_mean = prior.mean + gain @ (y.reshape(-1) - a_mat @ prior.mean)
    post_cov = v - gain @ a_mat @ v
    a, s = float(schedule.alpha(1.0)), float(schedule.sigma(1.0))
    chol = torch.linalg.cholesky(a**2 * post_cov + s**2 * torch.eye(n, dtype=torch.float64))
    z = torch.cat([torch.zeros(1, n), torch.eye(n)]).double()
    x_t = (a * post_mean + z @ chol.T).reshape(n + 1, *prior.shape)
    ys = y.expand(n + 1, *y.shape[1:])
    cond.bind(schedule)
    out = solver(GaussianDenoiser(prior, schedule), schedule, x_t, schedule.timesteps(num_steps, 1.0),
                 start=[0] * (n + 1), problem=Problem(op, ys, sigma_y), cond=cond).reshape(n + 1, n)  # fmt: skip
    c = out[0]
    t = (out[1:] - c).T
    return (c, t @ t.T), (post_mean, post_cov)


@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
def test_pigdm_with_exact_r_t_gives_the_exact_posterior_on_an_isotropic_prior(sigma_y):
    """Isotropic prior N(mu, v I), x2 box super-resolution of a 4x4 image (16 unknowns, 4 measurements).
    ΠGDM's score weighting with r_t^2 = v s_t^2 / (a_t^2 v + s_t^2) makes x0_hat = E[x0 | x_t, y] exactly, so
    a deterministic solver transports the diffused posterior to the posterior; its output law is computed
    exactly (affine) and converges as the steps grow. Measured with DPM-Solver++(2M), relative covariance
    error at 50 / 200 / 1000 steps: 1.5e-3 / 8.1e-4 / 2.0e-4 (sigma_y = 0) and 1.1e-2 / 1.6e-3 / 2.7e-4
    (sigma_y = 0.05); the mean is exact to rounding (1e-15). Bounds: 2x the measured values."""
    from ccdf.sampling.guidance import PiGDM

    v = 0.2
    prior = DenseGaussianPrior(torch.linspace(-0.3, 0.3, 16).double(), v * torch.eye(16).double(), (1, 4, 4))
    op = SuperResolution(2, kernel="box")
    schedule = DiscreteVP.linear()
    x0 = torch.randn(1, 1, 4, 4, dtype=torch.float64, generator=gen(7)) * v**0.5
    y = op(x0) + sigma_y * torch.randn(1, 1, 2, 2, dtype=torch.float64, generator=gen(8))
    errs = []
    for k in (50, 1000):
        cond = PiGDM(weighting="score", data_var=v)
        (m, c), (pm, pc) = _affine_posterior_law(make_solver("dpmpp_2m"), cond, k, schedule, prior, op, y, sigma_y)
        errs.append((float((m - pm).norm() / pm.norm()), float((c - pc).norm() / pc.norm())))
    assert max(e[0] for e in errs) < 1e-12, errs
    assert errs[1][1] < 6e-4 and errs[0][1] < (0.022 if sigma_y else 0.003), errs
    assert errs[1][1] < errs[0][1] / 5, errs
    # RED-diff's weighting pins the measured directions too when sigma_y = 0, but with noise its heuristic
    # scale (w a_s a_t, no sigma_y) does not give the posterior
    if sigma_y:
        (m, c), (pm, pc) = _affine_posterior_law(
            make_solver("dpmpp_2m"), PiGDM(), 1000, schedule, prior, op, y, sigma_y
        )
        assert float((c - pc).norm() / pc.norm()) > 10 * errs[1][1]


def _diagonal_problem(m: int, mean: float = 0.8):
    """A diagonal prior with a pixel mask (A commutes with Sigma), m images from the prior, noiseless y."""
    var = torch.linspace(0.05, 0.4, N_PIX, dtype=torch.float64)
    prior = DenseGaussianPrior(torch.full((N_PIX,), mean, dtype=torch.float64), torch.diag(var), (1, 1, N_PIX))
    mask = torch.zeros(1, N_PIX)
    mask[0, ::3] = 1
    x0 = prior.mean.reshape(1, 1, 1, -1) + var.sqrt().reshape(1, 1, 1, -1) * torch.randn(
        m, 1, 1, N_PIX, dtype=torch.float64, generator=gen(11)
    )
    return prior, Inpainting(mask), x0


def test_ddnm_gives_the_exact_posterior_where_a_commutes_with_sigma():
    """DDNM with sigma_y = 0, a diagonal prior and a pixel mask: its corrected x0_hat is E[x0 | x_t, y], so the
    deterministic variant (eta = 0) transports the diffused posterior to the posterior; the output law is
    computed exactly (affine). Measured relative covariance errors at 20 / 100 / 1000 steps: 0.248 / 0.056 /
    0.0059 (first order); the mean is exact. Bounds: 1.3x the measured values."""
    from ccdf.sampling.solvers import DDNM

    prior, op, x0 = _diagonal_problem(1)
    schedule = DiscreteVP.linear()
    errs = []
    for k in (100, 1000):
        (m, c), (pm, pc) = _affine_posterior_law(DDNM(eta=0.0), NoConditioning(), k, schedule, prior, op, op(x0), 0.0)
        assert float((m - pm).norm() / pm.norm()) < 1e-12
        errs.append(float((c - pc).norm() / pc.norm()))
    assert errs[0] < 0.073 and errs[1] < 0.0077, errs


@pytest.mark.parametrize("name", ["dps", "diffpir"])
def test_dps_and_diffpir_end_consistent_and_below_the_initializers_error(name):
    """Commuting case (diagonal prior, pixel mask), noiseless y, zero-filled x_init (MSE 0.53 per pixel; a
    posterior sample has 2 MMSE = 0.28), warm start t0 = 0.2 of N = 1000, 200 images.

    Measured: DiffPIR's relative residual ||A x - y|| / ||y|| ~ 1e-4 (its last prox has rho ~ 1e-4), MSE 0.27;
    DPS (scale 0.1) residual 0.022 mean / 0.063 max, MSE 0.29. DPS's step is a fixed multiple of the gradient
    of the norm (not its square), so it hovers at a residual proportional to its scale instead of converging;
    the bounds allow 1.5x the measured values."""
    from ccdf.sampling.guidance import DPS
    from ccdf.sampling.solvers import DiffPIR

    prior, op, x0 = _diagonal_problem(200)
    schedule = DiscreteVP.linear()
    y = op(x0)
    x_init = op.pinv(y)
    kw = dict(solver=StepSolver(), dc=DPS(0.1)) if name == "dps" else dict(solver=DiffPIR(), dc="none")
    x = sample_ccdf(GaussianDenoiser(prior, schedule), schedule, op, y, x_init, t0=0.2, num_steps=1000,
                    generator=per_sample_generators(0, range(200)), **kw)  # fmt: skip
    residual = (op(x) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
    mse, init_mse = float((x - x0).pow(2).mean()), float((x_init - x0).pow(2).mean())
    assert mse < 0.6 * init_mse
    if name == "dps":
        assert float(residual.mean()) < 0.033 and float(residual.max()) < 0.095
    else:
        assert float(residual.max()) < 5e-4


def test_mcg_is_the_dps_step_then_the_projection_and_ends_on_the_measurement():
    """MCG's data step equals DPS's gradient step followed by CCDF's projection (same inputs, same noise), and
    a warm-started run ends with A x = y exactly (noiseless y), which DPS alone does not."""
    from ccdf.sampling.conditioning import Projection
    from ccdf.sampling.guidance import DPS, MCG

    prior, op, x0 = _diagonal_problem(8)
    schedule = DiscreteVP.linear()
    den = GaussianDenoiser(prior, schedule)
    y = op(x0)
    t, s = schedule.timesteps(10)[3:5]

    def graph():  # x_t and x0_hat(x_t) with a fresh autograd graph (each step differentiates once)
        x_t = torch.randn(x0.shape, dtype=x0.dtype, generator=gen(1)).requires_grad_(True)
        out = den(x_t, t.expand(len(x_t)))
        return x_t, getattr(out, "x0", out)

    x_next = torch.randn(x0.shape, dtype=x0.dtype, generator=gen(2))
    problem = Problem(op, y)
    out = MCG(0.3).bind(schedule).step(x_next, *graph(), t, s, problem, gen(7))
    x_t, x0_hat = graph()
    guided = DPS(0.3).step(x_next, x_t, x0_hat, t, s, problem, None)
    ref = Projection().bind(schedule).step(guided, x_t, x0_hat, t, s, problem, gen(7))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    x = sample_ccdf(den, schedule, op, y, op.pinv(y), t0=0.2, num_steps=100, solver=StepSolver(), dc=MCG(0.3),
                    generator=per_sample_generators(0, range(8)))  # fmt: skip
    residual = (op(x) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
    assert float(residual.max()) < 1e-12


def test_gradient_guidance_with_a_denoiser_that_cannot_be_differentiated_is_a_clear_error():
    from ccdf.sampling.guidance import DPS, PiGDM

    schedule = DiscreteVP.linear()
    exact = GaussianDenoiser(dense_prior(), schedule)

    @torch.no_grad()
    def frozen(x, t):  # e.g. a compiled or exported network that runs without autograd
        return exact(x, t)

    op = Inpainting(torch.ones(1, N_PIX))
    x = torch.zeros(2, 1, 1, N_PIX, dtype=torch.float64)
    for cond in (DPS(0.5), PiGDM()):
        with pytest.raises(ValueError, match="denoiser that can be differentiated"):
            sample_ccdf(frozen, schedule, op, op(x), x, t0=0.5, num_steps=10, dc=cond)
