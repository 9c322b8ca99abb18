"""Noisy measurements (sigma_y > 0) with every sampler config, and the soft data step's noise handling."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from ccdf.operators.base import measure
from ccdf.utils.rng import per_sample_generators
from tests.helpers import CONF, applies, compose_cfg, periodic_cov

SAMPLERS = sorted(p.stem for p in (CONF / "sampler").glob("*.yaml"))


def _noisy_cases():
    """Every (task, sampler) pair; make test keeps a covering subset (each sampler and each task at least once,
    greedily in this order), make test-e2e runs the rest."""
    seen: set[str] = set()
    for t in ("sr4", "inpaint", "mri", "mri_multicoil"):
        for s in SAMPLERS:
            if not applies(t, s, "pinv"):
                continue
            new = {f"task:{t}", f"sampler:{s}"} - seen
            seen |= new
            yield pytest.param(t, s, marks=() if new else pytest.mark.e2e, id=f"{t}-{s}")


@pytest.mark.parametrize("task,sampler", list(_noisy_cases()))
def test_every_sampler_runs_with_noisy_measurements(task, sampler):
    """sigma_y = 0.05 reaches the sampler (the prox data step, DDNM+, ...) and the result is finite and
    closer to the truth than the measurement's own noise would allow without any data (sanity bound)."""
    cfg = compose_cfg([f"task={task}", f"sampler={sampler}", "debug=smoke", "dataset.size=32", "sampler.num_steps=10",
                       "sigma_y=0.05"])  # fmt: skip
    data = instantiate(cfg.dataset.data)
    items = [data[i] for i in range(min(2, len(data)))]
    batch = {
        k: torch.stack([it[k] for it in items]) if torch.is_tensor(items[0][k]) else [it[k] for it in items]
        for k in items[0]
    }  # fmt: skip  (as the data loader collates)
    x0 = batch["x0"]
    gens = per_sample_generators(0, range(len(x0)))
    op = instantiate(cfg.operator).for_batch(batch, gens)  # per-image parameters (coil maps, motion kernels)
    y = measure(op, x0, 0.05, gens)
    assert float((y - op(x0)).abs().max()) > 0  # the noise is there
    x_init = instantiate(cfg.initializer)(y, op)
    schedule = instantiate(cfg.model.schedule)
    denoiser = instantiate(cfg.model.denoiser, schedule=schedule)
    x = instantiate(cfg.sampler)(denoiser, schedule, op, y, x_init, sigma_y=0.05, generator=gens)
    assert x.shape == x0.shape and bool(torch.isfinite(torch.view_as_real(x) if x.is_complex() else x).all())


def test_prox_does_not_copy_the_measurement_noise_at_the_end():
    """With sigma_y > 0 the proximal data step leaves A x != y (the noise is not copied), while the projection
    ends exactly consistent with the noisy y; with sigma_y = 0 the two coincide."""
    from ccdf.denoisers import DenseGaussianPrior, GaussianDenoiser
    from ccdf.operators import Inpainting
    from ccdf.sampling import sample_ccdf
    from ccdf.schedules import DiscreteVP

    n = 16
    prior = DenseGaussianPrior(torch.zeros(n, dtype=torch.float64), periodic_cov(n), (1, 1, n))
    mask = torch.zeros(1, n)
    mask[0, ::2] = 1
    op, schedule = Inpainting(mask), DiscreteVP.linear()
    x0 = prior.sample(64, torch.Generator().manual_seed(0))
    runs = {}
    for sigma_y in (0.0, 0.2):
        y = measure(op, x0, sigma_y, per_sample_generators(1, range(64)))
        for dc in ("project", "prox"):
            x = sample_ccdf(GaussianDenoiser(prior, schedule), schedule, op, y, op.pinv(y), t0=0.5, num_steps=50, dc=dc,
                            sigma_y=sigma_y, generator=per_sample_generators(0, range(64)))  # fmt: skip
            runs[sigma_y, dc] = (x, y)
    torch.testing.assert_close(runs[0.0, "prox"][0], runs[0.0, "project"][0], rtol=0, atol=1e-12)
    x_proj, y = runs[0.2, "project"]
    x_prox, _ = runs[0.2, "prox"]
    assert float((op(x_proj) - y).abs().max()) < 1e-12
    assert float((op(x_prox) - y).abs().max()) > 0.05
