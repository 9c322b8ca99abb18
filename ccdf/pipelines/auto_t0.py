"""``sampler.t0=auto``: t0 from the initializer's error and the posterior variance (:mod:`ccdf.theory.auto`),
estimated on calibration images (never the evaluation images) or given in the ``auto_t0`` node."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ccdf.pipelines.config import Spec, instantiate_node, resolved, sampler_name
from ccdf.schedules.base import num_steps_from_t0

log = logging.getLogger("ccdf")


@dataclass(frozen=True)
class AutoT0Settings:
    """The ``auto_t0`` node, checked."""

    calib_data: Spec | None  # None when both estimates are given (then nothing is sampled)
    calib_images: int
    init_mse: float | None
    post_var: float | None
    estimate_steps: int
    basis: str


def is_auto_t0(cfg: DictConfig) -> bool:
    """``sampler.t0=auto``: the start time is chosen from the estimated errors (:mod:`ccdf.theory.auto`)."""
    return isinstance(cfg.sampler.get("t0"), str) and cfg.sampler.t0.strip().lower() == "auto"


def settings_from(cfg: DictConfig) -> AutoT0Settings:
    """The ``auto_t0`` settings and the sampler they are for, checked before anything is built."""
    if cfg.eval.get("t0s"):
        raise ValueError("sampler.t0=auto chooses one t0; it cannot be combined with eval.t0s (set eval.t0s=null)")
    ac = cfg.get("auto_t0")
    if ac is None:
        raise ValueError("sampler.t0=auto needs the auto_t0 settings (conf/config.yaml)")
    if int(ac.calib_images) < 1:
        raise ValueError(f"auto_t0.calib_images must be >= 1, got {ac.calib_images}")
    if int(ac.estimate_steps) < 1:
        raise ValueError(f"auto_t0.estimate_steps must be >= 1, got {ac.estimate_steps}")
    for key in ("init_mse", "post_var"):
        value = ac.get(key)
        if value is not None and not float(value) >= (0 if key == "init_mse" else 1e-300):
            raise ValueError(f"auto_t0.{key} must be {'>= 0' if key == 'init_mse' else '> 0'}, got {value}")
    from ccdf.theory.auto import BASES, closed_form_of

    if not str(cfg.sampler.get("_target_", "")).endswith("sample_ccdf"):  # e.g. score-MRI's SSOS / hybrid
        raise ValueError(
            f"sampler.t0=auto does not cover sampler={sampler_name()}: its closed form (docs/theory.md) is "
            "derived for ccdf.sampling.sample_ccdf's solvers, not for coil-by-coil samplers; give a number as "
            "sampler.t0"
        )
    if cfg.get("operator") is not None and cfg.operator.get("per_image"):
        raise ValueError(
            "sampler.t0=auto calibrates one operator on auto_t0.calib_data; operator.per_image=true draws a "
            "different operator per image: set operator.per_image=false or give a number as sampler.t0"
        )
    settings = {k: cfg.sampler.get(k) for k in ("step", "eta", "corrector") if cfg.sampler.get(k) is not None}
    for key in ("solver", "dc"):  # solver and conditioning objects hold no weights: cheap to build here
        node = cfg.sampler.get(key)
        if isinstance(node, DictConfig):
            settings[key] = instantiate_node(node, f"sampler.{key}", f"sampler.{key}")
        elif node is not None:
            settings[key] = node
    try:
        closed_form_of(settings)
    except ValueError as err:
        if str(err).startswith("sampler.t0=auto"):  # a classic step or corrector: the message names its key
            raise
        raise ValueError(f"sampler.t0=auto does not cover sampler={sampler_name()}, {err}") from None
    if str(ac.basis) not in BASES:
        raise ValueError(f"auto_t0.basis must be one of {BASES}, got {ac.basis!r}")
    num_steps_from_t0(1.0, int(cfg.sampler.num_steps))
    given = {key: None if ac.get(key) is None else float(ac[key]) for key in ("init_mse", "post_var")}
    both = None not in given.values()
    return AutoT0Settings(calib_data=None if both else resolved(ac.calib_data), calib_images=int(ac.calib_images),
                          estimate_steps=int(ac.estimate_steps), basis=str(ac.basis), **given)  # fmt: skip


def choose_t0(auto: AutoT0Settings, comps: Any, sampler: Spec, *, seed: int, sigma_y: float, batch_size: int,
              device: torch.device) -> tuple[Spec, dict[str, Any]]:  # fmt: skip
    """Estimate the initializer's error and the posterior variance on the calibration split unless given,
    choose the MSE-optimal t0 (docs/reference/THEORY.md §3) and set ``comps.sampler`` to use it. Returns the sampler's
    spec with that t0 and the estimates (for metrics.json)."""
    from ccdf.theory.auto import auto_t0

    data = comps.dataset if auto.calib_data is None else instantiate_node(auto.calib_data, "calibration data")
    # the built sampler's keywords: solver and conditioning as objects (the run's own); posterior samples are
    # single runs (no sampler.average)
    sampler_kwargs = {k: v for k, v in comps.sampler.keywords.items() if k not in ("t0", "num_steps", "average")}
    modules = [m for m in (comps.denoiser, comps.operator, comps.initializer) if isinstance(m, torch.nn.Module)]
    for module in modules:
        module.to(device)
    try:
        choice = auto_t0(
            comps.denoiser, comps.schedule, comps.operator, comps.initializer, data,
            num_steps=int(sampler["num_steps"]), calib_images=auto.calib_images, estimate_steps=auto.estimate_steps,
            init_mse=auto.init_mse, post_var=auto.post_var, seed=seed, sigma_y=sigma_y, batch_size=batch_size,
            sampler_kwargs=sampler_kwargs, basis=auto.basis, device=device, runs=int(sampler.get("average") or 1),
        )  # fmt: skip
    finally:
        for module in modules:
            module.to("cpu")
    sampler = {**sampler, "t0": choice.t0}
    comps.sampler = instantiate_node(sampler, "sampler")
    log.info(
        "auto t0 = %g (N' = %d of %d%s%s): initializer error %.4g and posterior variance %.4g per element "
        "(%s, %s; %s basis, %d calibration images, %.1f s); predicted MSE %.4g (no diffusion %.4g)",
        choice.t0, choice.num_reverse_steps, choice.num_steps,
        "" if choice.runs == 1 else f", for the mean of {choice.runs} runs",
        "" if choice.helps else ", diffusion not predicted to help",
        choice.init_mse, choice.post_var, choice.source["init_mse"], choice.source["post_var"], choice.basis,
        choice.calib_images, choice.seconds, choice.predicted_mse, choice.predicted_mse_no_diffusion,
    )  # fmt: skip
    return sampler, choice.to_dict()


def resolve_auto_t0(cfg: DictConfig, comps: Any) -> dict[str, Any] | None:
    """``sampler.t0=auto`` on a composed config (scripts, e.g. experiments/solvers_warm_start.py): choose t0,
    write it into ``cfg.sampler.t0`` and ``comps.sampler``; returns the estimates (None without auto)."""
    if not is_auto_t0(cfg):
        return None
    from ccdf.pipelines.reconstruct import eval_device

    sampler, estimates = choose_t0(
        settings_from(cfg), comps, OmegaConf.to_container(cfg.sampler, resolve=True), seed=int(cfg.seed),
        sigma_y=float(cfg.sigma_y), batch_size=int(cfg.batch_size), device=eval_device(str(cfg.eval.accelerator)),
    )  # fmt: skip
    cfg.sampler.t0 = sampler["t0"]
    return estimates
