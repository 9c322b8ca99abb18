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


def test_theory_report_section_on_real_faces_respects_the_gaussian_bound():
    """theory.json's ``contraction`` (ccdf.theory.report.measured) at a tiny size: for the Gaussian prior of
    model=gaussian the step's linear part is diagonal in the Fourier basis with eigenvalues m_j(s_k), so the
    measured factor with the data step, a lower bound of ||(I - P) M_j|| <= max_k m_j(s_k), may not exceed the
    exact step norm beyond rounding (1e-9 relative, float64). The learned demo prior has no such bound; its
    factors are finite and positive, and a factor of one denoiser does not depend on the other being measured."""
    from ccdf.theory.report.measured import measured_contraction

    kw = dict(num_steps=6, every=2, iters=30, tol=1e-10, images=2, size=16, hole=6, double=True)
    alone = measured_contraction(["gaussian"], **kw)
    assert alone["level"] == [5, 3, 1] and alone["setting"]["images"] == 2
    exact = np.asarray(alone["gaussian_exact_step_norm"])[:, None]
    for block in ("full", "unknown"):
        gauss = np.asarray(alone["measured"]["gaussian"][block])
        assert gauss.shape == (3, 2) and np.all(gauss <= exact * (1 + 1e-9)), (block, gauss, exact)
    assert alone["summary"]["gaussian"]["max_full"] == pytest.approx(np.max(alone["measured"]["gaussian"]["full"]))
    kw.update(iters=3, images=1)
    both = measured_contraction(**kw)
    demo = np.asarray(both["measured"]["demo_prior"]["full"])
    assert demo.shape == (3, 1) and np.all(np.isfinite(demo)) and np.all(demo > 0)
    np.testing.assert_allclose(
        both["measured"]["gaussian"]["full"],
        measured_contraction(["gaussian"], **kw)["measured"]["gaussian"]["full"],
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(denoisers=["demo_prior", "ncsnpp"]), "theory.contraction.denoisers must be"),
        (dict(iters=0), "theory.contraction.iters must be an integer >= 1"),
        (dict(images=5), "theory.contraction.images: the bundled evaluation set has 4"),
        (dict(size=30), "theory.contraction.size must be a multiple of 4"),
        (dict(hole=32), r"theory.contraction.hole must be in \[1, size = 32\)"),
        (dict(tol=0.0), "theory.contraction.tol must be positive"),
        (dict(double="yes"), "theory.contraction.double must be true or false"),
        (dict(steps=10), r"theory.contraction: unknown key\(s\) \['steps'\]"),
    ],
)
def test_theory_contraction_settings_are_checked_by_name(settings, message):
    from ccdf.theory.report.measured import check_mapping

    with pytest.raises(ValueError, match=message):
        check_mapping(settings)
