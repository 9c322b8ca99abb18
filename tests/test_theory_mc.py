"""ccdf.theory.propagate against Monte Carlo runs of the project's own sampler.

Each case runs :func:`ccdf.sampling.sample_ccdf` with the exact Gaussian denoiser and the
project's ``Inpainting`` operator on a 1 x 16 prior, batching M items per N' (per-item t0) and a
second run per item started from x_true with independent noise and the same y (for D). With
``z = (MC mean - exact) / s.e.`` we require |z| <= 4.5 for E and D at every N' (a correct
implementation fails a single check with probability 7e-6; wrong coefficients give tens of s.e.).
"""

from __future__ import annotations

import pytest
import torch

from ccdf.schedules import VE, DiscreteVP
from ccdf.theory import error_shape, make_problem, propagate
from tests.helpers import assert_monte_carlo_matches, periodic_cov

Z = 4.5
N_PIX = 16
M = 3000
NUM_STEPS = 100
T0S = (0.03, 0.2, 1.0)
EPS0_PER_PIXEL = 0.05


def _box_mask() -> torch.Tensor:
    mask = torch.ones(N_PIX, dtype=torch.float64)
    mask[5:11] = 0  # a contiguous hole of 6 pixels: does not commute with the periodic covariance
    return mask


CASES = {
    "box_ddpm": dict(cov="periodic", mask="box", kw=dict(step="ddpm", variance="beta")),
    "box_ddpm_beta_tilde_noisy_y": dict(
        cov="periodic", mask="box", sigma_y=0.1, kw=dict(step="ddpm", variance="beta_tilde")
    ),
    "box_ddim": dict(cov="periodic", mask="box", kw=dict(step="ddim", eta=0.0)),
    "box_ddim_eta": dict(cov="periodic", mask="box", kw=dict(step="ddim", eta=0.7)),
    "commuting_ddpm": dict(cov="diag", mask="every3", kw=dict(step="ddpm", variance="beta")),
    "box_ve_pc": dict(
        cov="periodic", mask="box", ve=True, kw=dict(step="ancestral", corrector="langevin", n_corrector=1, snr=0.16)
    ),
}


# make test: one case per step rule (DDPM with noisy y, DDIM with eta > 0, VE predictor-corrector); make test-e2e: the rest
DEFAULT_CASES = ("box_ddpm_beta_tilde_noisy_y", "box_ddim_eta", "box_ve_pc")


@pytest.mark.parametrize("name", [n if n in DEFAULT_CASES else pytest.param(n, marks=pytest.mark.e2e) for n in CASES])
def test_propagation_matches_monte_carlo(name):
    case = CASES[name]
    schedule = VE(0.01, 50.0) if case.get("ve") else DiscreteVP.linear()
    cov = (
        periodic_cov(N_PIX)
        if case["cov"] == "periodic"
        else torch.diag(torch.linspace(0.05, 1.5, N_PIX, dtype=torch.float64))
    )
    mask = _box_mask() if case["mask"] == "box" else (torch.arange(N_PIX) % 3 == 0).double()
    sigma_y = case.get("sigma_y", 0.0)
    problem = make_problem(cov.numpy(), mask=mask.numpy(), sigma_y=sigma_y)
    assert problem.commuting == (case["cov"] == "diag")
    b = error_shape(problem, "iso")
    eps0 = EPS0_PER_PIXEL * problem.n_u
    exact = propagate(problem, schedule, NUM_STEPS, error_shapes=[b], **case["kw"])
    assert_monte_carlo_matches(
        exact, cov=cov, mask=mask, schedule=schedule, b=b, eps0=eps0, sigma_y=sigma_y, t0s=T0S, m=M,
        num_steps=NUM_STEPS, seed=11, z_max=Z, label=name, **case["kw"],
    )  # fmt: skip
