"""The Hydra edge: ``main(cfg)`` checks the composed config, turns it into the mode's typed settings and runs
the mode's pipeline (:mod:`ccdf.pipelines`), owning the run folder: what a failed or interrupted run removes.

With ``run.py`` and :mod:`ccdf.pipelines`, the only code that reads Hydra or OmegaConf objects.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ccdf.pipelines import MODES
from ccdf.pipelines import reconstruct as _reconstruct
from ccdf.pipelines import theory as _theory
from ccdf.pipelines import train as _train
from ccdf.pipelines.auto_t0 import resolve_auto_t0
from ccdf.pipelines.config import check_common, instantiate_node, missing_values
from ccdf.pipelines.reconstruct import Components
from ccdf.pipelines.run_folder import earlier_files, remove_partial_run
from ccdf.utils.signals import Interrupted, SignalGuard, signal_name

log = logging.getLogger("ccdf")

#: ``mode`` -> its pipeline module (``settings_from(cfg)``, ``run(settings, run_dir, written, guard)``).
PIPELINES = dict(zip(MODES, (_reconstruct, _train, _theory), strict=True))

# Names that scripts and tests import from here.
__all__ = ["Components", "build", "main", "missing_values", "reconstruct", "resolve_auto_t0", "validate"]
_instantiate = instantiate_node


def validate(cfg: DictConfig) -> Any:
    """Check the config for its ``mode`` (before anything is built; each error names its key) and return
    the mode's settings (:class:`~ccdf.pipelines.reconstruct.ReconstructSettings`, ...)."""
    pipeline = PIPELINES.get(cfg.mode)
    if pipeline is None:
        check_common(cfg)  # names the missing values first, then the unknown mode
    return pipeline.settings_from(cfg)


def main(cfg: DictConfig) -> float | None:
    """Entry point called by ``run.py``; returns the pipeline's metric (reconstruct: the mean PSNR, which
    sweepers optimise; train: the last loss).

    A failing run removes what it wrote (never a file that was in the run folder before it started, see
    :func:`ccdf.pipelines.run_folder.remove_partial_run`). SIGINT (Ctrl-C) and SIGTERM stop the run with exit
    status 130 and 143 (``128 + signum``, :mod:`ccdf.utils.signals`): training first writes
    ``checkpoints/last.ckpt`` and keeps its folder (``training.resume=<that file>`` continues it); a
    reconstruction keeps its finished images in the result cache (the same command resumes) and is otherwise
    removed like a failed run.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    job_name = HydraConfig.get().job.name
    before = earlier_files(run_dir, job_name)
    written: list[Path] = []
    with SignalGuard() as guard:
        try:
            settings = validate(cfg)
            torch.manual_seed(int(cfg.seed))  # library code never uses the global generator; this is a guard
            return PIPELINES[cfg.mode].run(settings, run_dir, written, guard)
        except BaseException as err:
            signum = err.signum if isinstance(err, Interrupted) else guard.received
            if signum is None:  # a failure
                ckpts = [p for p in (run_dir / "checkpoints").glob("*") if p not in before]
                if cfg.get("mode") == "train" and ckpts:
                    log.error("training failed; the checkpoints it wrote are kept in %s", run_dir / "checkpoints")
                else:
                    remove_partial_run(run_dir, written, job_name, before)
                raise
            if cfg.get("mode") == "train":
                log.warning("training interrupted by %s: the run folder %s and its checkpoints are kept",
                            signal_name(signum), run_dir)  # fmt: skip
            else:
                remove_partial_run(run_dir, written, job_name, before)
                log.warning("interrupted by %s: finished images stay in the result cache; run the same command "
                            "again to resume", signal_name(signum))  # fmt: skip
            raise SystemExit(128 + signum) from None


def build(cfg: DictConfig) -> Components:
    """The reconstruction's components from a composed config (:func:`ccdf.pipelines.reconstruct.build`)."""
    return _reconstruct.build(_reconstruct.component_specs(cfg))


def reconstruct(cfg: DictConfig, run_dir: Path, written: list[Path]) -> float:
    """``mode=reconstruct`` on a composed config, into ``run_dir`` (:func:`ccdf.pipelines.reconstruct.run`)."""
    return _reconstruct.run(_reconstruct.settings_from(cfg), run_dir, written)


def eval_setting(cfg: DictConfig, lpips: bool = False) -> dict[str, Any]:
    """The result cache's key of a composed config (:func:`ccdf.pipelines.reconstruct.eval_setting`)."""
    return _reconstruct.eval_setting(_reconstruct.settings_from(cfg), lpips)


def _load_inception(cfg: DictConfig, is_mri: bool) -> Any:
    return _reconstruct.load_inception(_reconstruct.settings_from(cfg), is_mri)
