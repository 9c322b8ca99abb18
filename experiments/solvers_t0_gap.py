"""How far ``sampler.t0=auto``'s closed form lands from each linear solver's exact optimum (issue #15, item 4).

    python experiments/solvers_t0_gap.py        # ~2 minutes on a CPU

THEORY.md's box-inpainting problem (16x16 periodic prior, central 8x8 hole), DDPM's linear schedule with a
100-step grid, an isotropic initial error of eps0 per unknown pixel in {0.1, 0.3, 1}. For each solver the
exact error curve E(N') comes from :func:`ccdf.theory.solvers.propagate_solver`; the closed-form choice is
:func:`ccdf.theory.optimal_t0` with the form ``t0=auto`` uses for that solver
(:func:`ccdf.theory.auto.closed_form_of`) and ideal inputs (the exact posterior spectrum and the error).
Writes experiments/results/solvers_t0_gap.json: per solver and eps0, the optimal N' and error, the
closed-form N' and its exact error, and their ratio.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ccdf.sampling.conditioning import NoConditioning, Projection
from ccdf.sampling.guidance import PiGDM
from ccdf.sampling.solvers import DDNM, DiffPIR, DPMSolverPP2M, StepSolver
from ccdf.schedules import DiscreteVP
from ccdf.theory import box_inpainting, error_shape, optimal_t0
from ccdf.theory.auto import closed_form_of
from ccdf.theory.solvers import propagate_solver

OUT = Path(__file__).resolve().parents[1] / "experiments" / "results"
NUM_STEPS = 100
EPS0_PER_UNKNOWN = (0.1, 0.3, 1.0)
CASES = {
    "ddpm + project": (lambda: StepSolver("ddpm"), Projection),
    "ddim + project": (lambda: StepSolver("ddim"), Projection),
    "dpmpp_2m + project": (DPMSolverPP2M, Projection),
    "pigdm (ddim eta 1)": (lambda: StepSolver("ddim", eta=1.0), PiGDM),
    "ddnm (eta 0.85)": (lambda: DDNM(eta=0.85), NoConditioning),
    "diffpir (zeta 0.25)": (lambda: DiffPIR(zeta=0.25), NoConditioning),
    "diffpir (zeta 1)": (lambda: DiffPIR(zeta=1.0), NoConditioning),
}


def main() -> None:
    problem = box_inpainting()
    schedule = DiscreteVP.linear(1000)
    b = error_shape(problem, "iso")
    result = {"problem": "box inpainting (THEORY.md)", "num_steps": NUM_STEPS, "error": "iso", "solvers": {}}
    for name, (make_solver, make_cond) in CASES.items():
        solver, cond = make_solver(), make_cond()
        prop = propagate_solver(problem, schedule, NUM_STEPS, solver, cond, error_shapes=[b])
        form = closed_form_of({"solver": solver, "dc": cond})
        rows = []
        for r in EPS0_PER_UNKNOWN:
            curve = prop.error(r * problem.n_u)
            choice = optimal_t0(schedule, NUM_STEPS, problem.post_var, np.full(problem.n_u, r), sampler=form)
            j, best = choice.num_reverse_steps, int(np.argmin(curve))
            rows.append(dict(eps0_per_unknown=r, optimal_steps=best, optimal_error=float(curve[best]),
                             closed_form_steps=j, closed_form_error=float(curve[j]),
                             ratio=float(curve[j] / curve[best])))  # fmt: skip
        result["solvers"][name] = {"form": form, "rows": rows}
        print(name, form, " ".join(f"{row['ratio']:.3f}" for row in rows), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "solvers_t0_gap.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
