"""Come-Closer-Diffuse-Faster: diffuse x_init to t0, then reverse with data consistency."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ccdf.denoisers.base import Denoiser, DenoiserOutput, as_output
from ccdf.operators.base import Operator
from ccdf.sampling.dc import DC_FACTORIES, DataConsistency
from ccdf.sampling.steps import CORRECTORS, STEPS, StepFn
from ccdf.schedules.base import Schedule, forward_diffuse, num_steps_from_t0
from ccdf.utils.rng import Generator, select_generators


@dataclass
class StepInfo:
    """What a callback sees after each reverse step (``x`` and ``x0_hat`` are the active items)."""

    i: int
    t: float
    x: Tensor
    x0_hat: Tensor
    active: Tensor


def reverse_steps(t0: float | Sequence[float] | Tensor, num_steps: int) -> Tensor:
    """N' = round(t0 * N) per item, ``[B]`` int64 (t0 checked to lie in (0, 1])."""
    t0s = torch.as_tensor(t0, dtype=torch.float64).reshape(-1)
    return torch.tensor([num_steps_from_t0(float(v), num_steps) for v in t0s], dtype=torch.long)


def expected_nfe(t0: float, num_steps: int, n_corrector: int = 0) -> int:
    """Network evaluations of one CCDF run: round(t0 * N) * (1 + corrector steps per level).

    >>> expected_nfe(0.1, 1000), expected_nfe(0.02, 1000, n_corrector=1)
    (100, 40)
    """
    return int(num_steps_from_t0(t0, num_steps)) * (1 + n_corrector)


def _resolve(name_or_fn, table: dict, what: str):
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in table:
        raise ValueError(f"unknown {what} {name_or_fn!r}; choose one of {sorted(table)}")
    return table[name_or_fn]


@torch.no_grad()
def sample_ccdf(
    denoiser: Denoiser,
    schedule: Schedule,
    op: Operator,
    y: Tensor,
    x_init: Tensor,
    *,
    t0: float | Sequence[float] | Tensor,
    num_steps: int,
    step: str | StepFn = "ddpm",
    variance: str = "beta",
    eta: float = 0.0,
    corrector: str | StepFn | None = None,
    n_corrector: int = 1,
    snr: float = 0.16,
    corrector_step: str = "sigma",
    dc: str | DataConsistency = "project",
    x0_clip: float | None = None,
    generator: Generator = None,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = False,
) -> Tensor:
    r"""CCDF (Chung, Sim & Ye, CVPR 2022, Alg. 1): x_{N'} ~ q(x_{N'} | x_init), then N' reverse steps.

    Each reverse step is: optional corrector steps at level t (each followed by DC), one
    denoiser evaluation, one ``step`` from t to the next grid time, then DC. With t0 = 1
    and x_init = 0 this is the usual conditional sampler from pure noise.

    Args:
        denoiser: D(x_t, t) -> x0_hat (:mod:`ccdf.denoisers`).
        schedule: the forward process; ``schedule.timesteps(num_steps, 1)`` is the time grid.
        op: measurement operator; ``y`` its measurement (``[B, ...]``).
        x_init: initial estimate ``[B, C, H, W]`` (model range).
        t0: start time in (0, 1], a float or one value per item: item b joins the batched
            pass when the clock reaches its own ``round(t0_b * num_steps)`` steps from the end,
            so one pass serves several t0 values.
        num_steps: N, the steps of the full [0, 1] grid; the run takes N' = round(t0 N).
        step: ``"ddpm"``/``"ancestral"`` or ``"ddim"`` (:data:`ccdf.sampling.steps.STEPS`), or a callable.
        variance: ancestral variance ``beta`` | ``beta_tilde`` | ``learned``.
        eta: DDIM's eta.
        corrector: ``"langevin"`` or None; ``n_corrector`` steps per level with signal-to-noise
            ``snr`` and step-size rule ``corrector_step`` (:func:`ccdf.sampling.steps.langevin_correct`).
        dc: ``"project"`` | ``"none"`` (:data:`ccdf.sampling.dc.DC_FACTORIES`) or a callable.
        x0_clip: clamp x0_hat to [-c, c] (guided-diffusion's ``clip_denoised``), or None.
        generator: a generator or one per item (:mod:`ccdf.utils.rng`).
        callback: called with :class:`StepInfo` after each reverse step.
        progress: show a progress bar.

    Returns:
        The reconstruction ``[B, C, H, W]``.

    Network evaluations per item: N' (1 + n_corrector) with a corrector, N' without
    (:func:`expected_nfe`).
    """
    if x_init.ndim < 2:
        raise ValueError(f"x_init must be batched [B, ...], got shape {tuple(x_init.shape)}")
    batch = x_init.shape[0]
    if y.shape[0] != batch:
        raise ValueError(f"y has batch size {y.shape[0]} but x_init has {batch}")
    k_items = reverse_steps(t0, num_steps)
    if k_items.numel() == 1:
        k_items = k_items.expand(batch)
    elif k_items.numel() != batch:
        raise ValueError(f"got {k_items.numel()} t0 values for a batch of {batch}")
    step_fn = _resolve(step, STEPS, "step")
    corr_fn = None if corrector is None else _resolve(corrector, CORRECTORS, "corrector")
    dc_fn = _resolve(dc, DC_FACTORIES, "dc")
    if not callable(dc):
        dc_fn = dc_fn(op, schedule)
    if op(x_init).shape != y.shape:
        raise ValueError(f"A(x_init) has shape {tuple(op(x_init).shape)} but y has shape {tuple(y.shape)}")

    k_max = int(k_items.max())
    grid = schedule.timesteps(num_steps, t_start=k_max / num_steps)
    if grid.shape[0] != k_max + 1:
        raise ValueError(f"schedule grid has {grid.shape[0]} points, expected {k_max + 1}")
    x = x_init.clone()
    iterator = range(k_max)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="ccdf", unit="step", leave=False)
    all_active = bool((k_items == k_max).all())
    for i in iterator:
        t_cur, t_next = grid[i], grid[i + 1]
        remaining = k_max - i
        joining = k_items == remaining
        if bool(joining.any()):
            idx = joining.nonzero().reshape(-1)
            x[idx] = forward_diffuse(schedule, x_init[idx], t_cur, select_generators(generator, joining))
        active = k_items >= remaining
        if all_active:
            xa, ya, ga = x, y, generator
        else:
            xa, ya, ga = x[active], y[active], select_generators(generator, active)
        # Steps and DC take the scalar times (they broadcast); the denoiser gets a [B] vector.
        t_vec = t_cur.expand(xa.shape[0])
        if corr_fn is not None:
            for _ in range(n_corrector):
                out = _denoise(denoiser, xa, t_vec, x0_clip)
                xa = dc_fn(
                    corr_fn(schedule, xa, out, t_cur, t_next, snr=snr, step_size=corrector_step, generator=ga),
                    ya,
                    t_cur,
                    ga,
                )
        out = _denoise(denoiser, xa, t_vec, x0_clip)
        xa = step_fn(schedule, xa, out, t_cur, t_next, variance=variance, eta=eta, generator=ga)
        xa = dc_fn(xa, ya, t_next, ga)
        if all_active:
            x = xa
        else:
            x[active] = xa
        if callback is not None:
            callback(StepInfo(i=i, t=float(t_cur), x=xa, x0_hat=out.x0_hat, active=active))
    return x


def _denoise(denoiser: Denoiser, x: Tensor, t: Tensor, x0_clip: float | None) -> DenoiserOutput:
    out = as_output(denoiser(x, t))
    if out.x0_hat.shape != x.shape:
        raise ValueError(f"denoiser returned shape {tuple(out.x0_hat.shape)} for input {tuple(x.shape)}")
    if x0_clip is not None:
        out = DenoiserOutput(out.x0_hat.clamp(-x0_clip, x0_clip), out.var_frac)
    return out
