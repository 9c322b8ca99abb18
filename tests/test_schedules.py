"""Schedules: VP identities, the discrete DDPM recurrence, IDDPM respacing, VE levels, q(x_t | x0)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ccdf.schedules import (
    VE,
    DiscreteVP,
    cosine_betas,
    forward_diffuse,
    linear_betas,
    space_timesteps,
    uniform_timesteps,
)
from tests.helpers import gen


@pytest.mark.parametrize("schedule", [DiscreteVP.linear(), DiscreteVP.cosine(), DiscreteVP.linear(250)])
def test_vp_identities_and_monotonicity(schedule):
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    a, s = schedule.alpha(t), schedule.sigma(t)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(t))
    assert a[0] == 1 and s[0] == 0
    assert bool((a[1:] <= a[:-1]).all()) and bool((s[1:] >= s[:-1]).all())


def test_discrete_vp_matches_ddpm_recurrence_on_a_toy():
    betas = torch.linspace(0.05, 0.4, 10, dtype=torch.float64)
    schedule = DiscreteVP(betas)
    abar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, 11, dtype=torch.float64) / 10
    torch.testing.assert_close(schedule.alpha(t) ** 2, abar)
    torch.testing.assert_close(schedule.to_index(t), torch.arange(10))


def test_linear_and_cosine_betas():
    b = linear_betas(1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    assert linear_betas(250)[-1] == pytest.approx(0.08)  # guided-diffusion's 1000 / N scaling
    c = cosine_betas(1000)
    abar = torch.cumprod(1 - c, 0)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert abar[499].item() == pytest.approx(f(0.5) / f(0), rel=1e-9)
    assert c.max() <= 0.999


@pytest.mark.parametrize("num_steps,t0", [(1000, 0.1), (1000, 1.0), (100, 0.2), (37, 0.5), (20, 0.05)])
def test_timesteps_grid(num_steps, t0):
    ts = uniform_timesteps(num_steps, t0)
    k = round(t0 * num_steps)
    assert ts.shape == (k + 1,) and ts[-1] == 0 and ts[0] == pytest.approx(k / num_steps)
    assert bool((ts[1:] < ts[:-1]).all())


def test_space_timesteps_matches_iddpm_examples():
    s100 = space_timesteps(1000, "100")
    assert len(s100) == 100 and s100[:3] == [0, 10, 20] and s100[-3:] == [979, 989, 999]
    s250 = space_timesteps(1000, "250")
    assert s250[:3] == [0, 4, 8] and s250[-2:] == [995, 999]
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(100, "10,10") == sorted(set(space_timesteps(100, "10,10")))
    with pytest.raises(ValueError):
        space_timesteps(10, "20")


RESPACING = Path(__file__).resolve().parent / "fixtures" / "respacing" / "space_timesteps_official.npz"


def official_kept() -> dict[str, np.ndarray]:
    """Kept timesteps of the OFFICIAL ``space_timesteps`` (bit masks over the chain, one row per string).

    Provenance of ``tests/fixtures/respacing/space_timesteps_official.npz``: openai/guided-diffusion at commit
    22e0df8183507e13a7813f8d38d51b072ca1e67c, ``guided_diffusion/respace.py::space_timesteps`` imported unmodified
    (identical to openai/improved-diffusion@1bc7bbbdc414d83d4abf2ad8cc1446dc36c4e4d5's), Python 3, one-off
    script outside the repository. Stored (``np.packbits`` along axis 1, row r = the set of kept indices):
    ``counts_1000`` for the strings ``"1"`` .. ``"1000"`` with 1000 steps, ``counts_100`` for ``"1"`` .. ``"100"``
    with 100 steps, ``ddim_1000`` for ``"ddim{n}"`` with n in ``ddim_counts_1000`` (every count an integer
    stride can give: 62 values), ``sections_1000`` for ``section_strings``; ``ddim_rejected_1000``: counts
    for which the official code raises ValueError.
    """
    with np.load(RESPACING) as data:
        out = {k: data[k] for k in data.files}
    for key in ("counts_1000", "ddim_1000", "sections_1000"):
        out[key] = np.unpackbits(out[key], axis=1, count=1000).astype(bool)
    out["counts_100"] = np.unpackbits(out["counts_100"], axis=1, count=100).astype(bool)
    return out


def test_space_timesteps_equals_official_for_every_count_and_form():
    """Integers: exact equality. The official loop accumulates a float stride; rounding stride * j (this
    project before) kept a different index for 278 of the 1000 counts (21, 23, 31, ...)."""
    ref = official_kept()
    for n, masks in ((1000, ref["counts_1000"]), (100, ref["counts_100"])):
        for count in range(1, n + 1):
            assert space_timesteps(n, str(count)) == np.flatnonzero(masks[count - 1]).tolist(), (n, count)
    assert space_timesteps(1000, 21)[:4] == [0, 50, 100, 150]  # ints are accepted too; here 49.95 * 3 -> 150
    assert len(ref["ddim_counts_1000"]) == 62
    for count, mask in zip(ref["ddim_counts_1000"].tolist(), ref["ddim_1000"], strict=True):
        assert space_timesteps(1000, f"ddim{count}") == np.flatnonzero(mask).tolist(), count
    for text, mask in zip(ref["section_strings"].tolist(), ref["sections_1000"], strict=True):
        assert space_timesteps(1000, text) == np.flatnonzero(mask).tolist(), text
    for count in ref["ddim_rejected_1000"].tolist():
        with pytest.raises(ValueError, match=f"ddim{count}.*integer stride"):
            space_timesteps(1000, f"ddim{count}")
    for bad in ("ddimx", "ten", "10,0"):
        with pytest.raises(ValueError, match="respacing"):
            space_timesteps(1000, bad)


def test_respacing_string_defines_the_grid():
    """``DiscreteVP(spacing="iddpm", respacing=...)``: the kept indices of ddimN / section strings are the grid."""
    ref = official_kept()
    ddim = DiscreteVP.linear(spacing="iddpm", respacing="ddim50")
    ts = ddim.timesteps(50)
    assert ts.shape == (51,) and ts[-1] == 0
    kept = np.flatnonzero(ref["ddim_1000"][ref["ddim_counts_1000"].tolist().index(50)]).tolist()
    assert kept == list(range(0, 1000, 20))
    assert ddim.to_index(ts[:-1]).flip(0).tolist() == kept  # the net sees guided-diffusion's timestep_map
    assert torch.equal(ddim.timesteps(50, 0.2), ts[-11:])  # CCDF: the last round(t0 * 50) steps
    sections = DiscreteVP.linear(spacing="iddpm", respacing="10,15,20")
    row = ref["section_strings"].tolist().index("10,15,20")
    assert (
        sections.to_index(sections.timesteps(45)[:-1]).flip(0).tolist()
        == np.flatnonzero(ref["sections_1000"][row]).tolist()
    )
    # the plain form is unchanged: "100" as respacing equals num_steps=100 without it
    assert torch.equal(DiscreteVP.linear(spacing="iddpm", respacing="100").timesteps(100), DiscreteVP.linear(
        spacing="iddpm").timesteps(100))  # fmt: skip
    with pytest.raises(ValueError, match=r"respacing='ddim50' keeps 50 timesteps, but num_steps=100"):
        ddim.timesteps(100)
    with pytest.raises(ValueError, match="needs spacing='iddpm'"):
        DiscreteVP.linear(respacing="ddim50")
    with pytest.raises(ValueError, match="ddim37"):
        DiscreteVP.linear(spacing="iddpm", respacing="ddim37")  # no integer stride gives 37 of 1000
    assert "respacing='ddim50'" in repr(ddim)


def test_iddpm_spacing_grid_hits_the_kept_indices():
    schedule = DiscreteVP.linear(spacing="iddpm")
    ts = schedule.timesteps(100, 1.0)
    assert ts.shape == (101,) and ts[-1] == 0
    torch.testing.assert_close(schedule.to_index(ts[:-1]).flip(0), torch.tensor(space_timesteps(1000, "100")))
    # respaced betas: 1 - abar(t) / abar(s) = 1 - abar[tau_k] / abar[tau_{k-1}]
    abar = torch.cumprod(1 - schedule.betas, 0)
    kept = space_timesteps(1000, "100")
    t, s = ts[0], ts[1]
    torch.testing.assert_close(1 - schedule.alpha(t) ** 2 / schedule.alpha(s) ** 2, 1 - abar[kept[-1]] / abar[kept[-2]])
    short = schedule.timesteps(100, 0.2)
    assert short.shape == (21,) and torch.equal(short, ts[-21:])


def test_ve_levels():
    ve = VE(0.01, 378.0)
    assert ve.sigma(0.0) == 0 and ve.sigma(1.0).item() == pytest.approx(378.0)
    assert ve.sigma(0.5).item() == pytest.approx(math.sqrt(0.01 * 378.0))
    assert ve.alpha(torch.tensor([0.3, 0.9])).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        VE(1.0, 0.5)


@pytest.mark.parametrize("schedule", [DiscreteVP.linear(), VE(0.01, 50.0)])
def test_forward_diffuse_moments(schedule):
    x0 = torch.full((20000, 1, 1, 2), 0.7, dtype=torch.float64)
    t = 0.3
    xt = forward_diffuse(schedule, x0, t, gen(0))
    a, s = schedule.alpha(t).item(), schedule.sigma(t).item()
    # s.e. of the mean: s / sqrt(20000); of the std: s / sqrt(40000)
    assert abs(xt.mean().item() - a * 0.7) < 5 * s / math.sqrt(40000)
    assert abs(xt.std().item() - s) < 5 * s / math.sqrt(80000)
    torch.testing.assert_close(forward_diffuse(schedule, x0[:3], 0.0, gen(0)), x0[:3])
