r"""The theory report (issue #6): figures, a JSON of the numbers and a Markdown summary.

:func:`write_report` evaluates THEORY.md's two linear-Gaussian test problems with the exact
propagation of the project's samplers (:func:`ccdf.theory.propagate`), the closed forms, the
paper's constants and the exact Fréchet distances, and writes, atomically, into one folder:

* ``error_vs_t0.png``: E(t0) for several initial errors eps0 (DDPM and DDIM), per problem;
* ``optimal_t0_vs_eps0.png``: the MSE-optimal t0 against eps0 (error shapes, samplers, ideal);
* ``bound_vs_exact.png``: Theorem 1's bound against the exact two-run distance D;
* ``contraction_factors.png``: the paper's lambda_i, the true factor m_i(s_max) and ``||A M_i A||``;
* ``mse_vs_frechet.png``: MSE against the Fréchet distance to the data law / posterior as t0 varies;
* ``theory.json``: every number (the §6 tables, thresholds, full-run errors, curves, and the
  reproduction of THEORY.md's reference values with a pass flag);
* ``report.md``: the tables, the figure links and the ours-vs-THEORY table.

Sampler variants (``samplers``): ``ddpm`` is the project's DDPM (sigma_i^2 = beta_i, no noise on the
last step), ``ddpm_theory`` THEORY.md's recursion (the same, plus beta_1 noise on the last step),
``beta_tilde``, ``exact`` (the true Gaussian reverse kernel) and ``ddim`` (eta = 0). Errors are in
the units of THEORY.md (sum over the 256 pixels, prior variance 0.25 per pixel); eps0 is given per
unknown pixel (``eps0 / n_u``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ccdf.theory.closed_form import (
    correlated_init_error,
    feasibility_threshold,
    helps_threshold_ideal,
    ideal_curve,
    min_steps_for_ratio,
    no_diffusion_threshold,
    optimal_sigma2,
    sigma2_of_t0,
    t0_of_sigma2,
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
from ccdf.utils.io import atomic_write, write_json

FIGURES = (
    "error_vs_t0.png",
    "optimal_t0_vs_eps0.png",
    "bound_vs_exact.png",
    "contraction_factors.png",
    "mse_vs_frechet.png",
)
REPORT_FILES = (*FIGURES, "theory.json", "report.md")

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


# --- computation -------------------------------------------------------------------------------------


def _problem_numbers(
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
    """Numbers (JSON-ready) and arrays (for the figures) of one test problem."""
    pb = PROBLEMS[name]()
    n_u = pb.n_u
    factors = {k: error_shape(pb, k) for k in SHAPES}
    # e_k^2 / eps0 along the posterior eigen-directions (the closed forms' inputs)
    weights = {k: np.sum((pb.post_evecs.T @ f) ** 2, axis=1) for k, f in factors.items()}
    props: dict[str, Propagation] = {
        v: propagate(pb, schedule, num_steps, error_shapes=[factors[k] for k in SHAPES], **VARIANTS[v])
        for v in dict.fromkeys(("ddpm", "ddpm_theory", *samplers))
    }
    j02 = int(round(0.2 * num_steps))
    s = pb.post_var
    out: dict[str, Any] = {
        "name": pb.name,
        "n": pb.n,
        "n_u": n_u,
        "commuting": pb.commuting,
        "posterior": {
            "trace": _sig(s.sum()),
            "min": _sig(s.min()),
            "max": _sig(s.max()),
            "harmonic_mean": _sig(s.size / np.sum(1 / s)),
            "exact_sampler_error": _sig(2 * s.sum()),
        },
        "full_run_error": {v: _sig(props[v].V[-1]) for v in props},
    }
    # §6 tables: per sampler variant, shape and eps0
    tables: dict[str, Any] = {}
    for v in samplers:
        pr = props[v]
        per_shape = {}
        for k in shapes:
            ks = SHAPES.index(k)
            rows = []
            for r in eps0_grid:
                e = pr.error(r * n_u, ks)
                j = _argmin(e)
                rows.append(
                    {
                        "eps0_per_unknown": r,
                        "eps0": _sig(r * n_u),
                        "t0_opt": _sig(pr.t0[j]),
                        "reverse_steps_opt": j,
                        "error_opt": _sig(e[j]),
                        "error_t0_0.2": _sig(e[j02]),
                        "error_full": _sig(e[-1]),
                        "beats_full_run_from_t0": (None if (b := _beats_from(e)) is None else _sig(pr.t0[b])),
                    }
                )
            per_shape[k] = {
                "rows": rows,
                "no_diffusion_threshold_per_unknown": _sig(no_diffusion_threshold(pr.V, pr.h[ks]) / n_u),
                f"feasibility_threshold_mu{mu:g}_per_unknown": _sig(feasibility_threshold(pr.D0, pr.h[ks], mu) / n_u),
            }
        tables[v] = per_shape
    out["tables"] = tables
    ideal: dict[str, Any] = {}
    for sampler in ("ddpm", "ddim"):
        ideal[sampler] = {}
        for k in shapes:
            rows = []
            for r in eps0_grid:
                c = ideal_curve(schedule, num_steps, s, r * n_u * weights[k], sampler)
                j = _argmin(c)
                rows.append({"eps0_per_unknown": r, "t0_opt": _sig(j / num_steps), "error_opt": _sig(c[j])})
            ideal[sampler][k] = rows
    out["ideal"] = ideal
    out["helps_threshold_ideal_per_unknown"] = {k: _sig(helps_threshold_ideal(s, weights[k]) / n_u) for k in shapes}
    # Theorem 1: violations of the bound by the exact D (both DDPM readings), iso and top errors
    thm1: dict[str, Any] = {}
    for v in ("ddpm", "ddpm_theory"):
        pr = props[v]
        thm1[v] = {
            f"{r:g}_{k}": _violations(
                pr.distance(r * n_u, SHAPES.index(k)),
                theorem1_bound(schedule, num_steps, n=pb.n, tau=pb.tau, eps0=r * n_u),
            )
            for r in THEOREM1_EPS0
            for k in ("iso", "top")
        }
    bound0 = theorem1_bound(schedule, num_steps, n=pb.n, tau=pb.tau)
    out["theorem1"] = {
        "violations": thm1,
        "D0_t0_0.2": _sig(props["ddpm_theory"].D0[j02]),
        "bound_eps0_free_t0_0.2": _sig(bound0[j02]),
        "bound_noise_term_full": _sig(bound0[-1]),
        "D0_full": _sig(props["ddpm_theory"].D0[-1]),
        "h_t0_0.2": {k: _sig(props["ddpm_theory"].h[i, j02]) for i, k in enumerate(SHAPES)},
    }
    # Theorem 2 (relative form): feasibility thresholds and the minimal N'
    out["theorem2"] = {
        v: {
            "feasibility_threshold_per_unknown": {
                k: _sig(feasibility_threshold(props[v].D0, props[v].h[i], mu) / n_u) for i, k in enumerate(SHAPES)
            },
            "min_steps": {
                f"{r:g}_{k}": min_steps_for_ratio(props[v].D0, props[v].h[SHAPES.index(k)], r * n_u, mu)
                for r in (1.0, 3.0)
                for k in ("iso", "top")
            },
        }
        for v in ("ddpm", "ddpm_theory")
    }
    out["mu"] = mu
    block = unknown_block_norm(pb, schedule, num_steps)
    above = np.flatnonzero(block[1:] > 1) + 1
    out["unknown_block_norm"] = {
        "max": _sig(np.nanmax(block)),
        "expansive_steps": int(above.size),
        "last_expansive_step": int(above.max()) if above.size else 0,
    }
    # MSE against the Fréchet distance (project's DDPM, isotropic error), with the MSE-optimal N' stored
    base = props["ddpm"]
    iso = factors["iso"]
    opt = {r: _argmin(base.error(r * n_u, 0)) for r in frechet_eps0}
    grid = sorted(set(_frechet_grid(num_steps, frechet_points)) | set(opt.values()))
    stored = propagate(pb, schedule, num_steps, store=[j for j in grid if j > 0])
    cov_e = iso @ iso.T
    data_half, post_half = _psd_sqrt(pb.cov), _psd_sqrt(pb.post_cov)
    cov_y = pb.proj @ pb.cov @ pb.proj + pb.sigma_y**2 * pb.proj
    fre = []
    for r in frechet_eps0:
        eps0 = r * n_u
        to_data, to_post = [], []
        for j in grid:
            to_data.append(_frechet_centred(data_half, output_covariance(pb, stored, j, eps0=eps0, error_cov=cov_e)))
            mean_map, cov = conditional_output_law(pb, stored, j, eps0=eps0, error_cov=cov_e)
            diff = mean_map - pb.post_gain  # frechet_to_posterior, with the posterior's square root reused
            to_post.append(float(np.trace(diff @ cov_y @ diff.T)) + _frechet_centred(post_half, cov))
        fre.append(
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
    out["mse_vs_frechet"] = fre
    out["curves"] = {
        v: {"V": _arr(props[v].V), "D0": _arr(props[v].D0), "h": {k: _arr(props[v].h[i]) for i, k in enumerate(SHAPES)}}
        for v in props
    }
    arrays = dict(problem=pb, props=props, weights=weights, block=block)
    return out, arrays


def _common_numbers(schedule, num_steps: int) -> dict[str, Any]:
    """Problem-independent numbers: the prior, sigma^2(t0), the paper's constants, Theorem 2's proof."""
    cov = periodic_prior_cov()
    lam = np.linalg.eigvalsh(cov)
    pc = paper_constants(schedule, num_steps)
    i_max = int(np.nanargmax(pc.lam))
    m = contraction_factor(schedule, num_steps, float(lam.max()))
    expand = np.flatnonzero(m[1:] > 1) + 1
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
            "max": _sig(np.nanmax(m)),
            "expansive_steps": int(expand.size),
            "last_expansive_step": int(expand.max()) if expand.size else 0,
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


# --- THEORY.md's reference values --------------------------------------------------------------------


def _tolerance(ref: str, num_steps: int) -> float:
    """Half a unit of THEORY's last printed digit or of the 3rd significant digit, whichever is coarser."""
    if float(ref) == 0:
        return 0.5 / num_steps  # "t0* = 0": within half a grid step
    dec = len(ref.split(".")[1]) if "." in ref else 0
    printed = 0.5 * 10.0**-dec
    third = 0.5 * 10.0 ** (math.floor(math.log10(abs(float(ref)))) - 2)
    return max(printed, third)


def _check(quantity: str, ref: str | int, ours: float, num_steps: int) -> dict[str, Any]:
    if isinstance(ref, int):
        ok = int(ours) == ref
        return {"quantity": quantity, "theory": ref, "ours": int(ours), "tolerance": 0, "pass": ok, "printed": ok}
    tol = _tolerance(ref, num_steps)
    dec = len(ref.split(".")[1]) if "." in ref else 0
    printed = abs(float(ours) - float(ref)) <= (0.5 * 10.0**-dec if float(ref) else tol) + 1e-12
    return {
        "quantity": quantity,
        "theory": ref,
        "ours": _sig(ours),
        "tolerance": _sig(tol, 3),
        "pass": bool(abs(float(ours) - float(ref)) <= tol + 1e-12),
        "printed": bool(printed),
    }


BOX_ROWS = [  # eps0/n_u: t0*, E*, E(0.2), DDIM t0*, E*, ideal t0*, E*, ideal DDIM t0*, E*  (THEORY §6)
    (0.01, "0", "0.64", "9.60", "0", "0.64", "0", "0.64", "0", "0.64"),
    (0.03, "0", "1.92", "9.66", "0.002", None, "0", "1.92", "0", "1.92"),
    (0.1, "0.045", "4.91", "9.89", "0.067", "5.03", "0.046", "4.86", "0.070", "5.00"),
    (0.3, "0.097", "8.41", "10.55", "0.155", "9.00", "0.100", "8.14", "0.166", "8.62"),
    (1, "0.188", "12.83", "12.86", "0.303", "14.21", "0.196", "11.93", "0.335", "12.68"),
    (3, "0.310", "16.71", "19.46", "0.471", "18.71", "0.324", "14.69", "0.525", "15.22"),
]
EIG_ROWS = [  # eps0/n_u: t0*, E*, E(0.2), DDIM t0*, E*
    (0.01, "0", "1.92", "31.42", "0", "1.92"),
    (0.1, "0.043", "14.93", "32.49", "0.065", "15.22"),
    (0.3, "0.092", "26.47", "34.86", "0.148", "27.95"),
    (1, "0.177", "42.77", "43.15", "0.289", "45.98"),
    (3, "0.297", "59.16", "66.86", "0.458", "62.67"),
]
SHAPE_ROWS = {  # (eps0/n_u, shape): t0*, E*
    (0.1, "top"): ("0", "6.40"),
    (0.1, "bottom"): ("0.040", "2.83"),
    (0.3, "top"): ("0.242", "15.38"),
    (0.3, "bottom"): ("0.060", "4.10"),
    (1, "top"): ("0.423", "18.99"),
    (1, "bottom"): ("0.085", "5.66"),
}


def _reference_checks(schedule, num_steps: int, arrays: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every value of THEORY.md (§1, §3-6) that the code recomputes, with a pass flag."""
    checks: list[dict[str, Any]] = []

    def add(q: str, ref: str | int, ours: float) -> None:
        checks.append(_check(q, ref, ours, num_steps))

    cov = periodic_prior_cov()
    lam = np.linalg.eigvalsh(cov)
    add("prior: smallest eigenvalue", "0.0078", lam.min())
    add("prior: largest eigenvalue", "11.37", lam.max())
    add("prior: eigenvalues > 1", 13, int((lam > 1).sum()))
    add("prior: neighbour correlation", "0.77", cov[0, 1] / cov[0, 0])
    for t, ref in zip(
        (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5),
        ("0.0019", "0.0058", "0.030", "0.115", "0.517", "1.52", "11.7"),
        strict=True,
    ):
        add(f"sigma^2(t0 = {t:g})", ref, float(sigma2_of_t0(schedule, t)))
    pc = paper_constants(schedule, num_steps)
    i_max = int(np.nanargmax(pc.lam))
    add("paper lambda: max", "0.9942", pc.lam[i_max])
    add("paper lambda: argmax i", 462, i_max)
    m = contraction_factor(schedule, num_steps, float(lam.max()))
    expand = np.flatnonzero(m[1:] > 1) + 1
    add("true factor m_i(s_max): max", "1.0019", np.nanmax(m))
    add("true factor m_i(s_max): last expansive i", 479, int(expand.max()))
    add("top direction stretched over 200 steps", "1.178", np.prod(m[1:201]))
    add("paper lambda^200", "0.137", np.max(pc.lam[1:201]) ** 200)
    add("paper lambda^{2N'} alpha_bar at t0 = 0.2", "0.0123", np.max(pc.lam[1:201]) ** 400 * pc.alpha_bar[200])
    for (mu, tau), ref in {
        (1, 0.25): "1.71",
        (1, 0.75): "2.60",
        (0.5, 0.75): "5.20",
        (0.1, 0.25): "17.1",
        (0.1, 0.75): "26.0",
    }.items():
        add(
            f"Theorem 2 proof threshold eps0/n (mu = {mu:g}, tau = {tau:g})",
            ref,
            theorem2_threshold(schedule, num_steps, mu=mu, tau=tau),
        )
    s_box = None
    for name, tr, lo, hi, hm in (
        ("eigen", "39.49", "0.0078", "4.02", "0.0336"),
        ("box", "8.44", "0.0096", "2.19", "0.0339"),
    ):
        if name not in arrays:
            continue
        s = arrays[name]["problem"].post_var
        s_box = s if name == "box" else s_box
        add(f"{name}: tr Sigma_post", tr, s.sum())
        add(f"{name}: smallest posterior eigenvalue", lo, s.min())
        add(f"{name}: largest posterior eigenvalue", hi, s.max())
        add(f"{name}: harmonic mean of posterior eigenvalues", hm, s.size / np.sum(1 / s))
    full = {
        "box": ("21.12", "20.95", "21.10", "23.09", "16.88"),
        "eigen": ("79.02", "78.45", "78.97", "78.17", "78.97"),
    }
    for name, refs in full.items():
        if name not in arrays:
            continue
        props = arrays[name]["props"]
        for v, ref in zip(("ddpm_theory", "beta_tilde", "exact", "ddim"), refs[:4], strict=True):
            add(f"{name}: full-run error, {VARIANT_LABELS[v]}", ref, props[v].V[-1])
        add(f"{name}: exact posterior sampler 2 tr Sigma_post", refs[4], 2 * arrays[name]["problem"].post_var.sum())
    if "box" in arrays:
        pb, props, w = arrays["box"]["problem"], arrays["box"]["props"], arrays["box"]["weights"]
        n_u, pr = pb.n_u, props["ddpm_theory"]
        block = arrays["box"]["block"]
        above = np.flatnonzero(block[1:] > 1) + 1
        add("box: ||A M_i A|| max", "1.00022", np.nanmax(block))
        add("box: ||A M_i A|| > 1, last i", 279, int(above.max()))
        bound0 = theorem1_bound(schedule, num_steps, n=pb.n, tau=pb.tau)
        add("box: D0 at t0 = 0.2", "13.1", pr.D0[200])
        add("box: Theorem 1 bound, eps0-free part at t0 = 0.2", "29.6", bound0[200])
        add("box: Theorem 1 noise term at N' = N", "219", bound0[-1])
        add("box: D0 at N' = N", "21.6", pr.D0[-1])
        for i, (k, ref) in enumerate(zip(SHAPES, ("0.052", "0.314", "0.0007"), strict=True)):
            add(f"box: h(t0 = 0.2), {k} error", ref, pr.h[i, 200])
        for r, k, last in [
            (0, 0, 94),
            (0.1, 0, 105),
            (0.1, 1, 127),
            (1, 0, 141),
            (1, 1, 207),
            (10, 0, 216),
            (10, 1, 336),
        ]:
            eps0 = r * n_u
            v = _violations(pr.distance(eps0, k), theorem1_bound(schedule, num_steps, n=pb.n, tau=pb.tau, eps0=eps0))
            add(f"box: Theorem 1 violated for N' <= (eps0/n_u = {r:g}, {SHAPES[k]})", last, v["max_reverse_steps"])
            add(f"box: Theorem 1 violations count (eps0/n_u = {r:g}, {SHAPES[k]})", last, v["count"])
        for i, ref in enumerate(("0.366", "0.669", "0.142")):
            add(f"box: eps_c(mu = 0.5)/n_u, {SHAPES[i]}", ref, feasibility_threshold(pr.D0, pr.h[i], 0.5) / n_u)
        for r, k, ref in [(1, 0, 46), (3, 0, 42), (1, 1, 211), (3, 1, 158)]:
            add(
                f"box: minimal N' for D <= 0.5 eps0 (eps0/n_u = {r}, {SHAPES[k]})",
                ref,
                min_steps_for_ratio(pr.D0, pr.h[k], r * n_u, 0.5) or -1,
            )
        for i, ref in enumerate(("0.034", "0.217", "0.013")):
            add(f"box: no-diffusion threshold /n_u, {SHAPES[i]}", ref, no_diffusion_threshold(pr.V, pr.h[i]) / n_u)
        add("box: no-diffusion threshold /n_u, iso (4 digits)", "0.0341", no_diffusion_threshold(pr.V, pr.h[0]) / n_u)
        add("box: ideal helps-threshold (harmonic mean)", "0.034", helps_threshold_ideal(pb.post_var) / n_u)
        for r, ref in ((1, "0.072"), (3, "0.180")):
            add(f"box: beats the full run from t0 (eps0/n_u = {r})", ref, pr.t0[_beats_from(pr.error(r * n_u))])
        for r, s2, t0 in [(0.1, "0.026", "0.047"), (0.3, "0.115", "0.101"), (1, "0.49", "0.196"), (3, "1.94", "0.325")]:
            sig = optimal_sigma2(pb.post_var, np.full(n_u, r))
            add(f"box: ideal sigma*^2 (eps0/n_u = {r})", s2, sig)
            add(f"box: ideal sigma*^2 -> t0 (eps0/n_u = {r})", t0, t0_of_sigma2(schedule, num_steps, sig))
        zero = 0 * s_box
        for label, s2, ref in (
            ("0", 0.0, "8.44"),
            ("0.1", None, "12.14"),
            ("0.2", None, "14.45"),
            ("1 (limit)", 1e12, "16.88"),
        ):
            sigma2 = s2 if s2 is not None else float(sigma2_of_t0(schedule, float(label)))
            add(f"box: MMSE start (kappa = 0), E at t0 = {label}", ref, correlated_init_error(s_box, zero, 0.0, sigma2))
        for row in BOX_ROWS:
            r, t0s, es, e02, dt0, de, it0, ie, idt0, ide = row
            eps0 = r * n_u
            e = pr.error(eps0)
            j = _argmin(e)
            add(f"box eps0/n_u = {r:g}: t0*", t0s, j / num_steps)
            add(f"box eps0/n_u = {r:g}: E*", es, e[j])
            add(f"box eps0/n_u = {r:g}: E(t0 = 0.2)", e02, e[200])
            e = props["ddim"].error(eps0)
            j = _argmin(e)
            add(f"box eps0/n_u = {r:g}: DDIM t0*", dt0, j / num_steps)
            if de is not None:
                add(f"box eps0/n_u = {r:g}: DDIM E*", de, e[j])
            for sampler, tref, eref in (("ddpm", it0, ie), ("ddim", idt0, ide)):
                c = ideal_curve(schedule, num_steps, pb.post_var, eps0 * w["iso"], sampler)
                j = _argmin(c)
                add(f"box eps0/n_u = {r:g}: ideal {sampler.upper()} t0*", tref, j / num_steps)
                add(f"box eps0/n_u = {r:g}: ideal {sampler.upper()} E*", eref, c[j])
        for (r, k), (t0s, es) in SHAPE_ROWS.items():
            e = pr.error(r * n_u, SHAPES.index(k))
            j = _argmin(e)
            add(f"box eps0/n_u = {r:g}, {k} error: t0*", t0s, j / num_steps)
            add(f"box eps0/n_u = {r:g}, {k} error: E*", es, e[j])
    if "eigen" in arrays:
        pb, props = arrays["eigen"]["problem"], arrays["eigen"]["props"]
        n_u, pr = pb.n_u, props["ddpm_theory"]
        for r, k, ref in [(0, 0, 108), (10, 1, 365)]:
            eps0 = r * n_u
            v = _violations(pr.distance(eps0, k), theorem1_bound(schedule, num_steps, n=pb.n, tau=pb.tau, eps0=eps0))
            add(f"eigen: Theorem 1 violated for N' <= (eps0/n_u = {r:g}, {SHAPES[k]})", ref, v["max_reverse_steps"])
        for i, ref in enumerate(("0.399", "0.824", "0.136")):
            add(f"eigen: eps_c(mu = 0.5)/n_u, {SHAPES[i]}", ref, feasibility_threshold(pr.D0, pr.h[i], 0.5) / n_u)
        for r, t0s, es, e02, dt0, de in EIG_ROWS:
            eps0 = r * n_u
            e = pr.error(eps0)
            j = _argmin(e)
            add(f"eigen eps0/n_u = {r:g}: t0*", t0s, j / num_steps)
            add(f"eigen eps0/n_u = {r:g}: E*", es, e[j])
            add(f"eigen eps0/n_u = {r:g}: E(t0 = 0.2)", e02, e[200])
            e = props["ddim"].error(eps0)
            j = _argmin(e)
            add(f"eigen eps0/n_u = {r:g}: DDIM t0*", dt0, j / num_steps)
            add(f"eigen eps0/n_u = {r:g}: DDIM E*", de, e[j])

    deviations = [
        {
            "quantity": "Theorem 2 proof threshold eps0/n (mu = 0.5, tau = 0.25)",
            "theory": "3.43",
            "ours": _sig(theorem2_threshold(schedule, num_steps, mu=0.5, tau=0.25)),
            "why": "both proof conditions scale as 1/mu, so the value is exactly twice the mu = 1 value "
            f"({_sig(theorem2_threshold(schedule, num_steps, mu=1.0, tau=0.25), 5)}), which THEORY prints as 1.71: "
            "THEORY's 3.43 disagrees with its own 1.71",
        }
    ]
    if "box" in arrays:
        e = arrays["box"]["props"]["ddim"].error(0.03 * arrays["box"]["problem"].n_u)
        j = _argmin(e)
        deviations.append(
            {
                "quantity": "box eps0/n_u = 0.03: DDIM E*",
                "theory": "1.92",
                "ours": _sig(e[j]),
                "why": f"at the same t0* = {j / num_steps:g}; every other DDIM entry matches, and ours lies just below "
                "the no-diffusion error eps0 = 1.92, which THEORY probably printed here",
            }
        )
    readings = {}
    for name in ("box", "eigen"):
        if name in arrays:
            props, n_u = arrays[name]["props"], arrays[name]["problem"].n_u
            readings[name] = {
                "full_run_error": {
                    "theory_reading": _sig(props["ddpm_theory"].V[-1]),
                    "project_code": _sig(props["ddpm"].V[-1]),
                },
                "no_diffusion_threshold_per_unknown": {
                    k: {
                        "theory_reading": _sig(
                            no_diffusion_threshold(props["ddpm_theory"].V, props["ddpm_theory"].h[i]) / n_u
                        ),
                        "project_code": _sig(no_diffusion_threshold(props["ddpm"].V, props["ddpm"].h[i]) / n_u),
                    }
                    for i, k in enumerate(SHAPES)
                },
                "V_difference_beta1_times_n_u": _sig(props["ddpm_theory"].V[-1] - props["ddpm"].V[-1]),
            }
    return {
        "rule": "pass: |ours - THEORY| <= half a unit of the 3rd significant digit or of THEORY's last printed "
        "digit, whichever is coarser (t0* = 0: half a grid step); printed: at THEORY's printed precision",
        "all_pass": all(c["pass"] for c in checks),
        "num_checks": len(checks),
        "num_pass": sum(c["pass"] for c in checks),
        "checks": checks,
        "deviations": deviations,
        "readings": readings,
    }


# --- figures -----------------------------------------------------------------------------------------


def _save(fig, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    plt.close(fig)
    return out


def _fig_error_vs_t0(arrays, eps0_grid, num_steps, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    names = list(arrays)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.6), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(eps0_grid)))
    for ax, name in zip(axes[0], names, strict=True):
        pb, props = arrays[name]["problem"], arrays[name]["props"]
        idx = _log_index(num_steps)
        t = props["ddpm"].t0[idx]
        for c, r in zip(colors, eps0_grid, strict=True):
            for v, ls in (("ddpm", "-"), ("ddim", "--")):
                if v not in props:
                    continue
                e = props[v].error(r * pb.n_u) / pb.n_u
                ax.plot(t, e[idx], ls, color=c, lw=1.2, label=f"{r:g}" if v == "ddpm" else None)
                j = _argmin(e)
                ax.plot(
                    max(j, 1) / num_steps,
                    e[j],
                    "o" if v == "ddpm" else "s",
                    color=c,
                    ms=4,
                    mfc="none" if v == "ddim" else c,
                )
        ax.axhline(2 * pb.post_var.sum() / pb.n_u, color="k", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("t0 (N' = t0 N)")
        ax.set_ylabel("E / n_u (MSE per unknown pixel)")
        ax.set_title(f"{pb.name}: solid DDPM, dashed DDIM;\nmarkers: optimum (left edge = no diffusion)", fontsize=8)
        ax.legend(title="eps0 / n_u", fontsize=7, title_fontsize=7)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _fig_optimal_t0(arrays, schedule, num_steps, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    names = list(arrays)
    eps = np.geomspace(0.003, 10, 60)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        pb, props, w = arrays[name]["problem"], arrays[name]["props"], arrays[name]["weights"]
        for v, k, style in (
            ("ddpm", "iso", "C0-"),
            ("ddpm", "top", "C1-"),
            ("ddpm", "bottom", "C2-"),
            ("ddim", "iso", "C0--"),
        ):
            if v not in props:
                continue
            pr = props[v]
            e = pr.V[None] + (eps * pb.n_u)[:, None] * pr.h[SHAPES.index(k)][None]
            ax.plot(eps, np.argmin(e, axis=1) / num_steps, style, lw=1.3, label=f"{VARIANT_LABELS[v]}, {k}")
        ideal = [
            np.argmin(ideal_curve(schedule, num_steps, pb.post_var, r * pb.n_u * w["iso"])) / num_steps for r in eps
        ]
        ax.plot(eps, ideal, "k:", lw=1.2, label="ideal (closed form), iso")
        ax.set_xscale("log")
        ax.set_xlabel("eps0 / n_u (initial MSE per unknown pixel)")
        ax.set_ylabel("MSE-optimal t0")
        ax.set_title(f"{pb.name}: the optimal t0 grows with the initial error", fontsize=8)
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _fig_bound(arrays, schedule, num_steps, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    names = list(arrays)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.6), squeeze=False)
    colors = plt.cm.plasma(np.linspace(0, 0.8, len(THEOREM1_EPS0)))
    for ax, name in zip(axes[0], names, strict=True):
        pb, pr = arrays[name]["problem"], arrays[name]["props"]["ddpm"]
        idx = _log_index(num_steps)
        t = pr.t0[idx]
        for c, r in zip(colors, THEOREM1_EPS0, strict=True):
            eps0 = r * pb.n_u
            ax.plot(t, pr.distance(eps0)[idx], "-", color=c, lw=1.3, label=f"exact D, eps0/n_u = {r:g}")
            bound = theorem1_bound(schedule, num_steps, n=pb.n, tau=pb.tau, eps0=eps0)
            ax.plot(t, bound[idx], "--", color=c, lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("t0")
        ax.set_ylabel("E||x_rec - x~_rec||^2")
        ax.set_title(f"{pb.name}: exact two-run distance (solid)\nvs Theorem 1's bound (dashed), iso error", fontsize=8)
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _fig_contraction(arrays, schedule, num_steps, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    pc = paper_constants(schedule, num_steps)
    s_max = float(np.linalg.eigvalsh(periodic_prior_cov()).max())
    m = contraction_factor(schedule, num_steps, s_max)
    i = np.arange(num_steps + 1)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.2, 3.6))
    ax.plot(i[1:], pc.lam[1:], "k-", lw=1.2, label="paper lambda_i (point-mass prior)")
    ax.plot(i[1:], m[1:], "C3-", lw=1.2, label=f"true m_i(s_max = {s_max:.2f})")
    for name, style in (("box", "C0--"), ("eigen", "C2:")):
        if name in arrays:
            ax.plot(i[1:], arrays[name]["block"][1:], style, lw=1.2, label=f"||A M_i A||, {name}")
    ax.axhline(1.0, color="gray", lw=0.7)
    ax.set_ylim(0.97, 1.004)
    ax.set_xlabel("reverse step i")
    ax.set_ylabel("per-step factor")
    ax.set_title("per-step factors (> 1: the step expands)", fontsize=8)
    ax.legend(fontsize=6.5, loc="lower right")
    lam_max = np.maximum.accumulate(np.nan_to_num(pc.lam[1:]))
    bx.plot(i[1:], lam_max ** i[1:], "k-", lw=1.2, label="paper: lambda^N'")
    bx.plot(i[1:], np.cumprod(m[1:]), "C3-", lw=1.2, label="true: prod m_i(s_max)")
    bx.plot(
        i[1:], np.sqrt(pc.alpha_bar[1:]) * np.cumprod(m[1:]), "C3--", lw=1, label="with the forward jump: Wiener gain u"
    )
    bx.set_yscale("log")
    bx.set_xlabel("N'")
    bx.set_ylabel("gain on the initial error (top direction)")
    bx.set_title("products over N' steps", fontsize=8)
    bx.legend(fontsize=6.5)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _fig_frechet(numbers, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    names = list(numbers)
    fig, axes = plt.subplots(len(names), 2, figsize=(9.2, 3.3 * len(names)), squeeze=False)
    for row, name in zip(axes, names, strict=True):
        curves = numbers[name]["mse_vs_frechet"]
        colors = plt.cm.viridis(np.linspace(0, 0.85, len(curves)))
        for ax, key, target in zip(
            row, ("frechet_data", "frechet_posterior"), ("data law", "posterior (mean over y)"), strict=True
        ):
            for c, cur in zip(colors, curves, strict=True):
                x, y = np.array(cur[key], dtype=float), np.array(cur["error"], dtype=float)
                ax.plot(x, y, "-", color=c, lw=1.2, label=f"eps0/n_u = {cur['eps0_per_unknown']:g}")
                k = cur["reverse_steps"].index(cur["mse_optimal_reverse_steps"])
                ax.plot(x[k], y[k], "o", color=c, ms=6)
                ax.annotate(
                    f"t0*={cur['t0'][k]:.3g}", (x[k], y[k]), fontsize=6, xytext=(4, 4), textcoords="offset points"
                )
                ax.plot(x[0], y[0], "x", color=c, ms=5)
            ax.set_xscale("log")
            ax.set_xlabel(f"Fréchet distance to the {target}")
            ax.set_ylabel("E (MSE)")
            ax.set_title(f"{numbers[name]['name']}: t0 from 0 (x) to 1; dot = MSE optimum", fontsize=8)
            ax.legend(fontsize=6.5)
    fig.tight_layout()
    return _save(fig, path, dpi)


# --- Markdown ----------------------------------------------------------------------------------------


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool | int | str):
        return str(x)
    return f"{x:.{digits}g}"


def _markdown(result: dict[str, Any], samplers: Sequence[str]) -> str:
    lines = [
        "# CCDF theory report",
        "",
        "Exact error of CCDF on THEORY.md's two linear-Gaussian test problems (16x16 periodic power-law prior,",
        "per-pixel variance 0.25; errors summed over the 256 pixels), computed by `ccdf.theory` for the project's",
        f"samplers on the linear VP schedule with N = {result['settings']['num_steps']}.",
        "E(N', eps0) = V(N') + eps0 h(N'):",
        "V (posterior spread) rises and h (forgetting) falls with N'. See docs/theory.md for the reading.",
        "",
        f"Written in {result['seconds']:.1f} s.",
        "",
    ]
    lines += [f"![{f}]({f})" for f in FIGURES]
    lines.append("")
    for num in result["problems"].values():
        post = num["posterior"]
        kind = "commuting" if num["commuting"] else "non-commuting"
        lines += [
            f"## {num['name']} (n = {num['n']}, n_u = {num['n_u']}, {kind})",
            "",
            f"tr Sigma_post = {_fmt(post['trace'])}, eigenvalues in [{_fmt(post['min'])}, {_fmt(post['max'])}], "
            f"harmonic mean {_fmt(post['harmonic_mean'])}; an exact posterior sampler has "
            f"E = {_fmt(post['exact_sampler_error'])}.",
            "",
            "Full run (N' = N): "
            + ", ".join(f"{VARIANT_LABELS[v]} {_fmt(e)}" for v, e in num["full_run_error"].items()),
            "",
        ]
        for k, per in num["tables"].get("ddpm", {}).items():
            head = "| eps0/n_u | t0* | E* | E(t0 = 0.2) | E(full) |"
            sep = "|---|---|---|---|---|"
            extra = [v for v in ("ddim",) if v in num["tables"]]
            for v in extra:
                head += f" {VARIANT_LABELS[v]} t0* / E* |"
                sep += "---|"
            head += " ideal t0* / E* | ideal DDIM t0* / E* |"
            sep += "---|---|"
            lines += [f"**{k} error**, project's DDPM (no-diffusion threshold eps0/n_u = "
                      f"{_fmt(per['no_diffusion_threshold_per_unknown'])}):", "", head, sep]  # fmt: skip
            for i, row in enumerate(per["rows"]):
                cells = [_fmt(row["eps0_per_unknown"]), _fmt(row["t0_opt"]), _fmt(row["error_opt"]),
                         _fmt(row["error_t0_0.2"]), _fmt(row["error_full"])]  # fmt: skip
                for v in extra:
                    r2 = num["tables"][v][k]["rows"][i]
                    cells.append(f"{_fmt(r2['t0_opt'])} / {_fmt(r2['error_opt'])}")
                for sampler in ("ddpm", "ddim"):
                    r3 = num["ideal"][sampler][k][i]
                    cells.append(f"{_fmt(r3['t0_opt'])} / {_fmt(r3['error_opt'])}")
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        thm = num["theorem1"]["violations"]["ddpm"]
        lines += [
            "Theorem 1 (project's DDPM): N' values where the exact D exceeds the bound: "
            + ", ".join(f"eps0/n_u {key.replace('_', ' ')}: {v['count']}" for key, v in thm.items()),
            "",
            f"||A M_i A|| max {_fmt(num['unknown_block_norm']['max'], 6)}, > 1 for "
            f"{num['unknown_block_norm']['expansive_steps']} steps.",
            "",
        ]
    ref = result.get("reference")
    if ref and "checks" in ref:
        lines += [
            "## Reproduction of THEORY.md",
            "",
            f"{ref['num_pass']} of {ref['num_checks']} reference values pass ({ref['rule']}).",
            "",
            "| quantity | THEORY | ours | pass |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c['quantity']} | {c['theory']} | {_fmt(c['ours'], 5)} | {'yes' if c['pass'] else '**no**'} |"
            for c in ref["checks"]
        ]
        lines += ["", "Known deviations (not counted above):", ""]
        lines += [
            f"- {d['quantity']}: THEORY {d['theory']}, ours {_fmt(d['ours'], 5)}: {d['why']}."
            for d in ref["deviations"]
        ]
        lines += ["", "THEORY's DDPM recursion adds beta_1 noise on the last step; the project's sampler does not:", ""]
        for name, r in ref["readings"].items():
            nd = r["no_diffusion_threshold_per_unknown"]
            lines.append(
                f"- {name}: full run {_fmt(r['full_run_error']['theory_reading'], 5)} (THEORY's reading) vs "
                f"{_fmt(r['full_run_error']['project_code'], 5)} (project); no-diffusion thresholds iso/top/bottom "
                + "/".join(_fmt(nd[k]["theory_reading"], 3) for k in SHAPES)
                + " vs "
                + "/".join(_fmt(nd[k]["project_code"], 3) for k in SHAPES)
                + "."
            )
    elif ref:
        lines += ["## Reproduction of THEORY.md", "", f"skipped: {ref['skipped']}"]
    return "\n".join(lines) + "\n"


# --- entry point -------------------------------------------------------------------------------------


def write_report(
    out_dir: str | Path,
    *,
    problems: Sequence[str] = ("box", "eigen"),
    eps0_per_unknown: Sequence[float] = DEFAULT_EPS0,
    shapes: Sequence[str] = SHAPES,
    samplers: Sequence[str] = ("ddpm", "ddpm_theory", "beta_tilde", "exact", "ddim"),
    num_steps: int = 1000,
    frechet_eps0: Sequence[float] = (0.1, 0.3, 1.0),
    frechet_points: int = 24,
    mu: float = 0.5,
    dpi: int = 90,
    figures_to: str | Path | None = None,
    on_write: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    r"""Compute the theory numbers and write the five figures, ``theory.json`` and ``report.md``.

    Args:
        out_dir: the folder to write into (created).
        problems: THEORY.md's test problems, ``"box"`` (inpainting, non-commuting) and/or ``"eigen"``
            (eigen-subsampling, commuting).
        eps0_per_unknown: initial MSE per unknown pixel for the tables and Fig. 1 (``eps0 = r n_u``).
        shapes: initial-error shapes for the tables (``iso``, ``top``, ``bottom``).
        samplers: variants for the tables (keys of :data:`VARIANTS`); ``ddpm``, ``ddpm_theory`` and
            ``ddim`` are always computed (figures and reference checks need them).
        num_steps: N (THEORY's reference values need 1000; otherwise the checks are skipped).
        frechet_eps0: initial errors of the MSE-Fréchet curves (per unknown pixel).
        frechet_points: N' values per MSE-Fréchet curve.
        mu: the ratio of Theorem 2's relative criterion.
        dpi: figure resolution.
        figures_to: also copy the figures there as ``theory_<name>.png`` (docs/images), last.
        on_write: called with each path before it is written (the app's clean-up list).

    Returns:
        The content of ``theory.json`` (plus ``files``: the written paths).
    """
    with _one_blas_thread():
        return _write_report(
            out_dir, problems=problems, eps0_per_unknown=eps0_per_unknown, shapes=shapes, samplers=samplers,
            num_steps=num_steps, frechet_eps0=frechet_eps0, frechet_points=frechet_points, mu=mu, dpi=dpi,
            figures_to=figures_to, on_write=on_write,
        )  # fmt: skip


def _one_blas_thread():
    """Run the small (<= 256 x 256) dense algebra on one BLAS thread: several threads only add
    synchronisation (and spin-wait for minutes on a busy machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the BLAS library keeps its own thread count
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _write_report(
    out_dir: str | Path,
    *,
    problems: Sequence[str],
    eps0_per_unknown: Sequence[float],
    shapes: Sequence[str],
    samplers: Sequence[str],
    num_steps: int,
    frechet_eps0: Sequence[float],
    frechet_points: int,
    mu: float,
    dpi: int,
    figures_to: str | Path | None,
    on_write: Callable[[Path], None] | None,
) -> dict[str, Any]:
    tic = time.perf_counter()
    problems = tuple(problems)
    if not problems or any(p not in PROBLEMS for p in problems):
        raise ValueError(f"problems must be a non-empty subset of {tuple(PROBLEMS)}, got {problems}")
    if any(k not in SHAPES for k in shapes) or not shapes:
        raise ValueError(f"shapes must be a non-empty subset of {SHAPES}, got {tuple(shapes)}")
    if any(v not in VARIANTS for v in samplers) or not samplers:
        raise ValueError(f"samplers must be a non-empty subset of {tuple(VARIANTS)}, got {tuple(samplers)}")
    if not eps0_per_unknown or any(not float(r) > 0 for r in eps0_per_unknown):
        raise ValueError(f"eps0_per_unknown must be positive numbers, got {tuple(eps0_per_unknown)}")
    if any(not float(r) > 0 for r in frechet_eps0):
        raise ValueError(f"frechet_eps0 must be positive numbers, got {tuple(frechet_eps0)}")
    if int(num_steps) < 10:
        raise ValueError(f"num_steps must be >= 10, got {num_steps}")
    if not 0 < float(mu) <= 1:
        raise ValueError(f"mu must be in (0, 1], got {mu}")
    from ccdf.schedules import DiscreteVP

    num_steps = int(num_steps)
    eps0_grid = [float(r) for r in eps0_per_unknown]
    samplers = tuple(dict.fromkeys(samplers))
    schedule = DiscreteVP.linear(1000)
    numbers: dict[str, Any] = {}
    arrays: dict[str, Any] = {}
    for name in problems:
        numbers[name], arrays[name] = _problem_numbers(
            name, schedule, num_steps, eps0_grid=eps0_grid, shapes=tuple(shapes), samplers=samplers,
            frechet_eps0=[float(r) for r in frechet_eps0], frechet_points=int(frechet_points), mu=float(mu),
        )  # fmt: skip
    result: dict[str, Any] = {
        "settings": {
            "problems": list(problems),
            "eps0_per_unknown": eps0_grid,
            "shapes": list(shapes),
            "samplers": list(samplers),
            "num_steps": num_steps,
            "schedule": "DDPM linear beta 1e-4..0.02, 1000 training steps",
            "frechet_eps0": [float(r) for r in frechet_eps0],
            "mu": float(mu),
        },
        "common": _common_numbers(schedule, num_steps),
        "problems": numbers,
    }
    if num_steps == 1000:
        result["reference"] = _reference_checks(schedule, num_steps, arrays)
    else:
        result["reference"] = {"skipped": f"THEORY's values are for N = 1000 (got num_steps={num_steps})"}

    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    files: list[Path] = []

    def target(name: str) -> Path:
        path = out_dir / name
        if on_write is not None:
            on_write(path)
        return path

    files.append(_fig_error_vs_t0(arrays, eps0_grid, num_steps, target(FIGURES[0]), dpi))
    files.append(_fig_optimal_t0(arrays, schedule, num_steps, target(FIGURES[1]), dpi))
    files.append(_fig_bound(arrays, schedule, num_steps, target(FIGURES[2]), dpi))
    files.append(_fig_contraction(arrays, schedule, num_steps, target(FIGURES[3]), dpi))
    files.append(_fig_frechet(numbers, target(FIGURES[4]), dpi))
    result["seconds"] = round(time.perf_counter() - tic, 2)
    files.append(write_json(target("theory.json"), result))
    md = _markdown(result, samplers)
    files.append(atomic_write(target("report.md"), lambda tmp: tmp.write_text(md)))
    if figures_to is not None:
        dest = Path(figures_to)
        for f in FIGURES:
            src = out_dir / f
            atomic_write(dest / f"theory_{f}", lambda tmp, src=src: shutil.copyfile(src, tmp))
    result["files"] = [str(p) for p in files]
    json.dumps(result)  # everything is JSON-serialisable
    return result
