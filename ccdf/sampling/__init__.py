"""CCDF sampling: ``sample_ccdf``, reverse steps and data-consistency steps."""

from ccdf.sampling.ccdf import StepInfo, expected_nfe, make_solver, reverse_steps, sample_ccdf, warm_start
from ccdf.sampling.conditioning import CONDITIONINGS, Conditioning, NoConditioning, Problem, Projection, Prox
from ccdf.sampling.dc import DC_FACTORIES, make_identity_dc, make_projection_dc
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
    "DC_FACTORIES",
    "STEPS",
    "StepInfo",
    "ancestral_step",
    "ddim_step",
    "expected_nfe",
    "langevin_correct",
    "make_identity_dc",
    "make_projection_dc",
    "reverse_steps",
    "sample_ccdf",
]
