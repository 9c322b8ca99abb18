"""CCDF sampling: the warm start (``sample_ccdf``, ``warm_start``), solvers, step rules and conditionings."""

from ccdf.sampling.ccdf import StepInfo, expected_nfe, make_solver, reverse_steps, sample_ccdf, warm_start
from ccdf.sampling.conditioning import CONDITIONINGS, Conditioning, NoConditioning, Problem, Projection, Prox
from ccdf.sampling.solvers import SOLVERS, Solver, StepSolver
from ccdf.sampling.steps import CORRECTORS, STEPS, ancestral_step, ddim_step, langevin_correct

__all__ = [
    "CONDITIONINGS",
    "CORRECTORS",
    "Conditioning",
    "NoConditioning",
    "Problem",
    "Projection",
    "Prox",
    "SOLVERS",
    "Solver",
    "StepSolver",
    "make_solver",
    "warm_start",
    "STEPS",
    "StepInfo",
    "ancestral_step",
    "ddim_step",
    "expected_nfe",
    "langevin_correct",
    "reverse_steps",
    "sample_ccdf",
]
