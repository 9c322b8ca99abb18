"""The numbers of the theory report (``theory.json``): per test problem and problem-independent.

Errors are in docs/reference/THEORY.md's units (sum over the 256 pixels); eps0 is given per unknown pixel (``r``,
``eps0 = r n_u``). Sampler variants: keys of :data:`VARIANTS` (settings of :func:`ccdf.theory.propagate`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ccdf.theory.closed_form import (
    feasibility_threshold,
    helps_threshold_ideal,
    ideal_curve,
    min_steps_for_ratio,
    no_diffusion_threshold,
    sigma2_of_t0,
)
from ccdf.theory.frechet import conditional_output_law, output_covariance
from ccdf.theory.paper import (
    contraction_factor,
    paper_constants,
    theorem1_bound,
    theorem2_threshold,
    unknown_block_norm,
)
from ccdf.theory.problems import (
    LinearGaussianProblem,
    box_inpainting,
    eigen_subsampling,
    error_shape,
    periodic_prior_cov,
)
from ccdf.theory.propagation import Propagation, propagate

PROBLEMS: dict[str, Callable[[], LinearGaussianProblem]] = {"box": box_inpainting, "eigen": eigen_subsampling}
VARIANTS: dict[str, dict[str, Any]] = {  # name -> propagate() settings
    "ddpm": dict(),
    "ddpm_theory": dict(final_noise=True),
    "beta_tilde": dict(variance="beta_tilde"),
    "exact": dict(variance="exact"),
    "ddim": dict(step="ddim"),
}
VARIANT_LABELS = {
    "ddpm": "DDPM (project)",
    "ddpm_theory": "DDPM (THEORY's recursion)",
    "beta_tilde": "DDPM, beta-tilde",
    "exact": "exact kernel",
    "ddim": "DDIM",
}
SHAPES = ("iso", "top", "bottom")
DEFAULT_EPS0 = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
THEOREM1_EPS0 = (0.0, 0.1, 1.0, 10.0)


def _sig(x: float, digits: int = 6) -> float | None:
    """A float rounded to ``digits`` significant digits (None for nan/inf: valid JSON)."""
    x = float(x)
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None


def _arr(a: np.ndarray, digits: int = 6) -> list[float | None]:
    return [_sig(v, digits) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def _argmin(curve: np.ndarray) -> int:
    return int(np.argmin(curve))


def _log_index(num_steps: int, points: int = 160) -> np.ndarray:
    """N' = 1..N, log-spaced (for curves against t0 on a log axis; plotting every step is slow)."""
    return np.unique(np.round(np.geomspace(1, num_steps, points)).astype(int))


def _frechet_grid(num_steps: int, points: int) -> list[int]:
    """N' values for the Fréchet curves: 0, then log-spaced up to N (dense at small t0)."""
    grid = np.unique(np.round(np.geomspace(1, num_steps, max(points - 1, 2))).astype(int))
    return [0, *[int(j) for j in grid]]


def _beats_from(e: np.ndarray) -> int | None:
    """Smallest N' >= 1 from which every N' < N beats the full run (E(N') < E(N)); None if none."""
    ok = e[1:-1] < e[-1]
    bad = np.flatnonzero(~ok)
    if bad.size == 0:
        return 1
    first = int(bad[-1]) + 2
    return first if first < e.size - 1 else None


def _violations(d: np.ndarray, bound: np.ndarray) -> dict[str, int]:
    idx = np.flatnonzero(d[1:] > bound[1:]) + 1
    return {"count": int(idx.size), "max_reverse_steps": int(idx.max()) if idx.size else 0}


def _psd_sqrt(mat: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(0.5 * (mat + mat.T))
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def _frechet_centred(target_half: np.ndarray, cov: np.ndarray) -> float:
    r"""Squared Fréchet distance between N(0, cov) and N(0, S) given ``S^{1/2}`` (as
    :func:`ccdf.theory.frechet_distance`, reusing the fixed target's square root across calls)."""
    mid = target_half @ cov @ target_half
    cross = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (mid + mid.T)), 0.0, None))))
    return max(float(np.trace(cov) + np.sum(target_half * target_half)) - 2 * cross, 0.0)


# --- one test problem --------------------------------------------------------------------------------


def problem_numbers(
    name: str,
    schedule,
    num_steps: int,
    *,
    eps0_grid: Sequence[float],
    shapes: Sequence[str],
    samplers: Sequence[str],
    frechet_eps0: Sequence[float],
    frechet_points: int,
    mu: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Numbers (JSON-ready) and arrays (``problem``, ``props``, ``weights``, ``block``: for the figures
    and the reference checks) of one test problem."""
    pb = PROBLEMS[name]()
    factors = {k: error_shape(pb, k) for k in SHAPES}
    # e_k^2 / eps0 along the posterior eigen-directions (the closed forms' inputs)
    weights = {k: np.sum((pb.post_evecs.T @ f) ** 2, axis=1) for k, f in factors.items()}
    props: dict[str, Propagation] = {
        v: propagate(pb, schedule, num_steps, error_shapes=[factors[k] for k in SHAPES], **VARIANTS[v])
        for v in dict.fromkeys(("ddpm", "ddpm_theory", *samplers))
    }
    block = unknown_block_norm(pb, schedule, num_steps)
    s = pb.post_var
    out: dict[str, Any] = {
        "name": pb.name,
        "n": pb.n,
        "n_u": pb.n_u,
        "commuting": pb.commuting,
        "posterior": {
            "trace": _sig(s.sum()),
            "min": _sig(s.min()),
            "max": _sig(s.max()),
            "harmonic_mean": _sig(s.size / np.sum(1 / s)),
            "exact_sampler_error": _sig(2 * s.sum()),
        },
        "full_run_error": {v: _sig(props[v].V[-1]) for v in props},
        "tables": {v: _sampler_table(props[v], pb.n_u, eps0_grid, shapes, mu) for v in samplers},
        "ideal": _ideal_tables(schedule, num_steps, pb, weights, eps0_grid, shapes),
        "helps_threshold_ideal_per_unknown": {k: _sig(helps_threshold_ideal(s, weights[k]) / pb.n_u) for k in shapes},
        "theorem1": _theorem1(pb, props, schedule, num_steps),
        "theorem2": _theorem2(pb, props, mu),
        "mu": mu,
        "unknown_block_norm": _expansion(block, "max"),
        "mse_vs_frechet": _mse_vs_frechet(
            pb, props["ddpm"], factors["iso"], schedule, num_steps, frechet_eps0, frechet_points
        ),  # fmt: skip
        "curves": {
            v: {"V": _arr(pr.V), "D0": _arr(pr.D0), "h": {k: _arr(pr.h[i]) for i, k in enumerate(SHAPES)}}
            for v, pr in props.items()
        },
    }
    return out, dict(problem=pb, props=props, weights=weights, block=block)


def _expansion(factor: np.ndarray, max_key: str) -> dict[str, Any]:
    """The largest per-step factor and the steps i >= 1 where it exceeds 1 (the step expands)."""
    above = np.flatnonzero(factor[1:] > 1) + 1
    return {
        max_key: _sig(np.nanmax(factor)),
        "expansive_steps": int(above.size),
        "last_expansive_step": int(above.max()) if above.size else 0,
    }


def _sampler_table(
    pr: Propagation, n_u: int, eps0_grid: Sequence[float], shapes: Sequence[str], mu: float
) -> dict[str, Any]:
    """§6 table of one sampler variant: per error shape and eps0, the optimum, E(0.2), E(full), thresholds."""
    num_steps = pr.V.size - 1
    j02 = int(round(0.2 * num_steps))
    per_shape = {}
    for k in shapes:
        ks = SHAPES.index(k)
        rows = []
        for r in eps0_grid:
            e = pr.error(r * n_u, ks)
            j = _argmin(e)
            b = _beats_from(e)
            rows.append(
                {
                    "eps0_per_unknown": r,
                    "eps0": _sig(r * n_u),
                    "t0_opt": _sig(pr.t0[j]),
                    "reverse_steps_opt": j,
                    "error_opt": _sig(e[j]),
                    "error_t0_0.2": _sig(e[j02]),
                    "error_full": _sig(e[-1]),
                    "beats_full_run_from_t0": None if b is None else _sig(pr.t0[b]),
                }
            )
        per_shape[k] = {
            "rows": rows,
            "no_diffusion_threshold_per_unknown": _sig(no_diffusion_threshold(pr.V, pr.h[ks]) / n_u),
            f"feasibility_threshold_mu{mu:g}_per_unknown": _sig(feasibility_threshold(pr.D0, pr.h[ks], mu) / n_u),
        }
    return per_shape


def _ideal_tables(schedule, num_steps, pb, weights, eps0_grid, shapes) -> dict[str, Any]:
    """The exact-posterior-score optimum (closed form of §3) per sampler, shape and eps0."""
    ideal: dict[str, Any] = {}
    for sampler in ("ddpm", "ddim"):
        ideal[sampler] = {}
        for k in shapes:
            rows = []
            for r in eps0_grid:
                c = ideal_curve(schedule, num_steps, pb.post_var, r * pb.n_u * weights[k], sampler)
                j = _argmin(c)
                rows.append({"eps0_per_unknown": r, "t0_opt": _sig(j / num_steps), "error_opt": _sig(c[j])})
            ideal[sampler][k] = rows
    return ideal


def _theorem1(pb, props, schedule, num_steps: int) -> dict[str, Any]:
    """Theorem 1: violations of the bound by the exact D (both DDPM readings, iso and top errors)."""
    j02 = int(round(0.2 * num_steps))
    violations = {
        v: {
            f"{r:g}_{k}": _violations(
                props[v].distance(r * pb.n_u, SHAPES.index(k)),
                theorem1_bound(schedule, num_steps, n=pb.n, tau=pb.tau, eps0=r * pb.n_u),
            )
            for r in THEOREM1_EPS0
            for k in ("iso", "top")
        }
        for v in ("ddpm", "ddpm_theory")
    }
    bound0 = theorem1_bound(schedule, num_steps, n=pb.n, tau=pb.tau)
    pr = props["ddpm_theory"]
    return {
        "violations": violations,
        "D0_t0_0.2": _sig(pr.D0[j02]),
        "bound_eps0_free_t0_0.2": _sig(bound0[j02]),
        "bound_noise_term_full": _sig(bound0[-1]),
        "D0_full": _sig(pr.D0[-1]),
        "h_t0_0.2": {k: _sig(pr.h[i, j02]) for i, k in enumerate(SHAPES)},
    }


def _theorem2(pb, props, mu: float) -> dict[str, Any]:
    """Theorem 2 (relative form): feasibility thresholds and the minimal N'."""
    return {
        v: {
            "feasibility_threshold_per_unknown": {
                k: _sig(feasibility_threshold(props[v].D0, props[v].h[i], mu) / pb.n_u) for i, k in enumerate(SHAPES)
            },
            "min_steps": {
                f"{r:g}_{k}": min_steps_for_ratio(props[v].D0, props[v].h[SHAPES.index(k)], r * pb.n_u, mu)
                for r in (1.0, 3.0)
                for k in ("iso", "top")
            },
        }
        for v in ("ddpm", "ddpm_theory")
    }


def _mse_vs_frechet(pb, base: Propagation, iso, schedule, num_steps, frechet_eps0, frechet_points) -> list[dict]:
    """MSE against the Fréchet distance (project's DDPM, isotropic error), with the MSE-optimal N' stored."""
    n_u = pb.n_u
    opt = {r: _argmin(base.error(r * n_u, 0)) for r in frechet_eps0}
    grid = sorted(set(_frechet_grid(num_steps, frechet_points)) | set(opt.values()))
    stored = propagate(pb, schedule, num_steps, store=[j for j in grid if j > 0])
    cov_e = iso @ iso.T
    data_half, post_half = _psd_sqrt(pb.cov), _psd_sqrt(pb.post_cov)
    cov_y = pb.proj @ pb.cov @ pb.proj + pb.sigma_y**2 * pb.proj
    curves = []
    for r in frechet_eps0:
        eps0 = r * n_u
        to_data, to_post = [], []
        for j in grid:
            to_data.append(_frechet_centred(data_half, output_covariance(pb, stored, j, eps0=eps0, error_cov=cov_e)))
            mean_map, cov = conditional_output_law(pb, stored, j, eps0=eps0, error_cov=cov_e)
            diff = mean_map - pb.post_gain  # frechet_to_posterior, with the posterior's square root reused
            to_post.append(float(np.trace(diff @ cov_y @ diff.T)) + _frechet_centred(post_half, cov))
        curves.append(
            {
                "eps0_per_unknown": r,
                "reverse_steps": grid,
                "t0": [_sig(stored.t0[j]) for j in grid],
                "error": [_sig(base.error(eps0, 0)[j]) for j in grid],
                "frechet_data": _arr(to_data),
                "frechet_posterior": _arr(to_post),
                "mse_optimal_reverse_steps": opt[r],
            }
        )
    return curves


# --- problem-independent -----------------------------------------------------------------------------


def prior_and_factors(schedule, num_steps: int):
    """THEORY's prior ``cov`` and its eigenvalues ``lam``, the paper's constants ``pc`` with the argmax of its
    lambda_i, and the true per-step factor ``m`` along the prior's top direction (§1, §4)."""
    cov = periodic_prior_cov()
    lam = np.linalg.eigvalsh(cov)
    pc = paper_constants(schedule, num_steps)
    m = contraction_factor(schedule, num_steps, float(lam.max()))
    return cov, lam, pc, int(np.nanargmax(pc.lam)), m


def common_numbers(schedule, num_steps: int) -> dict[str, Any]:
    """Problem-independent numbers: the prior, sigma^2(t0), the paper's constants, Theorem 2's proof."""
    cov, lam, pc, i_max, m = prior_and_factors(schedule, num_steps)
    k = min(200, num_steps)
    t0s = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    return {
        "prior": {
            "eig_min": _sig(lam.min()),
            "eig_max": _sig(lam.max()),
            "eig_above_1": int((lam > 1).sum()),
            "neighbour_correlation": _sig(cov[0, 1] / cov[0, 0]),
            "pixel_variance": _sig(cov[0, 0]),
        },
        "sigma2_of_t0": {f"{t:g}": _sig(sigma2_of_t0(schedule, t)) for t in t0s},
        "paper_lambda": {"max": _sig(pc.lam[i_max]), "argmax": i_max, "lambda_1": _sig(pc.lam[1])},
        "true_factor_top_direction": {
            "s_max": _sig(lam.max()),
            **_expansion(m, "max"),
            f"product_first_{k}": _sig(np.prod(m[1 : k + 1])),
            f"paper_lambda_pow_{k}": _sig(np.max(pc.lam[1 : k + 1]) ** k),
            f"paper_lambda_pow_{2 * k}_alpha_bar": _sig(np.max(pc.lam[1 : k + 1]) ** (2 * k) * pc.alpha_bar[k]),
        },
        "theorem2_proof_threshold_per_pixel": {
            f"mu{mu:g}_tau{tau:g}": _sig(theorem2_threshold(schedule, num_steps, mu=mu, tau=tau))
            for mu in (1.0, 0.5, 0.1)
            for tau in (0.25, 0.75)
        },
    }
