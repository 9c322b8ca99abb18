r"""The theory report (issue #6): figures, a JSON of the numbers and a Markdown summary.

:func:`write_report` evaluates docs/reference/THEORY.md's two linear-Gaussian test problems with the exact
propagation of the project's samplers (:func:`ccdf.theory.propagate`), the closed forms, the
paper's constants and the exact Fréchet distances, and writes, atomically, into one folder:

* ``error_vs_t0.png``: E(t0) for several initial errors eps0 (DDPM and DDIM), per problem;
* ``optimal_t0_vs_eps0.png``: the MSE-optimal t0 against eps0 (error shapes, samplers, ideal);
* ``bound_vs_exact.png``: Theorem 1's bound against the exact two-run distance D;
* ``contraction_factors.png``: the paper's lambda_i, the true factor m_i(s_max) and ``||A M_i A||``;
* ``mse_vs_frechet.png``: MSE against the Fréchet distance to the data law / posterior as t0 varies;
* ``contraction_measured.png`` (with ``contraction``): the measured per-step factor of the learned demo prior
  and the Gaussian prior on real faces (:mod:`~ccdf.theory.report.measured`);
* ``theory.json``: every number (the §6 tables, thresholds, full-run errors, curves, the
  reproduction of docs/reference/THEORY.md's reference values with a pass flag, and ``contraction``);
* ``report.md``: the tables, the figure links and the ours-vs-THEORY table.

Sampler variants (``samplers``): ``ddpm`` is the project's DDPM (sigma_i^2 = beta_i, no noise on the
last step), ``ddpm_theory`` docs/reference/THEORY.md's recursion (the same, plus beta_1 noise on the last step),
``beta_tilde``, ``exact`` (the true Gaussian reverse kernel) and ``ddim`` (eta = 0). Errors are in
the units of docs/reference/THEORY.md (sum over the 256 pixels, prior variance 0.25 per pixel); eps0 is given per
unknown pixel (``eps0 / n_u``). THEORY's reference values and their tolerances are data:
``ccdf/assets/theory/reference.json`` (:mod:`ccdf.theory.reference`), shared with the tests.

The package: :mod:`~ccdf.theory.report.numbers` (the numbers), :mod:`~ccdf.theory.report.checks`
(THEORY's reference values, :mod:`ccdf.theory.reference`), :mod:`~ccdf.theory.report.figures`,
:mod:`~ccdf.theory.report.markdown`, :mod:`~ccdf.theory.report.measured` (the measured contraction);
:func:`write_report` here.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ccdf.theory.report import measured
from ccdf.theory.report.numbers import (
    DEFAULT_EPS0,
    PROBLEMS,
    SHAPES,
    VARIANTS,
    _frechet_centred,
    _psd_sqrt,
    common_numbers,
    problem_numbers,
)
from ccdf.utils.io import atomic_write, write_json

log = logging.getLogger("ccdf")

__all__ = ["FIGURES", "REPORT_FILES", "write_report", "_frechet_centred", "_psd_sqrt"]

FIGURES = (
    "error_vs_t0.png",
    "optimal_t0_vs_eps0.png",
    "bound_vs_exact.png",
    "contraction_factors.png",
    "mse_vs_frechet.png",
)
REPORT_FILES = (*FIGURES, "theory.json", "report.md")


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
    contraction: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    r"""Compute the theory numbers and write the five figures, ``theory.json`` and ``report.md``.

    Args:
        out_dir: the folder to write into (created).
        problems: docs/reference/THEORY.md's test problems, ``"box"`` (inpainting, non-commuting) and/or ``"eigen"``
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
        contraction: keyword arguments of :func:`ccdf.theory.report.measured.measured_contraction` (the
            measured per-step contraction of the demo prior and the Gaussian prior: ``theory.json``'s
            ``contraction`` and ``contraction_measured.png``); None skips it.

    Returns:
        The content of ``theory.json`` (plus ``files``: the written paths).
    """
    with _one_blas_thread():
        return _write_report(
            out_dir, problems=problems, eps0_per_unknown=eps0_per_unknown, shapes=shapes, samplers=samplers,
            num_steps=num_steps, frechet_eps0=frechet_eps0, frechet_points=frechet_points, mu=mu, dpi=dpi,
            figures_to=figures_to, on_write=on_write, contraction=contraction,
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


def _validate(problems, eps0_per_unknown, shapes, samplers, frechet_eps0, num_steps, mu, contraction) -> None:
    """Clear errors for bad settings, before anything is computed or written."""
    if contraction is not None:
        measured.check_mapping(contraction)
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
    contraction: Mapping[str, Any] | None,
) -> dict[str, Any]:
    tic = time.perf_counter()
    problems = tuple(problems)
    _validate(problems, eps0_per_unknown, shapes, samplers, frechet_eps0, num_steps, mu, contraction)
    from ccdf.schedules import DiscreteVP
    from ccdf.theory.report.checks import reference_checks

    num_steps = int(num_steps)
    eps0_grid = [float(r) for r in eps0_per_unknown]
    samplers = tuple(dict.fromkeys(samplers))
    schedule = DiscreteVP.linear(1000)
    numbers: dict[str, Any] = {}
    arrays: dict[str, Any] = {}
    for name in problems:
        numbers[name], arrays[name] = problem_numbers(
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
        "common": common_numbers(schedule, num_steps),
        "problems": numbers,
    }
    if num_steps == 1000:
        result["reference"] = reference_checks(schedule, num_steps, arrays)
    else:
        result["reference"] = {"skipped": f"THEORY's values are for N = 1000 (got num_steps={num_steps})"}
    if contraction is not None:
        result["contraction"] = measured.measured_contraction(**contraction, progress=log.info)
    files = _write_files(Path(out_dir), result, arrays, numbers, eps0_grid, schedule, num_steps, dpi, tic, on_write)
    if figures_to is not None:
        dest = Path(figures_to)
        for f in FIGURES + ((measured.FIGURE,) if contraction is not None else ()):
            src = Path(out_dir) / f
            atomic_write(dest / f"theory_{f}", lambda tmp, src=src: shutil.copyfile(src, tmp))
    result["files"] = [str(p) for p in files]
    json.dumps(result)  # everything is JSON-serialisable
    return result


def _write_files(out_dir: Path, result, arrays, numbers, eps0_grid, schedule, num_steps, dpi, tic, on_write):
    """The figures, then ``theory.json`` (with the time taken) and ``report.md``; each file atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from ccdf.theory.report.figures import write_figures
    from ccdf.theory.report.markdown import markdown

    def target(name: str) -> Path:
        path = out_dir / name
        if on_write is not None:
            on_write(path)
        return path

    files = write_figures(arrays, numbers, eps0_grid, schedule, num_steps, [target(f) for f in FIGURES], dpi)
    if "contraction" in result:
        files.append(measured.write_figure(result["contraction"], target(measured.FIGURE), dpi))
    result["seconds"] = round(time.perf_counter() - tic, 2)
    files.append(write_json(target("theory.json"), result))
    md = markdown(result, FIGURES)
    files.append(atomic_write(target("report.md"), lambda tmp: tmp.write_text(md)))
    return files
