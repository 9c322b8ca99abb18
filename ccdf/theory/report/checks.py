"""THEORY.md's reference values recomputed and checked (``theory.json``'s ``reference``).

The values and their tolerances are data (:mod:`ccdf.theory.reference`,
``ccdf/assets/theory/reference.json``); this module computes ours under the same keys.
"""

from __future__ import annotations

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
from ccdf.theory.paper import theorem1_bound, theorem2_threshold
from ccdf.theory.reference import REFERENCE_FILE, load_reference
from ccdf.theory.report.numbers import (
    SHAPES,
    VARIANT_LABELS,
    _argmin,
    _beats_from,
    _sig,
    _violations,
    prior_and_factors,
)

T0S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
THEOREM2_PROOF = ((1, 0.25), (1, 0.75), (0.5, 0.75), (0.1, 0.25), (0.1, 0.75), (0.5, 0.25))
THEOREM1_BOX = ((0, 0), (0.1, 0), (0.1, 1), (1, 0), (1, 1), (10, 0), (10, 1))  # (eps0/n_u, shape index)
THEOREM1_EIGEN = ((0, 0), (10, 1))
MIN_STEPS = ((1, 0), (3, 0), (1, 1), (3, 1))
BOX_ROWS = (0.01, 0.03, 0.1, 0.3, 1, 3)  # eps0/n_u of THEORY §6's tables
EIGEN_ROWS = (0.01, 0.1, 0.3, 1, 3)
SHAPE_ROWS = ((0.1, "top"), (0.1, "bottom"), (0.3, "top"), (0.3, "bottom"), (1, "top"), (1, "bottom"))


def reference_checks(schedule, num_steps: int, arrays: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every value of THEORY.md (§1, §3-6) that the code recomputes, with a pass flag (the file's tolerance)."""
    ref = load_reference()
    ours = _common(schedule, num_steps)
    for name in arrays:
        ours.update(_posterior(name, arrays[name]))
        ours.update(_full_runs(name, arrays[name]))
    if "box" in arrays:
        ours.update(_box(schedule, num_steps, arrays["box"]))
        ours.update(_table("box", schedule, num_steps, arrays["box"], BOX_ROWS, ideal=True))
        ours.update(_shape_table(num_steps, arrays["box"]))
    if "eigen" in arrays:
        ours.update(_eigen(schedule, num_steps, arrays["eigen"]))
        ours.update(_table("eigen", schedule, num_steps, arrays["eigen"], EIGEN_ROWS, ideal=False))
    known = set(ref["values"]) | set(ref["deviations"])
    unknown = sorted(set(ours) - known)
    problem = {k: k.split(" ")[0].rstrip(":") for k in known}  # "box", "eigen" or a common value
    missing = [k for k in known if k not in ours and (problem[k] in arrays or problem[k] not in ("box", "eigen"))]
    if unknown or missing:
        raise KeyError(f"{REFERENCE_FILE} and ccdf.theory.report.checks disagree: not in the file {unknown}, "
                       f"not computed {missing}")  # fmt: skip
    checks = [_check(key, entry["theory"], entry["tolerance"], ours[key])
              for key, entry in ref["values"].items() if key in ours]  # fmt: skip
    deviations = [
        {"quantity": key, "theory": entry["theory"], "ours": _sig(ours[key]), "why": entry["why"],
         "as_recorded": bool(abs(ours[key] - float(entry["ours"])) <= entry["tolerance"] + 1e-12)}
        for key, entry in ref["deviations"].items() if key in ours
    ]  # fmt: skip
    return {
        "rule": ref["rule"],
        "all_pass": all(c["pass"] for c in checks),
        "num_checks": len(checks),
        "num_pass": sum(c["pass"] for c in checks),
        "checks": checks,
        "deviations": deviations,
        "readings": {name: _readings(arrays[name]) for name in ("box", "eigen") if name in arrays},
    }


def _check(quantity: str, theory: str | int, tolerance: float, ours: float) -> dict[str, Any]:
    if isinstance(theory, int):
        return {"quantity": quantity, "theory": theory, "ours": int(ours), "tolerance": 0, "pass": int(ours) == theory}
    ok = abs(float(ours) - float(theory)) <= tolerance + 1e-12  # slack for the decimal rounding of the tolerance
    return {"quantity": quantity, "theory": theory, "ours": _sig(ours), "tolerance": tolerance, "pass": bool(ok)}


def _common(schedule, num_steps: int) -> dict[str, float]:
    """§1 prior, the sigma^2(t0) table, §4 contraction factors, §5.2 the proof's thresholds."""
    cov, lam, pc, i_max, m = prior_and_factors(schedule, num_steps)
    lam200 = np.max(pc.lam[1:201])
    ours = {
        "prior: smallest eigenvalue": lam.min(),
        "prior: largest eigenvalue": lam.max(),
        "prior: eigenvalues > 1": int((lam > 1).sum()),
        "prior: pixel variance": cov[0, 0],
        "prior: neighbour correlation": cov[0, 1] / cov[0, 0],
        **{f"sigma^2(t0 = {t:g})": float(sigma2_of_t0(schedule, t)) for t in T0S},
        "paper lambda: max": pc.lam[i_max],
        "paper lambda: argmax i": i_max,
        "true factor m_i(s_max): max": np.nanmax(m),
        "true factor m_i(s_max): last expansive i": int((np.flatnonzero(m[1:] > 1) + 1).max()),
        "top direction stretched over 200 steps": np.prod(m[1:201]),
        "paper lambda^200": lam200**200,
        "paper lambda^{2N'} alpha_bar at t0 = 0.2": lam200**400 * pc.alpha_bar[200],
    }
    for mu, tau in THEOREM2_PROOF:
        ours[f"Theorem 2 proof threshold eps0/n (mu = {mu:g}, tau = {tau:g})"] = theorem2_threshold(
            schedule, num_steps, mu=mu, tau=tau
        )
    return ours


def _posterior(name: str, arr: dict[str, Any]) -> dict[str, float]:
    s = arr["problem"].post_var
    return {
        f"{name}: tr Sigma_post": s.sum(),
        f"{name}: smallest posterior eigenvalue": s.min(),
        f"{name}: largest posterior eigenvalue": s.max(),
        f"{name}: harmonic mean of posterior eigenvalues": s.size / np.sum(1 / s),
    }


def _full_runs(name: str, arr: dict[str, Any]) -> dict[str, float]:
    ours = {f"{name}: full-run error, {VARIANT_LABELS[v]}": arr["props"][v].V[-1]
            for v in ("ddpm_theory", "beta_tilde", "exact", "ddim") if v in arr["props"]}  # fmt: skip
    ours[f"{name}: exact posterior sampler 2 tr Sigma_post"] = 2 * arr["problem"].post_var.sum()
    return ours


def _theorem1(name: str, schedule, num_steps: int, pb, pr, cases, count: bool) -> dict[str, float]:
    ours = {}
    for r, k in cases:
        eps0 = r * pb.n_u
        v = _violations(pr.distance(eps0, k), theorem1_bound(schedule, num_steps, n=pb.n, tau=pb.tau, eps0=eps0))
        ours[f"{name}: Theorem 1 violated for N' <= (eps0/n_u = {r:g}, {SHAPES[k]})"] = v["max_reverse_steps"]
        if count:
            ours[f"{name}: Theorem 1 violations count (eps0/n_u = {r:g}, {SHAPES[k]})"] = v["count"]
    return ours


def _box(schedule, num_steps: int, arr: dict[str, Any]) -> dict[str, float]:
    """§4-§6 of the box problem on THEORY's DDPM recursion (thresholds, Theorem 1 and 2, ideal sigma*^2)."""
    pb, pr, block = arr["problem"], arr["props"]["ddpm_theory"], arr["block"]
    n_u = pb.n_u
    bound0 = theorem1_bound(schedule, num_steps, n=pb.n, tau=pb.tau)
    ours = {
        "box: ||A M_i A|| max": np.nanmax(block),
        "box: ||A M_i A|| > 1, last i": int((np.flatnonzero(block[1:] > 1) + 1).max()),
        "box: D0 at t0 = 0.2": pr.D0[200],
        "box: Theorem 1 bound, eps0-free part at t0 = 0.2": bound0[200],
        "box: Theorem 1 noise term at N' = N": bound0[-1],
        "box: D0 at N' = N": pr.D0[-1],
        **{f"box: h(t0 = 0.2), {k} error": pr.h[i, 200] for i, k in enumerate(SHAPES)},
        **_theorem1("box", schedule, num_steps, pb, pr, THEOREM1_BOX, count=True),
        **{
            f"box: eps_c(mu = 0.5)/n_u, {k}": feasibility_threshold(pr.D0, pr.h[i], 0.5) / n_u
            for i, k in enumerate(SHAPES)
        },  # fmt: skip
    }
    for r, k in MIN_STEPS:
        ours[f"box: minimal N' for D <= 0.5 eps0 (eps0/n_u = {r}, {SHAPES[k]})"] = (
            min_steps_for_ratio(pr.D0, pr.h[k], r * n_u, 0.5) or -1
        )
    for i, k in enumerate(SHAPES):
        ours[f"box: no-diffusion threshold /n_u, {k}"] = no_diffusion_threshold(pr.V, pr.h[i]) / n_u
    ours["box: no-diffusion threshold /n_u, iso (4 digits)"] = ours["box: no-diffusion threshold /n_u, iso"]
    ours["box: ideal helps-threshold (harmonic mean)"] = helps_threshold_ideal(pb.post_var) / n_u
    for r in (1, 3):
        ours[f"box: beats the full run from t0 (eps0/n_u = {r})"] = pr.t0[_beats_from(pr.error(r * n_u))]
    for r in (0.1, 0.3, 1, 3):
        sig = optimal_sigma2(pb.post_var, np.full(n_u, r))
        ours[f"box: ideal sigma*^2 (eps0/n_u = {r})"] = sig
        ours[f"box: ideal sigma*^2 -> t0 (eps0/n_u = {r})"] = t0_of_sigma2(schedule, num_steps, sig)
    zero = 0 * pb.post_var
    for label, s2 in (("0", 0.0), ("0.1", None), ("0.2", None), ("1 (limit)", 1e12)):
        sigma2 = s2 if s2 is not None else float(sigma2_of_t0(schedule, float(label)))
        key = f"box: MMSE start (kappa = 0), E at t0 = {label}"
        ours[key] = correlated_init_error(pb.post_var, zero, 0.0, sigma2)
    return ours


def _eigen(schedule, num_steps: int, arr: dict[str, Any]) -> dict[str, float]:
    pb, pr = arr["problem"], arr["props"]["ddpm_theory"]
    ours = _theorem1("eigen", schedule, num_steps, pb, pr, THEOREM1_EIGEN, count=False)
    for i, k in enumerate(SHAPES):
        ours[f"eigen: eps_c(mu = 0.5)/n_u, {k}"] = feasibility_threshold(pr.D0, pr.h[i], 0.5) / pb.n_u
    return ours


def _table(name: str, schedule, num_steps: int, arr, rows, *, ideal: bool) -> dict[str, float]:
    """§6: per eps0/n_u the optimum t0* / E* and E(0.2) (THEORY's DDPM), DDIM's, and the ideal closed form's."""
    pb, props = arr["problem"], arr["props"]
    ours = {}
    for r in rows:
        eps0, head = r * pb.n_u, f"{name} eps0/n_u = {r:g}"
        e = props["ddpm_theory"].error(eps0)
        j = _argmin(e)
        ours.update({f"{head}: t0*": j / num_steps, f"{head}: E*": e[j], f"{head}: E(t0 = 0.2)": e[200]})
        e = props["ddim"].error(eps0)
        j = _argmin(e)
        ours.update({f"{head}: DDIM t0*": j / num_steps, f"{head}: DDIM E*": e[j]})
        for sampler in ("ddpm", "ddim") if ideal else ():
            c = ideal_curve(schedule, num_steps, pb.post_var, eps0 * arr["weights"]["iso"], sampler)
            j = _argmin(c)
            ours.update({f"{head}: ideal {sampler.upper()} t0*": j / num_steps,
                         f"{head}: ideal {sampler.upper()} E*": c[j]})  # fmt: skip
    return ours


def _shape_table(num_steps: int, arr) -> dict[str, float]:
    pb, pr = arr["problem"], arr["props"]["ddpm_theory"]
    ours = {}
    for r, k in SHAPE_ROWS:
        e = pr.error(r * pb.n_u, SHAPES.index(k))
        j = _argmin(e)
        ours.update({f"box eps0/n_u = {r:g}, {k} error: t0*": j / num_steps,
                     f"box eps0/n_u = {r:g}, {k} error: E*": e[j]})  # fmt: skip
    return ours


def _readings(arr: dict[str, Any]) -> dict[str, Any]:
    """THEORY's DDPM recursion (beta_1 noise on the last step) against the project's sampler (none)."""
    props, n_u = arr["props"], arr["problem"].n_u
    theory, code = props["ddpm_theory"], props["ddpm"]
    return {
        "full_run_error": {"theory_reading": _sig(theory.V[-1]), "project_code": _sig(code.V[-1])},
        "no_diffusion_threshold_per_unknown": {
            k: {
                "theory_reading": _sig(no_diffusion_threshold(theory.V, theory.h[i]) / n_u),
                "project_code": _sig(no_diffusion_threshold(code.V, code.h[i]) / n_u),
            }
            for i, k in enumerate(SHAPES)
        },
        "V_difference_beta1_times_n_u": _sig(theory.V[-1] - code.V[-1]),
    }
