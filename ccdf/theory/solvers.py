r"""Exact propagation of the linear solvers (DDNM, ΠGDM, DiffPIR, DPM-Solver++(2M), proximal data step).

With the exact Gaussian denoiser ``D_t = a_t Sigma (a_t^2 Sigma + s_t^2 I)^{-1}`` (prior mean 0 WLOG: every map
below keeps ``a_t mu`` on the mean path), each grid step of these solvers is affine in the state, the
measurement y and fresh white noise. This module writes each step as such a map, in the pixel basis and
with dense matrices, from the solvers' own formulas (:mod:`ccdf.sampling.solvers`,
:mod:`ccdf.sampling.conditioning`, :class:`ccdf.sampling.guidance.PiGDM`), and accumulates them backwards
from the last step as :func:`ccdf.theory.propagation.propagate` does, so that one pass gives E and D for
every N'.

Multistep state: DPM-Solver++(2M) carries the previous x0_hat, so its state is the stack ``Z = (x, x0_prev)``
``[2n]``. An item's first step has no history (first-order start), so level j has two maps: the *entry* map
``x_j -> Z_{j-1}`` (the first step of a run with N' = j) and the *body* map ``Z_j -> Z_{j-1}`` (a later step).
With ``x_0 = T~_j Z_j + K_j y + xi_j`` accumulated over body maps (``T~_0 = [I, 0]``), the run with N' = j
has ``T = T~_{j-1} E_j``; one-step solvers have ``Z = x`` and entry = body.

The operator is the problem's orthogonal projector P (a pixel mask for :class:`ccdf.operators.Inpainting`):
``A^+ A = P`` and ``prox(v, y, rho) = v + P (y - P v) / (1 + rho)``. The measurement is
``y = P x_true + sigma_y P n``; E and D are as in :mod:`ccdf.theory.propagation`.
Not covered (``ValueError``): DPS (its step is the gradient of ``||y - A x0_hat||``, not affine in the
state), correctors (use :func:`ccdf.theory.propagate`), the learned variance, ``x0_clip``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ccdf.theory.problems import LinearGaussianProblem
from ccdf.theory.propagation import Propagation, grid_coefficients


@dataclass
class Affine:
    """``X u + Y y + Z w``: an affine map of the input state u, the measurement y and white noise w ``[2n]``
    (the step's solver noise z, then the data step's noise; each step draws its own)."""

    X: np.ndarray
    Y: np.ndarray
    Z: np.ndarray
    __array_ufunc__ = None  # ``matrix @ affine`` and ``numpy scalar * affine`` use the methods below

    def __add__(self, other: Affine) -> Affine:
        return Affine(self.X + other.X, self.Y + other.Y, self.Z + other.Z)

    def __sub__(self, other: Affine) -> Affine:
        return Affine(self.X - other.X, self.Y - other.Y, self.Z - other.Z)

    def __rmul__(self, c: float) -> Affine:
        return Affine(c * self.X, c * self.Y, c * self.Z)

    def __rmatmul__(self, m: np.ndarray) -> Affine:
        return Affine(m @ self.X, m @ self.Y, m @ self.Z)


@dataclass
class _Level:
    """Grid values of one level t -> s (t_prev: the level before t, None at the top)."""

    a_t: float
    s_t: float
    a_s: float
    s_s: float
    lam_t: float  # log(a_t / s_t)
    lam_s: float
    lam_prev: float | None
    den: np.ndarray  # [n, n] D_t


class _Ops:
    """The pieces every step uses: input variables, y, the noises, the projector and the prox."""

    def __init__(self, n: int, m_in: int, proj: np.ndarray) -> None:
        self.n, self.m_in, self.proj = n, m_in, proj
        self.zero = Affine(np.zeros((n, m_in)), np.zeros((n, n)), np.zeros((n, 2 * n)))

    def var(self, block: int) -> Affine:
        x = np.zeros((self.n, self.m_in))
        x[:, block * self.n : (block + 1) * self.n] = np.eye(self.n)
        return Affine(x, self.zero.Y, self.zero.Z)

    def y(self) -> Affine:
        return Affine(self.zero.X, np.eye(self.n), self.zero.Z)

    def noise(self, k: int) -> Affine:
        z = np.zeros((self.n, 2 * self.n))
        z[:, k * self.n : (k + 1) * self.n] = np.eye(self.n)
        return Affine(self.zero.X, self.zero.Y, z)

    def prox(self, v: Affine, rho: float) -> Affine:
        """``argmin_u ||P u - y||^2 + rho ||u - v||^2`` (rho = 0: the projection)."""
        return v + (1 / (1 + rho)) * (self.proj @ (self.y() - v))

    def diffused_y(self, a: float, s: float) -> Affine:
        """``A^+ y_s`` of :class:`~ccdf.sampling.conditioning.Projection`: ``P(a y + s w)``."""
        return self.proj @ (a * self.y() + s * self.noise(1))


def _classify(solver, cond) -> tuple[object, object, str, str]:
    """The solver and conditioning objects (names accepted) and their kinds; ValueError when not covered."""
    from ccdf.sampling.ccdf import make_solver
    from ccdf.sampling.conditioning import NoConditioning, Projection, Prox, make_conditioning
    from ccdf.sampling.guidance import DPS, PiGDM
    from ccdf.sampling.solvers import DDNM, DiffPIR, DPMSolverPP2M, StepSolver

    solver, cond = make_solver(solver), make_conditioning(cond)
    if isinstance(cond, DPS):
        raise ValueError(
            "DPS is not covered: its guidance is the gradient of the norm ||y - A x0_hat(x_t)||, which is not affine "
            "in the state even for a Gaussian prior, so the linear-Gaussian propagation does not apply"
        )
    kinds = ((PiGDM, "pigdm"), (Prox, "prox"), (Projection, "project"), (NoConditioning, "none"))
    cond_kind = next((k for c, k in kinds if type(cond) is c), None)
    if cond_kind is None:
        raise ValueError(f"conditioning {cond!r} is not covered; covered: project, prox, none, PiGDM")
    if isinstance(solver, StepSolver):
        if solver.n_corrector or solver.corrector is not None:
            raise ValueError("correctors are covered by ccdf.theory.propagate (dc=project), not here")
        if solver.step_rule not in ("ddpm", "ancestral", "ddim") or solver.variance not in ("beta", "beta_tilde"):
            raise ValueError(f"{solver!r} is not covered: steps ddpm | ancestral | ddim, variance beta | beta_tilde")
        return solver, cond, ("ddim" if solver.step_rule == "ddim" else "ddpm"), cond_kind
    for cls, kind in ((DDNM, "ddnm"), (DiffPIR, "diffpir"), (DPMSolverPP2M, "dpmpp_2m")):
        if type(solver) is cls:
            return solver, cond, kind, cond_kind
    raise ValueError(f"solver {solver!r} is not covered; covered: ddpm, ddim, ddnm, diffpir, dpmpp_2m")


def _step_map(kind: str, cond_kind: str, solver, cond, lv: _Level, ops: _Ops, sigma_y: float, first: bool) -> Affine:
    """One grid step t -> s (solver, then the conditioning) as an affine map of the input state."""
    p = ops.proj
    x = ops.var(0)
    x0 = lv.den @ x
    if cond_kind == "pigdm":
        r2 = cond.data_var * lv.s_t**2 / (lv.a_t**2 * cond.data_var + lv.s_t**2)
        direction = lv.den @ (ops.prox(x0, sigma_y**2 / r2) - x0)  # J^T (prox(x0_hat) - x0_hat), J = D_t
        if cond.weighting == "score":
            x0 = x0 + (cond.weight * lv.s_t**2 / (lv.a_t * r2)) * direction
    z = ops.noise(0)
    a_t, s_t, a_s, s_s = lv.a_t, lv.s_t, lv.a_s, lv.s_s
    var_ts = max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0)
    var_post = var_ts * s_s**2 / s_t**2
    if kind == "ddpm":
        x_s = (a_s * var_ts / s_t**2) * x0 + ((a_t / a_s) * s_s**2 / s_t**2) * x
        if s_s > 0:
            x_s = x_s + math.sqrt(var_ts if solver.variance == "beta" else var_post) * z
    elif kind == "ddim":
        var_eta = solver.eta**2 * var_post
        eps = (1 / s_t) * (x - a_t * x0)
        x_s = a_s * x0 + math.sqrt(max(s_s**2 - var_eta, 0.0)) * eps + math.sqrt(var_eta) * z
    elif kind == "ddnm":
        eps = (1 / s_t) * (x - a_t * x0)
        keep, c = math.sqrt(1 - solver.eta**2), a_s * sigma_y
        lam, z_coef, eps_coef = 1.0, s_s * solver.eta * np.eye(ops.n), s_s * keep * np.eye(ops.n)
        if c > 0 and s_s != c:
            eps_coef = s_s * keep * (np.eye(ops.n) - p)
            if s_s < c:
                lam = s_s * keep / c
            else:
                z_coef = math.sqrt(s_s**2 - c**2) * p + s_s * solver.eta * (np.eye(ops.n) - p)
        x_s = a_s * (x0 - lam * (p @ (x0 - ops.y()))) + z_coef @ z + eps_coef @ eps
    elif kind == "diffpir":
        rho = solver.lam * max(sigma_y, solver.sigma_floor) ** 2 / (s_t / a_t) ** 2
        x0 = ops.prox(x0, rho)
        eps = (1 / s_t) * (x - a_t * x0)
        x_s = a_s * x0 + s_s * (math.sqrt(1 - solver.zeta) * eps + math.sqrt(solver.zeta) * z)
    else:  # dpmpp_2m
        if s_s == 0:
            x_s = x0
        else:
            h = lv.lam_s - lv.lam_t
            d = x0
            if not first:
                r = (lv.lam_t - lv.lam_prev) / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * ops.var(1)
            x_s = (s_s / s_t) * x - (a_s * math.expm1(-h)) * d
    if cond_kind == "pigdm" and cond.weighting == "official":
        x_s = x_s + (cond.weight * a_s * a_t) * direction
    elif cond_kind == "project" or (cond_kind == "prox" and sigma_y == 0):
        x_s = x_s - p @ x_s + ops.diffused_y(a_s, s_s)
    elif cond_kind == "prox":
        gamma = cond.gamma_scale * s_s**2
        if gamma > 0:
            x_s = x_s + (1 / (1 + (a_s * sigma_y) ** 2 / gamma)) * (ops.diffused_y(a_s, s_s) - p @ x_s)
    if kind == "dpmpp_2m":  # the stacked state (x_s, x0_hat): x0_hat is the next step's history
        return Affine(np.vstack([x_s.X, x0.X]), np.vstack([x_s.Y, x0.Y]), np.vstack([x_s.Z, x0.Z]))
    return x_s


def propagate_solver(
    problem: LinearGaussianProblem,
    schedule,
    num_steps: int,
    solver,
    cond="project",
    *,
    error_shapes: Sequence[np.ndarray] = (),
    store: Sequence[int] = (),
) -> Propagation:
    r"""Exact V(N'), h(N'), D0(N') of a linear solver for N' = 0..N (docs/reference/THEORY.md §2 for any affine solver).

    Args:
        problem: prior, projection and ``sigma_y``.
        schedule: the project's schedule; the grid is ``schedule.timesteps(num_steps, 1)``.
        num_steps: N.
        solver: a :class:`~ccdf.sampling.solvers.Solver` (or its name in
            :data:`~ccdf.sampling.solvers.SOLVERS`): ``StepSolver`` (ddpm/ddim, no corrector), ``DDNM``,
            ``DiffPIR``, ``DPMSolverPP2M``.
        cond: a :class:`~ccdf.sampling.conditioning.Conditioning` or its name: ``project``, ``prox``, ``none``,
            or :class:`~ccdf.sampling.guidance.PiGDM` (either weighting).
        error_shapes: factors B ``[n, r]`` (or ``[n]``) of the initial-error covariances, pixel basis.
        store: N' values at which to keep ``T`` and ``K`` ``[n, n]`` (pixel basis; ``x_0 = T x_{N'} + K y + xi``).

    Returns:
        A :class:`~ccdf.theory.propagation.Propagation`; ``stored[N'] = {"T", "K", "trQ"}``.

    Raises:
        ValueError: for DPS and for any solver or conditioning not listed.
    """
    solver, cond, kind, cond_kind = _classify(solver, cond)
    t_grid, alpha, sigma = grid_coefficients(schedule, num_steps)
    with np.errstate(divide="ignore"):
        lam_grid = np.log(alpha) - np.log(sigma)
    n, cov, proj, sigma_y = problem.n, problem.cov, problem.proj, float(problem.sigma_y)
    m = 2 * n if kind == "dpmpp_2m" else n
    factors = [np.asarray(b, dtype=np.float64).reshape(n, -1) for b in error_shapes]
    out = {k: np.zeros(num_steps + 1) for k in ("bias", "jump", "noise", "meas")}
    h = np.zeros((len(factors), num_steps + 1))
    h[:, 0] = [float(np.sum(f**2)) for f in factors]
    stored: dict[int, dict[str, np.ndarray]] = {}
    t_acc = np.eye(n, m)  # x_0 = t_acc Z_{j-1} + k_acc y + xi, tr Cov xi = trq
    k_acc, trq = np.zeros((n, n)), 0.0
    ident = np.eye(n)
    for j in range(1, num_steps + 1):
        a_t, s_t = alpha[j], sigma[j]
        den = a_t * cov @ np.linalg.inv(a_t**2 * cov + s_t**2 * ident)
        lv = _Level(a_t, s_t, alpha[j - 1], sigma[j - 1], lam_grid[j], lam_grid[j - 1],
                    lam_grid[j + 1] if j < num_steps else None, den)  # fmt: skip
        entry = _step_map(kind, cond_kind, solver, cond, lv, _Ops(n, n, proj), sigma_y, first=True)
        t_mat = t_acc @ entry.X
        k_mat = k_acc + t_acc @ entry.Y
        tr_q = trq + float(np.sum((t_acc @ entry.Z) ** 2))
        g = alpha[j] * t_mat + k_mat @ proj - ident
        out["bias"][j] = float(np.sum((g @ cov) * g))
        out["jump"][j] = sigma[j] ** 2 * float(np.sum(t_mat**2))
        out["noise"][j] = tr_q
        out["meas"][j] = sigma_y**2 * float(np.sum((k_mat @ proj) ** 2))
        for b, f in enumerate(factors):
            h[b, j] = alpha[j] ** 2 * float(np.sum((t_mat @ f) ** 2))
        if j in store:
            stored[j] = dict(T=t_mat, K=k_mat, trQ=np.array(tr_q))
        if j < num_steps:
            body = entry if m == n else _step_map(kind, cond_kind, solver, cond, lv, _Ops(n, m, proj), sigma_y, False)
            k_acc = k_acc + t_acc @ body.Y
            trq += float(np.sum((t_acc @ body.Z) ** 2))
            t_acc = t_acc @ body.X
    v = out["bias"] + out["jump"] + out["noise"] + out["meas"]
    d0 = 2 * out["jump"] + 2 * out["noise"]
    return Propagation(t0=t_grid, alpha=alpha, sigma=sigma, V=v, h=h, D0=d0, stored=stored, **out)
