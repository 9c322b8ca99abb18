"""ccdf.theory.contraction: the measured Lipschitz factor of one CCDF step (reverse step + data step) by
power iteration with autograd, against the exact largest singular value of the dense Gaussian oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccdf.denoisers import DenseGaussianPrior, GaussianDenoiser
from ccdf.operators import Inpainting
from ccdf.schedules import DiscreteVP
from ccdf.theory.contraction import exact_gaussian_factor, measure_contraction, power_iteration
from tests.helpers import gen, periodic_cov

N_PIX = 16


def _setup():
    """A correlated prior with one strong direction inside the hole (variance up to ~30: the step expands
    there, THEORY.md §4) and a contiguous hole (does not commute with the prior)."""
    u = torch.zeros(N_PIX, dtype=torch.float64)
    u[6:10] = 1.0
    cov = periodic_cov(N_PIX) * 4 + 6 * torch.outer(u, u)
    mask = torch.ones(N_PIX, dtype=torch.float64)
    mask[5:11] = 0
    prior = DenseGaussianPrior(torch.zeros(N_PIX, dtype=torch.float64), cov, (1, 1, N_PIX))
    return cov, mask, prior, Inpainting(mask.reshape(1, N_PIX))


@pytest.mark.parametrize("step", ["ddpm", "ddim"])
def test_power_iteration_matches_the_exact_singular_value(step):
    """Along a trajectory (t0 = 0.45, N = 20: levels 9, 5, 1), the measured factors of the full map and of its
    unknown block equal the SVD of (I - P) M_j and (I - P) M_j (I - P) to 1e-6 relative. Power iteration
    approaches sigma_max from below (Rayleigh quotient), so it may not exceed it beyond rounding (1e-9
    relative). Higher levels are left out: there every singular value is close to lambda_j, and the
    iteration's error, which falls like (sigma_2 / sigma_1)^(2k), needs thousands of iterations to reach 1e-6
    (at level 17 of this case, 300 iterations leave 4e-4)."""
    cov, mask, prior, op = _setup()
    schedule = DiscreteVP.linear()
    x0 = prior.sample(1, gen(3))
    y = op(x0)
    got = measure_contraction(
        GaussianDenoiser(prior, schedule), schedule, op, y, op.pinv(y), t0=0.45, num_steps=20, step=step,
        iters=300, tol=1e-13, every=4,
    )  # fmt: skip
    exact = exact_gaussian_factor(cov.numpy(), np.diag(mask.numpy()), schedule, 20, step=step)
    assert list(got.level) == [9, 5, 1]
    for name in ("full", "unknown"):
        ref = exact[name][got.level][:, None]
        assert np.all(got.__dict__[name] <= ref * (1 + 1e-9)), name
        np.testing.assert_allclose(got.__dict__[name], np.broadcast_to(ref, got.full.shape), rtol=1e-6, err_msg=name)
    assert got.full.max() > 1  # the step expands here (the paper's lambda never does)
    np.testing.assert_array_less(got.paper_lambda, 1)


def test_power_iteration_on_a_known_matrix_per_item():
    """Two items with different linear maps in one batch: each gets its own largest singular value."""
    g = gen(0)
    mats = torch.randn(2, 6, 6, generator=g, dtype=torch.float64)
    f = lambda x: torch.einsum("bij,bj->bi", mats, x)  # noqa: E731
    got = power_iteration(f, torch.randn(2, 6, generator=g, dtype=torch.float64), iters=2000, tol=1e-15)
    ref = torch.linalg.matrix_norm(mats, ord=2)
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=0)
