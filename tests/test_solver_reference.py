"""Solvers against their authors' code: the same denoiser outputs and injected noise, one step and short runs.

Fixtures (``tests/fixtures/solvers/*.npz``, data only) were computed once, outside this repository, by
running the official code on a toy problem, float32, CPU, torch 2.14.1:

- the "network" is eps(x, t) = x.flatten(1) @ W.T + b * t / 1000 (``toy_common.npz``: W [192, 192], b [192];
  t the original chain's integer timestep), on images [2, 3, 8, 8]; DDPM's linear betas, T = 1000;
- operators: a fixed 50% pixel mask, and x2 super-resolution by 2x2 block averaging (A^+ = nearest x2);
- every random draw of the official code was recorded (``noise_*`` arrays) and is injected here in order.

Provenance: DPS = DPS2022/diffusion-posterior-sampling @ effbde7 (``PosteriorSampling``, DDPM ``p_sample``,
learned-range variance, clip_denoised, scale 0.5 inpainting / 0.3 SR); PiGDM = NVlabs/RED-diff @ 66482f2
(``algos/pgdm.py``, awd=True, eta = 1, w = 1, DDRM ``H_functions`` Inpainting and SuperResolution, float32 alphas).
Tolerance: relative error <= 1e-5 of the reference's largest entry, float32 (one float32 rounding of the
official coefficient products is ~1e-7; PiGDM's toy states grow to |x| ~ 700 because the toy net is no
denoiser and PiGDM never clips, so errors are measured relative to max |ref|).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ccdf.denoisers.base import DenoiserOutput
from ccdf.operators import Inpainting, SuperResolution
from ccdf.sampling import StepSolver
from ccdf.sampling.conditioning import Problem
from ccdf.sampling.guidance import DPS, PiGDM
from ccdf.schedules import DiscreteVP

FIX = Path(__file__).resolve().parent / "fixtures" / "solvers"
RTOL = 1e-5


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(FIX / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


class ToyEps(torch.nn.Module):
    """The fixtures' eps-network as a ccdf denoiser: x0_hat = (x - s eps) / a (optionally with IDDPM's var_frac)."""

    def __init__(self, schedule: DiscreteVP, var_frac: float | None = None) -> None:
        super().__init__()
        toy = load("toy_common")
        self.w, self.b = torch.from_numpy(toy["W"]), torch.from_numpy(toy["b"])
        self.schedule, self.var_frac = schedule, var_frac

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        index = self.schedule.to_index(t).to(x.dtype)
        return (x.flatten(1) @ self.w.T + self.b[None] * (index[:, None] / 1000)).reshape(x.shape)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> DenoiserOutput:
        a = self.schedule.alpha(t).to(x.dtype).reshape(-1, 1, 1, 1)
        s = self.schedule.sigma(t).to(x.dtype).reshape(-1, 1, 1, 1)
        x0_hat = (x - s * self.eps(x, t)) / a
        frac = None if self.var_frac is None else torch.full_like(x, self.var_frac)
        return DenoiserOutput(x0_hat, frac)


def operator(name: str):
    if name == "sr2":
        return SuperResolution(2, kernel="box")
    return Inpainting(torch.from_numpy(load("toy_common")["mask"]))


class Replay:
    """Stands in for ``ccdf.sampling.steps.randn_like``: returns the recorded draws in order."""

    def __init__(self, draws) -> None:
        self.draws = [torch.from_numpy(np.asarray(d)) for d in draws]

    def __call__(self, x, generator=None):
        assert self.draws, "the solver drew more noise than the official code"
        d = self.draws.pop(0)
        assert d.shape == x.shape
        return d.to(x.dtype)


def grid_from_indices(indices) -> torch.Tensor:
    """Our time grid for a list of the original chain's timesteps (descending), ending at 0."""
    t = [(int(i) + 1) / 1000 for i in indices]
    return torch.tensor([*t, 0.0], dtype=torch.float64)


def run(solver, cond, schedule, denoiser, x_t, grid, problem, noises, monkeypatch):
    replay = Replay(noises)
    monkeypatch.setattr("ccdf.sampling.steps.randn_like", replay)
    cond.bind(schedule)
    states = []
    out = solver(denoiser, schedule, x_t, grid, start=[0] * x_t.shape[0], problem=problem, cond=cond,
                 callback=lambda info: states.append(info.x.clone()), x0_clip=getattr(solver, "_clip", None))  # fmt: skip
    assert not replay.draws, "the solver drew less noise than the official code"
    return out, states


def close(ours: torch.Tensor, ref: np.ndarray) -> float:
    ref_t = torch.from_numpy(np.asarray(ref)).to(ours.dtype)
    return float((ours - ref_t).abs().max() / ref_t.abs().max().clamp(min=1.0))


def dps_solver(x0_clip=1.0):
    solver = StepSolver(step="ddpm", variance="learned")
    solver._clip = x0_clip
    return solver


@pytest.mark.parametrize("op_name", ["inpaint", "sr2"])
@pytest.mark.parametrize("t_index", [500, 20])
def test_dps_one_step_equals_official(op_name, t_index, monkeypatch):
    ref = load(f"dps_{op_name}_sigma0.05_onestep_t{t_index}")
    schedule = DiscreteVP.linear()
    x_t = torch.from_numpy(ref["x_t"])
    grid = grid_from_indices([t_index, t_index - 1])[:2]
    problem = Problem(operator(op_name), torch.from_numpy(ref["y"]), 0.05)
    out, _ = run(dps_solver(), DPS(scale=float(ref["scale"])), schedule, ToyEps(schedule, 0.5), x_t, grid,
                 problem, [ref["noise_ancestral"]], monkeypatch)  # fmt: skip
    assert close(out, ref["x_next"]) <= RTOL


@pytest.mark.parametrize("op_name", ["inpaint", "sr2"])
def test_dps_ten_step_run_equals_official(op_name, monkeypatch):
    """DPS's 10-step respaced chain (timesteps 999, 888, ..., 0) from its x_T to x_0, every state compared."""
    ref = load(f"dps_{op_name}_sigma0_run10")
    schedule = DiscreteVP.linear()
    grid = grid_from_indices(ref["timestep_map"][::-1])
    problem = Problem(operator(op_name), torch.from_numpy(ref["y"]), 0.0)
    out, states = run(dps_solver(), DPS(scale=float(ref["scale"])), schedule, ToyEps(schedule, 0.5),
                      torch.from_numpy(ref["x_seq"][0]), grid, problem, list(ref["noise_ancestral"]), monkeypatch)  # fmt: skip
    assert len(states) == 10
    for k, state in enumerate(states):
        assert close(state, ref["x_seq"][k + 1]) <= RTOL, k


def pigdm_schedule() -> DiscreteVP:
    """RED-diff's float32 alphas_cumprod (its ``Diffusion.alpha``), as betas of our chain."""
    abar = torch.from_numpy(load("pgdm_alphas")["alphas_f32"].astype(np.float64))[1:]
    betas = 1 - abar / torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return DiscreteVP(betas)


@pytest.mark.parametrize("case", ["sr2_sigma0", "inpaintsvd_sigma0.05"])
@pytest.mark.parametrize("t_index", [500, 20])
def test_pigdm_one_step_equals_official(case, t_index, monkeypatch):
    ref = load(f"pgdm_{case}_onestep_t{t_index}")
    schedule = pigdm_schedule()
    grid = grid_from_indices([int(ref["t"]), int(ref["s"])])[:2]
    op = operator(case.split("_")[0].replace("inpaintsvd", "inpaint"))
    # RED-diff's guidance ignores sigma_y (noiseless pseudo-inverse form): sigma_y = 0 here, noisy y
    problem = Problem(op, torch.from_numpy(ref["y"]), 0.0)
    out, _ = run(StepSolver(step="ddim", eta=1.0), PiGDM(), schedule, ToyEps(schedule), torch.from_numpy(ref["x_t"]),
                 grid, problem, [ref["noise_ddim"]], monkeypatch)  # fmt: skip
    assert close(out, ref["x_next"]) <= RTOL


@pytest.mark.parametrize("case", ["sr2_sigma0", "inpaintsvd_sigma0.05"])
def test_pigdm_ten_step_run_equals_official(case, monkeypatch):
    """RED-diff's 10-step chain (timesteps 900, 800, ..., 0) from its pseudo-inverse start, every state compared."""
    ref = load(f"pgdm_{case}_run10")
    schedule = pigdm_schedule()
    grid = grid_from_indices(ref["t_seq"])
    op = operator(case.split("_")[0].replace("inpaintsvd", "inpaint"))
    problem = Problem(op, torch.from_numpy(ref["y"]), 0.0)
    out, states = run(StepSolver(step="ddim", eta=1.0), PiGDM(), schedule, ToyEps(schedule),
                      torch.from_numpy(ref["x_seq"][0]), grid, problem, list(ref["noise_ddim"]), monkeypatch)  # fmt: skip
    for k, state in enumerate(states):
        assert close(state, ref["x_seq"][k + 1]) <= RTOL, k
