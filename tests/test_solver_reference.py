"""Solvers against their authors' code: the same denoiser outputs and injected noise, one step and short runs.

Fixtures (``tests/fixtures/solvers/*.npz``, data only) were computed once, outside this repository, by
running the official code on a toy problem, float32, CPU, torch 2.14.1:

- the "network" is eps(x, t) = x.flatten(1) @ W.T + b * t / 1000 (``toy_common.npz``: W [192, 192], b [192];
  t the original chain's integer timestep), on images [2, 3, 8, 8]; DDPM's linear betas, T = 1000;
- operators: a fixed 50% pixel mask, and x2 super-resolution by 2x2 block averaging (A^+ = nearest x2);
- every random draw of the official code was recorded (``noise_*`` arrays) and is injected here in order.

Provenance: DPS = DPS2022/diffusion-posterior-sampling @ effbde7 (``PosteriorSampling``, DDPM ``p_sample``,
learned-range variance, clip_denoised, scale 0.5 inpainting / 0.3 SR); PiGDM = NVlabs/RED-diff @ 66482f2
(``algos/pgdm.py``, awd=True, eta = 1, w = 1, DDRM ``H_functions`` Inpainting and SuperResolution, float32 alphas);
DPM-Solver++(2M) = diffusers 0.42.1 ``DPMSolverMultistepScheduler`` (dpmsolver++, order 2, midpoint,
lower_order_final, final_sigmas_type "zero", float32 alphas); DDNM = wyhuai/DDNM @ 00b58ea (``functions/svd_ddnm.py``
``ddnm_diffusion`` / ``ddnm_plus_diffusion``, eta 0.85, no time travel, float32 alphas); DiffPIR =
yuanzhi-zhu/DiffPIR @ 111d26e (``main_ddpir_*`` loop, lambda 1 in its [0, 1] units = 0.25 here, zeta 0.25 SR / 1.0
inpainting, eta 0, x0 clipped, its float32 alphas; its FFT SR data step replaced by the equal closed form because in
float32 it loses all precision at rho ~ 1e-8).
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
    for module in ("ccdf.sampling.steps", "ccdf.sampling.solvers.ddnm", "ccdf.sampling.solvers.diffpir"):
        monkeypatch.setattr(f"{module}.randn_like", replay)
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


def schedule_from_abar(abar: np.ndarray) -> DiscreteVP:
    """Our chain with exactly these alphas_cumprod (the official codes compute them in float32)."""
    abar = torch.from_numpy(np.asarray(abar).astype(np.float64))
    return DiscreteVP(1 - abar / torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]]))


def pigdm_schedule() -> DiscreteVP:
    """RED-diff's float32 alphas_cumprod (its ``Diffusion.alpha``)."""
    return schedule_from_abar(load("pgdm_alphas")["alphas_f32"][1:])


def f32_schedule() -> DiscreteVP:
    """float32 betas, float32 cumulative product (diffusers, DDNM's ``compute_alpha``)."""
    betas = torch.from_numpy(load("toy_common")["betas_f64"]).float()
    return schedule_from_abar(torch.cumprod(1 - betas, 0).numpy())


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


@pytest.mark.parametrize("case", ["linspace10", "linspace25"])
def test_dpmpp_2m_equals_diffusers(case, monkeypatch):
    """Unconditional DPM-Solver++(2M) on diffusers' grid (first and last steps first order), every state compared."""
    ref = load(f"dpmpp2m_uncond_{case}")
    schedule = f32_schedule()
    grid = grid_from_indices(ref["timesteps"])
    x_t = torch.from_numpy(ref["x_T"])
    op = Inpainting(torch.zeros(8, 8))
    from ccdf.sampling.conditioning import NoConditioning
    from ccdf.sampling.solvers import DPMSolverPP2M

    out, states = run(DPMSolverPP2M(), NoConditioning(), schedule, ToyEps(schedule), x_t, grid,
                      Problem(op, op(x_t)), [], monkeypatch)  # fmt: skip
    for k, state in enumerate(states):
        assert close(state, ref["xs"][k + 1]) <= RTOL, k
    if "eps" in ref:  # one step: the first-order start from the recorded eps
        a, s = schedule.alpha(grid[0]).float(), schedule.sigma(grid[0]).float()
        torch.testing.assert_close((x_t - s * torch.from_numpy(ref["eps"][0])) / a, torch.from_numpy(ref["x0_pred"][0]))


@pytest.mark.parametrize("case", ["ddnm_inpaint", "ddnm_sr", "ddnmplus_inpaint"])
def test_ddnm_ten_step_run_equals_official(case, monkeypatch):
    """DDNM (sigma_y = 0) and DDNM+ (sigma_y = 0.05, inpainting: unit singular values) on the official 10-step grid
    (timesteps 900, 800, ..., 0), every state compared."""
    from ccdf.sampling.conditioning import NoConditioning
    from ccdf.sampling.solvers import DDNM

    ref = load(f"ddnm_svd_{case}_run10")
    schedule = f32_schedule()
    grid = grid_from_indices(ref["timesteps_i"])
    sigma_y = 0.05 if "plus" in case else 0.0
    problem = Problem(operator("sr2" if case.endswith("sr") else "inpaint"), torch.from_numpy(ref["y"]), sigma_y)
    out, states = run(DDNM(eta=0.85), NoConditioning(), schedule, ToyEps(schedule), torch.from_numpy(ref["x_T"]),
                      grid, problem, list(ref["noise"]), monkeypatch)  # fmt: skip
    for k, state in enumerate(states):
        assert close(state, ref["xs"][k + 1]) <= RTOL, k


def diffpir(op_name: str):
    from ccdf.sampling.solvers import DiffPIR

    return DiffPIR(lam=0.25, zeta=0.25 if op_name == "sr" else 1.0, sigma_floor=0.002)


@pytest.mark.parametrize("case", ["inpaint_s0_step_t500", "sr_s005_step_t500", "sr_s005_step_t20"])
def test_diffpir_one_step_equals_official(case, monkeypatch):
    from ccdf.sampling.conditioning import NoConditioning

    ref = load(f"diffpir_{case}")
    op_name, sigma_y = case.split("_")[0], (0.05 if "s005" in case else 0.0)
    schedule = schedule_from_abar(ref["abar_f32"])
    grid = grid_from_indices([int(ref["t_i"]), int(ref["t_im1"])])[:2]
    problem = Problem(operator("sr2" if op_name == "sr" else "inpaint"), torch.from_numpy(ref["y"]), sigma_y)
    solver = diffpir(op_name)
    solver._clip = 1.0
    out, _ = run(
        solver,
        NoConditioning(),
        schedule,
        ToyEps(schedule),
        torch.from_numpy(ref["x_t"]),
        grid,
        problem,
        [ref["noise"][1]],
        monkeypatch,
    )  # fmt: skip  (the official loop draws z1, unused with eta = 0, then z2)
    assert close(out, ref["x_next"]) <= RTOL


@pytest.mark.parametrize("case", ["inpaint_s0", "sr_s005"])
def test_diffpir_ten_step_run_equals_official(case, monkeypatch):
    """DiffPIR's 10-step quad schedule (999, 666, ..., 57, 0): the official loop's last network evaluation (at t = 0)
    is discarded, so its output is the state after 9 steps, which is ours on the grid ending at timestep 0."""
    from ccdf.sampling.conditioning import NoConditioning

    ref = load(f"diffpir_{case}_run10")
    op_name, sigma_y = case.split("_")[0], (0.05 if "s005" in case else 0.0)
    schedule = schedule_from_abar(load("diffpir_sr_s005_step_t500")["abar_f32"])
    grid = grid_from_indices(ref["t_i"])[:-1]  # ends at timestep 0 (t = 1/1000), as the official loop
    problem = Problem(operator("sr2" if op_name == "sr" else "inpaint"), torch.from_numpy(ref["y"]), sigma_y)
    solver = diffpir(op_name)
    solver._clip = 1.0
    out, states = run(solver, NoConditioning(), schedule, ToyEps(schedule), torch.from_numpy(ref["x_T"]), grid,
                      problem, [n[1] for n in ref["noise"]], monkeypatch)  # fmt: skip
    assert len(states) == 9
    for k, state in enumerate(states):
        assert close(state, ref["xs"][k + 1]) <= RTOL, k
