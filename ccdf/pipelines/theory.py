"""``mode=theory`` (``python run.py task=theory``): the exact linear-Gaussian report of docs/theory.md, and
the measured contraction of the demo prior and the Gaussian prior (``theory.contraction``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ccdf.pipelines.config import check_common

log = logging.getLogger("ccdf")


@dataclass(frozen=True)
class TheorySettings:
    """The ``theory`` node of config.yaml (its values are checked by :func:`ccdf.theory.report.write_report`)."""

    problems: list[str]
    eps0_per_unknown: list[float]
    shapes: list[str]
    samplers: list[str]
    num_steps: int
    frechet_eps0: list[float]
    figures_to: str | None
    contraction: dict[str, Any] | None  # ccdf.theory.report.measured.measured_contraction's keywords; None: skip


def settings_from(cfg: DictConfig) -> TheorySettings:
    """The report needs no data, model or checkpoint: only the ``theory`` node."""
    check_common(cfg, may_be_missing=None)
    tc = cfg.theory
    contraction = tc.get("contraction")
    if contraction is not None:
        from omegaconf import OmegaConf

        from ccdf.theory.report.measured import check_mapping

        if not isinstance(contraction, DictConfig):
            raise ValueError(f"theory.contraction must be a mapping or null, got {contraction!r}")
        contraction = OmegaConf.to_container(contraction, resolve=True)
        check_mapping(contraction)
    return TheorySettings(
        problems=list(tc.problems), eps0_per_unknown=[float(r) for r in tc.eps0_per_unknown],
        shapes=list(tc.shapes), samplers=list(tc.samplers), num_steps=int(tc.num_steps),
        frechet_eps0=[float(r) for r in tc.frechet_eps0], figures_to=tc.get("figures_to"), contraction=contraction,
    )  # fmt: skip


def run(settings: TheorySettings, run_dir: Path, written: list[Path], guard: Any = None) -> None:
    """Write the figures, theory.json and report.md into ``run_dir`` (``figures_to``: the figures there too)."""
    from ccdf.theory.report import write_report

    s = settings
    result = write_report(
        run_dir, problems=s.problems, eps0_per_unknown=s.eps0_per_unknown, shapes=s.shapes, samplers=s.samplers,
        num_steps=s.num_steps, frechet_eps0=s.frechet_eps0, figures_to=s.figures_to, on_write=written.append,
        contraction=s.contraction,
    )  # fmt: skip
    ref = result["reference"]
    if "checks" in ref:
        status = f"{ref['num_pass']}/{ref['num_checks']} of THEORY.md's reference values reproduced"
    else:
        status = f"reference check skipped ({ref['skipped']})"
    log.info("theory report: %s, %.1f s -> %s", status, result["seconds"], run_dir / "report.md")
