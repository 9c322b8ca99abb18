"""ccdf.theory.solvers.propagate_solver (exact propagation of the linear solvers) against the project's solvers.

Monte Carlo as tests/test_theory_mc.py: :func:`ccdf.sampling.sample_ccdf` with the exact Gaussian denoiser,
the ``Inpainting`` operator (a contiguous hole: does not commute with the periodic prior) and each solver
object of :mod:`ccdf.sampling.solvers` / conditioning of :mod:`ccdf.sampling.conditioning` and
:class:`ccdf.sampling.guidance.PiGDM`; M items per N' batched with per-item t0 (so DPM-Solver++'s items
join mid-pass with a first-order start), plus a second run per item from x_true with independent noise
and the same y (for D). ``z = (MC mean - exact) / s.e.``, |z| <= 4.5 for E and D at every N' (a correct
implementation fails one check with probability 7e-6). The Monte Carlo checks the whole law, noise terms
included, but only to a few per cent; every mean-path coefficient is checked exactly by
:func:`test_solver_output_equals_the_affine_map_exactly` (settings without random draws after the start).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccdf.denoisers import DenseGaussianPrior, GaussianDenoiser
from ccdf.operators import Inpainting
from ccdf.sampling.conditioning import NoConditioning, Projection, Prox
from ccdf.sampling.guidance import DPS, PiGDM
from ccdf.sampling.solvers import DDNM, DiffPIR, DPMSolverPP2M, StepSolver
from ccdf.schedules import DiscreteVP
from ccdf.theory import error_shape, make_problem, propagate
from ccdf.theory.solvers import propagate_solver
from tests.helpers import assert_monte_carlo_matches, gen, periodic_cov

Z = 4.5
N_PIX = 16
M = 2000
NUM_STEPS = 50
T0S = (0.06, 0.3, 1.0)
EPS0_PER_PIXEL = 0.05


def _problem(sigma_y: float):
    cov = periodic_cov(N_PIX)
    mask = torch.ones(N_PIX, dtype=torch.float64)
    mask[5:11] = 0
    return cov, mask, make_problem(cov.numpy(), mask=mask.numpy(), sigma_y=sigma_y)


CASES = {
    "ddnm": dict(solver=lambda: DDNM(eta=0.85), dc=NoConditioning, sigma_y=0.0),
    "ddnm_plus_noisy_y": dict(solver=lambda: DDNM(eta=0.85), dc=NoConditioning, sigma_y=0.2),
    "diffpir_noisy_y": dict(solver=lambda: DiffPIR(lam=0.25, zeta=0.25), dc=NoConditioning, sigma_y=0.1),
    "diffpir_zeta1": dict(solver=lambda: DiffPIR(lam=0.25, zeta=1.0), dc=NoConditioning, sigma_y=0.0),
    "dpmpp_2m_project": dict(solver=DPMSolverPP2M, dc=Projection, sigma_y=0.0),
    "dpmpp_2m_prox_noisy_y": dict(solver=DPMSolverPP2M, dc=Prox, sigma_y=0.1),
    "ddpm_prox_noisy_y": dict(solver=lambda: StepSolver("ddpm"), dc=lambda: Prox(gamma_scale=0.5), sigma_y=0.1),
    "pigdm_official_noisy_y": dict(
        solver=lambda: StepSolver("ddim", eta=1.0), dc=lambda: PiGDM(data_var=0.25), sigma_y=0.1
    ),
    "pigdm_score_ddim": dict(
        solver=lambda: StepSolver("ddim", eta=0.0), dc=lambda: PiGDM(weighting="score", data_var=0.5), sigma_y=0.05
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_solver_propagation_matches_monte_carlo(name):
    case = CASES[name]
    schedule = DiscreteVP.linear()
    sigma_y = case["sigma_y"]
    cov, mask, problem = _problem(sigma_y)
    b = error_shape(problem, "iso")
    eps0 = EPS0_PER_PIXEL * problem.n_u
    exact = propagate_solver(problem, schedule, NUM_STEPS, case["solver"](), case["dc"](), error_shapes=[b])

    assert_monte_carlo_matches(
        exact, cov=cov, mask=mask, schedule=schedule, b=b, eps0=eps0, sigma_y=sigma_y, t0s=T0S, m=M,
        num_steps=NUM_STEPS, seed=23, z_max=Z, label=name, solver=case["solver"](), dc=case["dc"](),
    )  # fmt: skip


@pytest.mark.parametrize(
    "kw", [dict(step="ddpm", variance="beta"), dict(step="ddpm", variance="beta_tilde"), dict(step="ddim", eta=0.7)]
)
@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
def test_dense_solver_path_equals_the_eigenbasis_propagation(kw, sigma_y):
    """Two independent implementations of the classic DDPM/DDIM + projection chain: the dense affine maps
    here and ccdf.theory.propagate's eigenbasis recursion. Both are exact float64 linear algebra; they
    differ only by rounding (sums in other orders, an explicit inverse here), so 1e-9 relative."""
    _, _, problem = _problem(sigma_y)
    b = error_shape(problem, "iso")
    schedule = DiscreteVP.linear()
    ref = propagate(problem, schedule, 60, error_shapes=[b], **kw)
    ours = propagate_solver(problem, schedule, 60, StepSolver(**kw), "project", error_shapes=[b])
    for name in ("V", "h", "D0", "bias", "jump", "noise", "meas"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-9, atol=1e-12, err_msg=name)


def test_dpmpp_first_step_is_its_first_order_start():
    """N' = 1 of DPM-Solver++(2M) is one first-order step to s = 0, x_0 = D(x): for a run from x_init the error
    is that of the denoiser at t_1 followed by the projection, with no history term."""
    _, _, problem = _problem(0.0)
    schedule = DiscreteVP.linear()
    prop = propagate_solver(problem, schedule, 10, DPMSolverPP2M(), "project")
    a, s = prop.alpha[1], prop.sigma[1]
    cov = problem.cov
    den = a * cov @ np.linalg.inv(a**2 * cov + s**2 * np.eye(problem.n))
    unknown = np.eye(problem.n) - problem.proj
    t_mat = unknown @ den
    g = a * t_mat + problem.proj - np.eye(problem.n)
    expected = float(np.trace(g @ cov @ g.T)) + s**2 * float(np.sum(t_mat**2))
    np.testing.assert_allclose(prop.V[1], expected, rtol=1e-10)


def test_dps_and_correctors_are_refused_with_a_reason():
    _, _, problem = _problem(0.0)
    schedule = DiscreteVP.linear()
    with pytest.raises(ValueError, match="DPS is not covered: its guidance is the gradient of the norm"):
        propagate_solver(problem, schedule, 10, StepSolver("ddpm"), DPS())
    with pytest.raises(ValueError, match="correctors are covered by ccdf.theory.propagate"):
        propagate_solver(problem, schedule, 10, StepSolver("ancestral", corrector="langevin"), "project")


ALL_STARTS = (1, 2, 7, 30)
DETERMINISTIC = {  # solver, conditioning, sigma_y, N' values (of N = 30) run together in one pass
    "ddnm_eta0": (lambda: DDNM(eta=0.0), NoConditioning, 0.0, ALL_STARTS),
    # DDNM+ draws range noise while s_s > a_s sigma_y: sigma_y = 0.8 keeps s_s < a_s sigma_y for N' <= 5
    "ddnm_plus_eta0": (lambda: DDNM(eta=0.0), NoConditioning, 0.8, (1, 3, 5)),
    "diffpir_zeta0": (lambda: DiffPIR(lam=0.25, zeta=0.0), NoConditioning, 0.1, ALL_STARTS),
    "dpmpp_2m": (DPMSolverPP2M, NoConditioning, 0.0, ALL_STARTS),
    "pigdm_official_ddim0": (lambda: StepSolver("ddim"), lambda: PiGDM(data_var=0.3), 0.2, ALL_STARTS),
    "pigdm_score_dpmpp": (DPMSolverPP2M, lambda: PiGDM(weighting="score", weight=0.7, data_var=0.4), 0.1, ALL_STARTS),
}


@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_solver_output_equals_the_affine_map_exactly(name):
    """Settings without random draws after the start: the project's solver from x_{N'} returns exactly
    ``T x_{N'} + K y`` of the propagation (every coefficient of the mean path). Items with different N'
    share one pass (a DPM-Solver++ item that joins later starts first-order). float64 on both sides; the
    only difference is rounding (the propagation inverts a_t^2 Sigma + s_t^2 I explicitly), so 1e-9."""
    from ccdf.sampling.conditioning import Problem

    make_solver, make_cond, sigma_y, starts = DETERMINISTIC[name]
    cov, mask, problem = _problem(sigma_y)
    schedule = DiscreteVP.linear()
    num_steps = 30
    exact = propagate_solver(problem, schedule, num_steps, make_solver(), make_cond(), store=starts)
    prior = DenseGaussianPrior(torch.zeros(N_PIX, dtype=torch.float64), cov, (1, 1, N_PIX))
    op = Inpainting(mask.reshape(1, N_PIX))
    g = gen(5)
    x = torch.randn(len(starts), 1, 1, N_PIX, generator=g, dtype=torch.float64)
    y = op(torch.randn(len(starts), 1, 1, N_PIX, generator=g, dtype=torch.float64))
    grid = schedule.timesteps(num_steps, 1.0)
    # x.clone(): Solver.__call__ writes the joining items' states into the tensor it was given
    out = make_solver()(
        GaussianDenoiser(prior, schedule), schedule, x.clone(), grid, start=[num_steps - k for k in starts],
        problem=Problem(op, y, sigma_y), cond=make_cond().bind(schedule), generator=g,
    )  # fmt: skip
    for b, k in enumerate(starts):
        ref = exact.stored[k]["T"] @ x[b].reshape(-1).numpy() + exact.stored[k]["K"] @ y[b].reshape(-1).numpy()
        np.testing.assert_allclose(out[b].reshape(-1).numpy(), ref, rtol=1e-9, atol=1e-9, err_msg=f"{name} N'={k}")
        assert float(exact.stored[k]["trQ"]) < 1e-20  # no noise: the output is the affine map alone
