r"""Automatic CCDF start time (``sampler.t0=auto``): t0 from the initializer's error and the posterior spread.

docs/reference/THEORY.md §3 and §9: with the exact posterior score, along a direction k with posterior variance s_k and
initial squared error e_k^2, CCDF's error after a forward jump of VE-equivalent noise ``sigma^2`` is
``u^2 e^2 + 2 s (1 - u)`` (DDPM; ``u = s/(s + sigma^2)``; DDIM: ``u e^2 + 2 s (1 - sqrt u)``), so the
best common t0 balances forgetting the initial error against re-sampling the posterior spread
(:func:`ccdf.theory.optimal_t0`). This module estimates the two inputs for any model and operator, on
calibration images:

* ``e_k^2``: the mean of ``|T (I - A^+A)(x_init - x0)|_k^2``, the initializer's error on the unknown
  part (model range);
* ``s_k``: the mean of ``|T (I - A^+A)(x_a - x_b)|_k^2 / 2`` for two independent posterior samples per
  item (:func:`ccdf.sampling.sample_ccdf` from t0 = 1, one generator per item and sample),

or takes them as given scalars (means over all elements), and then treats the directions k as the
posterior's eigen-directions. That is the approximation: the closed form is exact in the posterior's
eigenbasis, and with a fixed basis T it assumes the posterior covariance is (nearly) diagonal in T.
Two bases: ``"fourier"`` (the orthonormal 2-D DFT per channel; the default: a stationary image prior
is diagonal there, and on THEORY's box-inpainting problem this lands within 3% of the optimal error
where pixels miss by up to 2.3x, because pixel variances hide the posterior's many low-variance
directions) and ``"pixel"`` (exact when the problem is posed in its eigenbasis, as THEORY's
eigen-subsampling). Each direction sees the forward noise only through its unknown share
``d_k = (T (I - A^+A) T^H)_{kk}`` (exact for masks and Cartesian MRI in either basis, a ratio
Hutchinson estimate otherwise, :func:`unknown_diagonal`), so :func:`choose_t0` passes
``(s_k/d_k, e_k^2/d_k)``. Complex images split every element into two real directions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ccdf.operators.base import Operator, measure
from ccdf.theory.closed_form import SAMPLERS, ideal_terms, optimal_t0
from ccdf.theory.directions import (  # noqa: F401 (direction_energy, null_component: exported here too)
    BASES,
    direction_energy,
    initial_error_sum,
    null_component,
    posterior_variance_sum,
    unknown_diagonal,
)
from ccdf.utils.rng import per_sample_generators

STREAM_MEASURE, STREAM_SAMPLE_A, STREAM_SAMPLE_B, STREAM_PROBES = 1, 2, 3, 4
MIN_UNKNOWN = 0.01  # directions whose unknown share d_k is below this are known (left out)


@dataclass
class AutoT0:
    """The automatic start time and the estimates behind it.

    Attributes:
        t0: the chosen start time (``num_reverse_steps / N``; ``1/N`` when diffusion does not help).
        num_reverse_steps: the predicted optimal N' (0 = no diffusion predicted to help).
        num_steps: N.
        sigma2: the forward jump's VE-equivalent noise level at t0.
        helps: whether diffusing (N' >= 1) is predicted to lower the error.
        init_mse: mean over all image elements of the initializer's squared error on the unknown part.
        post_var: mean over all image elements of the posterior variance.
        predicted_mse: predicted mean squared error per element at t0 (ideal model, pixels as directions).
        predicted_mse_no_diffusion: the same without diffusion (= ``init_mse``).
        unknown_fraction: mean of ``d(p)``, the unknown part's share of the elements.
        sampler: the closed form used, ``"ddpm"`` or ``"ddim"``.
        basis: the directions, ``"fourier"`` or ``"pixel"`` (``"given"`` for :func:`choose_t0`).
        runs: K, the number of averaged runs the choice is for (``sampler.average``; 1: a single run).
        source: ``{"init_mse": "calibration" | "given", "post_var": ...}``.
        calib_images: calibration images used (0 when both values were given).
        estimate_steps: N of the posterior-sample grid (None when ``post_var`` was given).
        seconds: time spent.
    """

    t0: float
    num_reverse_steps: int
    num_steps: int
    sigma2: float
    helps: bool
    init_mse: float
    post_var: float
    predicted_mse: float
    predicted_mse_no_diffusion: float
    unknown_fraction: float
    sampler: str
    basis: str
    runs: int = 1
    source: dict[str, str] = field(default_factory=dict)
    calib_images: int = 0
    estimate_steps: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Sampler steps the closed forms cover (:data:`ccdf.sampling.steps.STEPS` names) and correctors (None: none).
COVERED_STEPS = ("ddpm", "ancestral", "ddim")
COVERED_CORRECTORS = (None, "langevin")


def closed_form_sampler(step: Any, eta: float = 0.0, *, corrector: Any = None) -> str:
    """The closed form for a sampler setting: ``"ddim"`` for deterministic DDIM (eta = 0), else ``"ddpm"``.

    DDPM steps (``ddpm``/``ancestral``: beta, beta-tilde or learned variance), VE predictor-corrector
    (``corrector="langevin"``) and stochastic DDIM use the DDPM form. Any other step (another name, a
    callable) or corrector is not covered by the theory and raises ``ValueError``.
    """
    if not isinstance(step, str) or step not in COVERED_STEPS:
        name = getattr(step, "__qualname__", step)
        shown = repr(step) if isinstance(step, str) else f"<{type(step).__name__} {name}>"
        raise ValueError(
            f"sampler.t0=auto does not cover sampler.step={shown}: its closed form (docs/theory.md) is "
            f"derived for the steps {', '.join(COVERED_STEPS)}; choose one of them or give a number as sampler.t0"
        )
    if corrector not in COVERED_CORRECTORS:
        raise ValueError(
            f"sampler.t0=auto does not cover sampler.corrector={corrector!r}; covered: "
            f"{', '.join(str(c) for c in COVERED_CORRECTORS)} (null: none); or give a number as sampler.t0"
        )
    eta = float(eta)
    if not math.isfinite(eta):
        raise ValueError(f"sampler.eta must be finite, got {eta}")
    return "ddim" if step == "ddim" and eta == 0.0 else "ddpm"


def closed_form_of(settings: dict[str, Any]) -> str:
    """The closed form for a run's sampler settings (``sample_ccdf``'s keywords): ``"ddim"`` or ``"ddpm"``.

    Classic settings (no ``solver``) go to :func:`closed_form_sampler`. Every solver and conditioning whose
    Gaussian-prior chain is affine is covered (:func:`ccdf.theory.solvers.propagate_solver` computes it
    exactly; the Monte Carlo tests check it): deterministic solvers (DPM-Solver++(2M), DDNM with eta = 0,
    DiffPIR with zeta = 0, DDIM with eta = 0) take the DDIM form, stochastic ones the DDPM form; the
    conditionings ``project``, ``prox``, ``none`` and ΠGDM. DPS (nonlinear guidance) and anything else
    raise ``ValueError`` with the reason, naming the key.
    """
    from ccdf.sampling.ccdf import make_solver
    from ccdf.sampling.conditioning import NoConditioning, Projection, Prox
    from ccdf.sampling.guidance import DPS, PiGDM
    from ccdf.sampling.solvers import DDNM, DiffPIR, DPMSolverPP2M, StepSolver

    dc = settings.get("dc", "project")
    if isinstance(dc, DPS):
        raise ValueError(
            f"sampler.dc={dc!r}: DPS's guidance is the gradient of the norm ||y - A x0_hat(x_t)||, which is not "
            "affine in the state even for a Gaussian prior, so the linear-Gaussian theory (docs/theory.md) has no "
            "closed form for it; give a number as sampler.t0"
        )
    if not (dc in ("project", "prox", "none") or type(dc) in (Projection, Prox, NoConditioning, PiGDM)):
        raise ValueError(
            f"sampler.dc={dc!r}: covered are project, prox, none and ccdf.sampling.guidance.PiGDM; "
            "give a number as sampler.t0"
        )
    solver = settings.get("solver")
    if solver is None:
        eta = float(settings.get("eta", 0.0) or 0.0)
        return closed_form_sampler(settings.get("step", "ddpm"), eta, corrector=settings.get("corrector"))
    solver = make_solver(solver)
    if type(solver) is StepSolver:
        return closed_form_sampler(solver.step_rule, solver.eta, corrector=solver.corrector)
    deterministic = {DPMSolverPP2M: lambda v: True, DDNM: lambda v: v.eta == 0, DiffPIR: lambda v: v.zeta == 0}
    if type(solver) not in deterministic:
        raise ValueError(
            f"sampler.solver={solver!r}: covered are StepSolver, DDNM, DiffPIR and DPMSolverPP2M; "
            "give a number as sampler.t0"
        )
    return "ddim" if deterministic[type(solver)](solver) else "ddpm"


def _items(data: Any, count: int) -> list[tuple[int, Tensor]]:
    """The first ``count`` (index, x0) pairs of a data set (items ``{"x0", "index"}``) or a tensor."""
    if isinstance(data, Tensor):
        return [(i, data[i]) for i in range(min(count, data.shape[0]))]
    out = []
    for k in range(min(count, len(data))):
        item = data[k]
        out.append((int(item.get("index", k)), item["x0"]))
    return out


def calibration_generators(seed: int, indices: Sequence[int], stream: int) -> list[torch.Generator]:
    """Per-item generators for one calibration stream (measurement, sample a, sample b)."""
    return per_sample_generators(seed, [(stream << 40) + int(i) for i in indices])


@torch.no_grad()
def calibrate(
    denoiser: Callable,
    schedule,
    op: Operator,
    initializer: Callable,
    data: Any,
    *,
    num_images: int,
    estimate_steps: int,
    seed: int = 0,
    sigma_y: float = 0.0,
    batch_size: int = 4,
    sampler_kwargs: dict[str, Any] | None = None,
    need_init: bool = True,
    need_post: bool = True,
    basis: str = "fourier",
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    r"""Per-direction estimates of ``e_k^2`` and ``s_k`` on calibration images (never the evaluation set).

    Each calibration item i draws its measurement noise and its two posterior samples from its own
    generators (seeded by ``(seed, stream, i)``): the estimates do not depend on the batch size.

    Args:
        denoiser, schedule, op, initializer: the run's components.
        data: a data set with ``{"x0", "index"}`` items, or a ``[M, C, H, W]`` tensor.
        num_images: how many calibration images to use (the first ones).
        estimate_steps: N of the grid for the posterior samples (t0 = 1, so N network evaluations each).
        seed: the run's seed; sigma_y: measurement noise; batch_size: items per pass.
        sampler_kwargs: the run's sampler settings (step, variance, eta, corrector, ...).
        need_init, need_post: which of the two maps to estimate.
        basis: the directions, ``"fourier"`` or ``"pixel"``.
        device: where to run the sampler.

    Returns:
        dict with ``err2`` and ``post_var`` (mean maps ``[C, H, W]``, ``[..., 2]`` for complex images, or
        None), ``images`` (count), ``shape`` and ``complex``.
    """
    items = _items(data, int(num_images))
    if not items:
        raise ValueError("the calibration data set is empty")
    err_sum, var_sum = None, None
    for start in range(0, len(items), int(batch_size)):
        chunk = items[start : start + int(batch_size)]
        idx = [i for i, _ in chunk]
        x0 = torch.stack([x for _, x in chunk]).to(device)
        y = measure(op, x0, float(sigma_y), calibration_generators(seed, idx, STREAM_MEASURE))
        x_init = initializer(y, op)
        if x_init.shape != x0.shape:
            raise ValueError(f"initializer returned shape {tuple(x_init.shape)}, images are {tuple(x0.shape)}")
        if need_init:
            e = initial_error_sum(op, x0, x_init, basis)
            err_sum = e if err_sum is None else err_sum + e
        if need_post:
            v = posterior_variance_sum(
                denoiser, schedule, op, y, x_init, num_steps=int(estimate_steps),
                generators_a=calibration_generators(seed, idx, STREAM_SAMPLE_A),
                generators_b=calibration_generators(seed, idx, STREAM_SAMPLE_B),
                sampler_kwargs=sampler_kwargs, basis=basis, sigma_y=float(sigma_y),
            )  # fmt: skip
            var_sum = v if var_sum is None else var_sum + v
    count = len(items)
    return {
        "err2": None if err_sum is None else err_sum / count,
        "post_var": None if var_sum is None else var_sum / count,
        "images": count,
        "shape": tuple(items[0][1].shape),
        "complex": bool(items[0][1].is_complex()),
    }


def _as_map(value: Any, d: np.ndarray) -> np.ndarray:
    """A per-element map: arrays as they are; a scalar (mean over all elements) spread in proportion to d."""
    if np.ndim(value) == 0:
        mean_d = float(d.mean())
        return float(value) * d / mean_d if mean_d > 0 else np.zeros_like(d)
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != d.shape:
        raise ValueError(f"estimate of shape {arr.shape} does not match the unknown-fraction map {d.shape}")
    return arr


def choose_t0(
    schedule,
    num_steps: int,
    *,
    err2: Any,
    post_var: Any,
    unknown_diag: Any = None,
    sampler: str = "ddpm",
    runs: int = 1,
) -> AutoT0:
    r"""The MSE-optimal t0 from per-direction (or scalar) estimates (docs/reference/THEORY.md §3, directions
    independent).

    Direction k enters :func:`ccdf.theory.optimal_t0` as ``(s_k/d_k, e_k^2/d_k)``: it sees the forward
    noise only through its unknown share d_k. Directions with ``d_k <= 0.01`` are measured and left out.

    Args:
        schedule: the sampler's schedule; num_steps: N.
        err2: ``e_k^2`` per direction (any shape), or a scalar: the mean over all directions (= the
            mean over pixels of the squared error on the unknown part, in any orthonormal basis).
        post_var: ``s_k``, the same way.
        unknown_diag: ``d_k`` of the same shape (None: every direction fully unknown; this is how an
            exact posterior spectrum is passed, with its eigen-directions as the directions).
        sampler: ``"ddpm"`` or ``"ddim"`` closed form.
        runs: K: choose t0 for the mean of K independent runs (``sampler.average=K``), whose run-to-run
            spread averages down (:func:`ccdf.theory.closed_form.ideal_terms`); the best t0 grows with K.

    Returns:
        :class:`AutoT0` (``source`` and the calibration fields left empty).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    shape = next((np.shape(v) for v in (err2, post_var, unknown_diag) if v is not None and np.ndim(v) > 0), (1,))
    d = np.ones(shape) if unknown_diag is None else np.asarray(unknown_diag, dtype=np.float64)
    e2, s = _as_map(err2, d), _as_map(post_var, d)
    for arr in (e2, s):
        if np.any(arr < -1e-9 * max(float(np.abs(arr).max()), 1e-300)):
            raise ValueError("error and variance estimates must be >= 0")
    e2, s = np.clip(e2, 0.0, None), np.clip(s, 0.0, None)
    keep = d > MIN_UNKNOWN
    if not keep.any():
        raise ValueError("nothing is unknown: the operator measures every element")
    dk = d[keep]
    e2n, sn = e2[keep] / dk, s[keep] / dk
    floor = max(float(sn.mean()) * 1e-6, 1e-20)
    sn = np.maximum(sn, floor)
    choice = optimal_t0(schedule, num_steps, sn, e2n, sampler, runs=runs)
    numel = d.size

    def mse(sigma2: float) -> float:  # sum_k d_k E(s_k/d_k, e_k^2/d_k) / numel
        if sigma2 <= 0:
            return float(e2.sum() / numel)
        return float(np.sum(dk * ideal_terms(sn, e2n, sigma2, sampler, runs)) / numel)

    s2 = choice.sigma2 if choice.helps else 0.0
    return AutoT0(
        t0=choice.t0,
        num_reverse_steps=choice.num_reverse_steps,
        num_steps=int(num_steps),
        sigma2=choice.sigma2,
        helps=choice.helps,
        init_mse=float(e2.mean()),
        post_var=float(s.mean()),
        predicted_mse=mse(s2),
        predicted_mse_no_diffusion=mse(0.0),
        unknown_fraction=float(d.mean()),
        sampler=sampler,
        basis="given",
        runs=int(runs),
    )


def auto_t0(
    denoiser: Callable,
    schedule,
    op: Operator,
    initializer: Callable,
    data: Any,
    *,
    num_steps: int,
    calib_images: int = 4,
    estimate_steps: int = 100,
    init_mse: float | None = None,
    post_var: float | None = None,
    seed: int = 0,
    sigma_y: float = 0.0,
    batch_size: int = 4,
    sampler_kwargs: dict[str, Any] | None = None,
    basis: str = "fourier",
    probes: int = 32,
    device: torch.device | str = "cpu",
    runs: int = 1,
) -> AutoT0:
    r"""``sampler.t0=auto``: estimate what is not given on calibration images and choose t0.

    Args:
        denoiser, schedule, op, initializer: the run's components.
        data: calibration images (data set or tensor); unused when both values are given (may be None
            then, but one image is still needed for the shape unless ``data`` is given).
        num_steps: N of the run.
        calib_images: calibration images to use.
        estimate_steps: N of the posterior-sample grid (coarser than ``num_steps`` is fine).
        init_mse: given mean per-element squared error of x_init on the unknown part (model range).
        post_var: given mean per-element posterior variance.
        seed, sigma_y, batch_size: as the run.
        sampler_kwargs: the run's sampler settings without ``t0``/``num_steps`` (also pick the closed form).
        basis: the directions, ``"fourier"`` (default: stationary image priors are nearly diagonal there)
            or ``"pixel"``.
        probes: Hutchinson probes for the unknown shares ``d_k``.
        device: where to run the calibration.
        runs: K: choose t0 for the mean of K runs (``sampler.average=K``; the posterior samples of the
            calibration are single runs).

    Returns:
        :class:`AutoT0`.
    """
    import time

    tic = time.perf_counter()
    for name, value in (("init_mse", init_mse), ("post_var", post_var)):
        if value is not None and not float(value) >= 0:
            raise ValueError(f"auto_t0.{name} must be >= 0, got {value}")
    if post_var is not None and float(post_var) == 0:
        raise ValueError("auto_t0.post_var must be > 0 (a zero posterior variance leaves nothing to sample)")
    if data is None:
        raise ValueError("auto t0 needs calibration data (at least one image, for the shapes)")
    if basis not in BASES:
        raise ValueError(f"unknown basis {basis!r}; choose one of {BASES}")
    kw = dict(sampler_kwargs or {})
    sampler = closed_form_of(kw)
    need_init, need_post = init_mse is None, post_var is None
    if need_init or need_post:
        cal = calibrate(
            denoiser, schedule, op, initializer, data, num_images=calib_images, estimate_steps=estimate_steps,
            seed=seed, sigma_y=sigma_y, batch_size=batch_size, sampler_kwargs=kw, need_init=need_init,
            need_post=need_post, basis=basis, device=device,
        )  # fmt: skip
        like = torch.zeros((1, *cal["shape"]), dtype=torch.complex64 if cal["complex"] else torch.float32)
        images = int(cal["images"])
    else:
        cal = {"err2": None, "post_var": None}
        x0 = _items(data, 1)
        if not x0:
            raise ValueError("the calibration data set is empty")
        like = x0[0][1][None]
        images = 0
    d = unknown_diagonal(op, like.to(device), basis=basis, probes=probes, seed=seed).numpy()
    choice = choose_t0(
        schedule,
        num_steps,
        err2=cal["err2"].numpy() if need_init else float(init_mse),
        post_var=cal["post_var"].numpy() if need_post else float(post_var),
        unknown_diag=d,
        sampler=sampler,
        runs=runs,
    )
    choice.source = {
        "init_mse": "calibration" if need_init else "given",
        "post_var": "calibration" if need_post else "given",
    }
    choice.basis = basis
    choice.calib_images = images
    choice.estimate_steps = int(estimate_steps) if need_post else None
    choice.seconds = round(time.perf_counter() - tic, 2)
    return choice
