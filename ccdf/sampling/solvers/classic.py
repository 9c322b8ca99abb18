r"""The first-generation solvers: one-step rules (DDPM, DDIM, VE reverse diffusion) with an
optional Langevin corrector, each followed by the conditioning (CCDF, Alg. 1).

Per grid step t -> s: ``n_corrector`` corrector steps at level t (each followed by the
conditioning at t), one denoiser evaluation, one step rule from t to s, the conditioning at s.
"""

from __future__ import annotations

from ccdf.sampling.solvers.base import Solver
from ccdf.sampling.steps import CORRECTORS, STEPS, VARIANCES


class StepSolver(Solver):
    """A one-step rule of :data:`ccdf.sampling.steps.STEPS` plus an optional corrector.

    Args:
        step: ``"ddpm"``/``"ancestral"`` or ``"ddim"``.
        variance: ancestral variance ``beta`` | ``beta_tilde`` | ``learned``.
        eta: DDIM's eta.
        corrector: ``"langevin"`` or None; ``n_corrector`` steps per level with ``snr`` and the
            step-size rule ``corrector_step`` (:func:`ccdf.sampling.steps.langevin_correct`).

    NFE per grid step: 1 + n_corrector with a corrector, 1 without.
    """

    def __init__(
        self,
        step: str = "ddpm",
        variance: str = "beta",
        eta: float = 0.0,
        corrector: str | None = None,
        n_corrector: int = 1,
        snr: float = 0.16,
        corrector_step: str = "sigma",
    ) -> None:
        if not callable(step) and step not in STEPS:
            raise ValueError(f"unknown step {step!r}; choose one of {sorted(STEPS)}")
        if variance not in VARIANCES:
            raise ValueError(f"unknown variance {variance!r}; choose one of {VARIANCES}")
        if corrector is not None and not callable(corrector) and corrector not in CORRECTORS:
            raise ValueError(f"unknown corrector {corrector!r}; choose one of {sorted(CORRECTORS)}")
        if corrector is not None and int(n_corrector) < 0:
            raise ValueError(f"n_corrector must be >= 0, got {n_corrector}")
        self.step_rule, self.variance, self.eta = step, variance, float(eta)
        self.corrector, self.n_corrector = corrector, int(n_corrector) if corrector is not None else 0
        self.snr, self.corrector_step = float(snr), corrector_step
        self.name = step if isinstance(step, str) else getattr(step, "__name__", "step")
        self.evals_per_step = 1 + self.n_corrector

    def step(self, denoiser, schedule, x, step, cond, history, batch):
        t, s, gen, problem = step.t, step.s, step.generator, step.problem
        step_fn = self.step_rule if callable(self.step_rule) else STEPS[self.step_rule]
        if self.n_corrector:
            corr = self.corrector if callable(self.corrector) else CORRECTORS[self.corrector]
            for _ in range(self.n_corrector):
                x_t, out = self.evaluate(denoiser, x, step, cond)
                x_c = corr(schedule, x_t, out, t, s, snr=self.snr, step_size=self.corrector_step, generator=gen)
                x = cond.step(x_c, x_t, out.x0_hat, t, t, problem, gen)
        x_t, out = self.evaluate(denoiser, x, step, cond)
        x_s = step_fn(schedule, x_t, out, t, s, variance=self.variance, eta=self.eta, generator=gen)
        return cond.step(x_s, x_t, out.x0_hat, t, s, problem, gen), out.x0_hat
