"""Solvers that own their loop over the time grid (:mod:`ccdf.sampling.solvers.base`).

:data:`SOLVERS` maps the names the configs use (``sampler=<name>``) to constructors with the
solver's default settings.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ccdf.sampling.solvers.base import History, Solver, Step, StepInfo, active_sets, denoise
from ccdf.sampling.solvers.classic import StepSolver
from ccdf.sampling.solvers.ddnm import DDNM
from ccdf.sampling.solvers.diffpir import DiffPIR
from ccdf.sampling.solvers.dpmpp import DPMSolverPP2M

SOLVERS: dict[str, Callable[[], Solver]] = {
    "ddpm": partial(StepSolver, step="ddpm"),
    "ddim": partial(StepSolver, step="ddim"),
    "ve_pc": partial(StepSolver, step="ancestral", corrector="langevin"),
    "dpmpp_2m": DPMSolverPP2M,
    "ddnm": DDNM,
    "diffpir": DiffPIR,
}

__all__ = [
    "DDNM",
    "SOLVERS",
    "DPMSolverPP2M",
    "DiffPIR",
    "History",
    "Solver",
    "Step",
    "StepInfo",
    "StepSolver",
    "active_sets",
    "denoise",
]
