"""The Hydra edge: ``build(cfg)`` turns a composed config into plain objects, ``main(cfg)`` runs them.

This is the only module (with ``run.py``) that imports Hydra or OmegaConf.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from ccdf.denoisers.speed import check_speed_options, speed_up
from ccdf.operators.base import Operator
from ccdf.schedules.base import num_steps_from_t0
from ccdf.utils.io import save_png, write_json
from ccdf.utils.signals import Interrupted, SignalGuard, signal_name

log = logging.getLogger("ccdf")

MODES = ("reconstruct", "train", "theory")


@dataclass
class Components:
    """Everything a reconstruction run needs, as plain objects."""

    dataset: Any
    schedule: Any
    denoiser: Any
    operator: Operator
    initializer: Any
    sampler: Any  # functools.partial of ccdf.sampling.sample_ccdf


def _instantiate(node: DictConfig, what: str, key: str | None = None, **kwargs: Any) -> Any:
    """``instantiate(node)``. A ``ValueError``/``TypeError`` of the target whose message starts with one of
    the node's keys is re-raised naming the config key: ``center_fraction must be in [0, 1)`` from
    ``cfg.operator`` becomes ``operator.center_fraction must be in [0, 1)``."""
    target = node.get("_target_", "?") if isinstance(node, DictConfig) else "?"
    try:
        obj = instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        first = str(cause).split(" ", 1)[0].rstrip(":") if cause is not None else ""
        if key and isinstance(cause, ValueError | TypeError) and isinstance(node, DictConfig) and first in node:
            raise ValueError(f"{key}.{cause}") from cause
        raise
    log.info("%s: %s", what, target)
    return obj


_SPEED_DEFAULTS = {"precision": "fp32", "channels_last": False, "compile": False, "compile_mode": "default"}


def speed_options(cfg: DictConfig) -> dict[str, Any]:
    """The denoiser's speed switches from ``cfg.model`` (:mod:`ccdf.denoisers.speed`; absent keys: defaults)."""
    opts = {k: cfg.model.get(k, v) for k, v in _SPEED_DEFAULTS.items()}
    opts = {k: str(v) if isinstance(_SPEED_DEFAULTS[k], str) else bool(v) for k, v in opts.items()}
    check_speed_options(opts["precision"], opts["compile_mode"])
    return opts


def build(cfg: DictConfig) -> Components:
    """Instantiate dataset, schedule, denoiser, operator, initializer and sampler (one call each)."""
    dataset = _instantiate(cfg.dataset.data, "dataset", "dataset.data")
    schedule = _instantiate(cfg.model.schedule, "schedule", "model.schedule")
    denoiser = _instantiate(cfg.model.denoiser, "denoiser", "model.denoiser", schedule=schedule)
    denoiser = speed_up(denoiser, **speed_options(cfg))  # model.precision / channels_last / compile (README "Speed")
    operator = _instantiate(cfg.operator, "operator", "operator")
    initializer = _instantiate(cfg.initializer, "initializer", "initializer")
    sampler = _instantiate(cfg.sampler, "sampler", "sampler")
    return Components(dataset, schedule, denoiser, operator, initializer, sampler)


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Lightning loggers from the ``logger`` group (a dict of targets; empty when ``logger=null``)."""
    node = cfg.get("logger")
    if not node:
        return []
    return [_instantiate(conf, f"logger {name}") for name, conf in node.items() if conf and "_target_" in conf]


def log_results(loggers: list[Any], cfg: DictConfig, results: list[tuple[dict[str, Any], Path]]) -> None:
    """Send each t0's numbers to each logger with N' as the step, so one run (a batched t0 sweep)
    or a group of runs (a Hydra multirun) plots metric against N'; plus the sample grids."""
    if not loggers:
        return
    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("logger", None)
    for lg in loggers:
        lg.log_hyperparams(params)
        for result, grid_path in sorted(results, key=lambda r: r[0]["reverse_steps"]):
            step = int(result["reverse_steps"])
            scalars = {
                f"test/{k}": float(v)
                for k, v in result.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("seed",)
            }
            lg.log_metrics(scalars, step=step)
            if hasattr(lg, "log_image"):
                lg.log_image(key="test/grid", images=[str(grid_path)], step=step)
        lg.finalize("success")
        lg.save()


def missing_values(node: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys of required values (``???``) that are still unset, Hydra's own node excluded."""
    out: list[str] = []
    for key in node.keys():
        name = f"{prefix}{key}"
        if name == "hydra":
            continue
        if OmegaConf.is_missing(node, key):
            out.append(name)
        elif not OmegaConf.is_interpolation(node, key) and isinstance(node[key], DictConfig):
            out += missing_values(node[key], f"{name}.")
    return out


def non_finite_values(node: DictConfig | ListConfig, prefix: str = "") -> list[tuple[str, float]]:
    """Dotted keys whose (resolved) value is a NaN or infinite float, Hydra's own node excluded.

    Values that are missing or do not resolve are left to the other checks.
    """
    out: list[tuple[str, float]] = []
    keys = range(len(node)) if isinstance(node, ListConfig) else node.keys()
    for key in keys:
        name = f"{prefix}{key}"
        if name == "hydra":
            continue
        try:
            value = node[key]
        except Exception:  # noqa: BLE001 - missing (???) or unresolvable here: reported elsewhere
            continue
        if isinstance(value, DictConfig | ListConfig):
            out += non_finite_values(value, f"{name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            out.append((name, value))
    return out


def config_int(cfg: DictConfig, key: str, minimum: int | None = None) -> int:
    """The integer at ``key`` (an integral float such as 2.0 is accepted), else an error naming the key."""
    value = OmegaConf.select(cfg, key)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value}")
    return value


def config_float(cfg: DictConfig, key: str, *, low: float | None = None, high: float | None = None,
                 high_open: bool = False) -> float:  # fmt: skip
    """The finite number at ``key`` in ``[low, high]`` (``[low, high)`` with ``high_open``), else an error
    naming the key."""
    value = OmegaConf.select(cfg, key)
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    if (low is not None and number < low) or (high is not None and (number >= high if high_open else number > high)):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{key} must be in [{lo}, {hi}{')' if high_open or high is None else ']'}, got {value!r}")
    return number


def validate(cfg: DictConfig) -> None:
    """Check the values that would otherwise fail late (after minutes of sampling)."""
    missing = missing_values(cfg)
    if cfg.mode == "train":  # training does not need sampling-only values (e.g. model.ckpt)
        missing = [k for k in missing if k not in ("model.ckpt",)]
    if cfg.mode == "theory":  # the theory report needs no data, model or checkpoint
        missing = []
    if missing:
        raise ValueError(f"missing required value(s): {', '.join(missing)}; set them on the command line, "
                         f"e.g. {missing[0]}=...")  # fmt: skip
    if cfg.mode not in MODES:
        raise ValueError(f"unknown mode {cfg.mode!r}; choose one of {MODES}")
    config_int(cfg, "seed")
    bad = non_finite_values(cfg)
    if bad:
        listing = ", ".join(f"{key}={value}" for key, value in bad)
        raise ValueError(f"non-finite config value(s): {listing}; every number must be finite")
    if cfg.mode == "theory":
        return  # the theory report checks its own values (ccdf.theory.report.write_report)
    if cfg.mode == "train":
        check_training(cfg)
        return
    if is_auto_t0(cfg):
        check_auto_t0(cfg)
    else:
        sweep_t0s(cfg)
    check_respacing(cfg)
    config_int(cfg, "batch_size", 1)
    config_int(cfg, "grid_images", 0)
    config_int(cfg, "eval.num_workers", 0)
    if cfg.sampler.get("corrector"):
        config_int(cfg, "sampler.n_corrector", 0)
    config_float(cfg, "sigma_y", low=0)
    check_output_folders(cfg)


def check_training(cfg: DictConfig) -> None:
    """``mode=train``'s numbers, checked before the net is built."""
    tc = "training"
    config_int(cfg, f"{tc}.max_steps", 1)
    config_int(cfg, f"{tc}.global_batch", 1)
    for key in ("ckpt_every", "sample_every", "warmup_steps", "num_workers"):
        config_int(cfg, f"{tc}.{key}", 0)
    if config_float(cfg, f"{tc}.lr", low=0) <= 0:
        raise ValueError(f"{tc}.lr must be > 0, got {cfg.training.lr}")
    config_float(cfg, f"{tc}.ema_decay", low=0, high=1, high_open=True)
    resume = cfg.training.get("resume")
    if resume is not None and not Path(str(resume)).is_file():
        raise ValueError(f"training.resume: checkpoint file not found: {resume}")


def check_output_folders(cfg: DictConfig) -> None:
    """The folders a reconstruction reads or writes after sampling, checked before it starts:
    ``eval.fid_ref`` (when FID is on) must hold images, ``eval.cache_dir`` must be writable."""
    if bool(cfg.eval.fid) and cfg.eval.get("fid_ref"):
        from ccdf.metrics.fid import IMAGE_EXTENSIONS, list_images

        ref = Path(str(cfg.eval.fid_ref))
        if not ref.is_dir():
            raise ValueError(f"eval.fid_ref: reference image folder not found: {ref}")
        if not list_images(ref):
            raise ValueError(f"eval.fid_ref: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {ref}")
    cache = Path(str(cfg.eval.cache_dir))
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ccdf-write-test-", dir=cache)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"eval.cache_dir: cannot write to {cache} ({err.strerror or err})") from None


def check_respacing(cfg: DictConfig) -> None:
    """``model.schedule.respacing`` (e.g. ``ddim50``, ``10,15,20``) fixes the step count: it must equal
    ``sampler.num_steps``. Checked before anything is built (building the schedule alone costs nothing)."""
    node = cfg.model.get("schedule")
    respacing = node.get("respacing") if isinstance(node, DictConfig) else None
    if respacing is None:
        return
    try:
        schedule = instantiate(node, _convert_="all")
    except Exception as err:  # Hydra wraps the constructor's ValueError
        cause = err.__cause__ or err
        raise ValueError(f"model.schedule.respacing={respacing!r}: {cause}") from None
    num_steps = int(cfg.sampler.num_steps)
    kept = len(schedule.kept)
    if kept != num_steps:
        raise ValueError(f"model.schedule.respacing={respacing!r} keeps {kept} timesteps, but "
                         f"sampler.num_steps={num_steps}: set sampler.num_steps={kept}")  # fmt: skip


def main(cfg: DictConfig) -> float | None:
    """Entry point called by ``run.py``; returns the mean PSNR (the metric sweepers optimise).

    A failing run removes what it wrote (never a file that was in the run folder before it started,
    see :func:`_remove_partial_run`). SIGINT (Ctrl-C) and SIGTERM stop the run with exit status 130 and
    143 (``128 + signum``, :mod:`ccdf.utils.signals`): training first writes ``checkpoints/last.ckpt``
    and keeps its folder (``training.resume=<that file>`` continues it); a reconstruction keeps its
    finished images in the result cache (the same command resumes) and is otherwise removed like a
    failed run.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    job_name = HydraConfig.get().job.name
    before = _earlier_files(run_dir, job_name)
    written: list[Path] = []
    with SignalGuard() as guard:
        try:
            validate(cfg)
            torch.manual_seed(int(cfg.seed))  # library code never uses the global generator; this is a guard
            if cfg.mode == "train":
                return train(cfg, run_dir, written, guard)
            if cfg.mode == "theory":
                return theory(cfg, run_dir, written)
            return reconstruct(cfg, run_dir, written)
        except BaseException as err:
            signum = err.signum if isinstance(err, Interrupted) else guard.received
            if signum is None:  # a failure
                ckpts = [p for p in (run_dir / "checkpoints").glob("*") if p not in before]
                if cfg.get("mode") == "train" and ckpts:
                    log.error("training failed; the checkpoints it wrote are kept in %s", run_dir / "checkpoints")
                else:
                    _remove_partial_run(run_dir, written, job_name, before)
                raise
            if cfg.get("mode") == "train":
                log.warning("training interrupted by %s: the run folder %s and its checkpoints are kept",
                            signal_name(signum), run_dir)  # fmt: skip
            else:
                _remove_partial_run(run_dir, written, job_name, before)
                log.warning("interrupted by %s: finished images stay in the result cache; run the same command "
                            "again to resume", signal_name(signum))  # fmt: skip
            raise SystemExit(128 + signum) from None


def _earlier_files(run_dir: Path, job_name: str) -> set[Path]:
    """Everything in the run folder before this run started, except Hydra's files of this run
    (``.hydra/`` and ``<job>.log``, which Hydra writes, or appends to, before ``main`` runs)."""
    if not run_dir.is_dir():
        return set()
    own = {run_dir / ".hydra", run_dir / f"{job_name}.log"}
    return {p for p in run_dir.rglob("*") if not any(p == o or o in p.parents for o in own)}


def _remove_partial_run(run_dir: Path, written: list[Path], job_name: str, before: set[Path] = frozenset()) -> None:
    """Delete what this failed run wrote: the paths in ``written`` (folders: only the files in them that
    were not in ``before``). When the folder held an earlier run (``before`` not empty) Hydra's
    ``.hydra/`` and log stay; otherwise they go too, and the folder if it is then empty."""
    for path in written:
        if path.is_dir() and not path.is_symlink():
            for sub in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):  # deepest first
                if sub in before:
                    continue
                if sub.is_dir() and not sub.is_symlink():
                    _rmdir_if_empty(sub)
                else:
                    sub.unlink(missing_ok=True)
            if path not in before:
                _rmdir_if_empty(path)
        elif path not in before:
            path.unlink(missing_ok=True)
    if before:
        return
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    (run_dir / f"{job_name}.log").unlink(missing_ok=True)
    _rmdir_if_empty(run_dir)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()  # only succeeds when empty: never removes anything it did not write
    except OSError:
        pass


def _task_name() -> str:
    return str(HydraConfig.get().runtime.choices.get("task", "custom"))


def eval_setting(cfg: DictConfig, lpips: bool = False) -> dict[str, Any]:
    """Everything that determines an image's result except t0 (the key of the result store).

    Batch size, devices, loggers and output paths are left out: results do not depend on them
    (with ``eval.batch_invariant=false``, only up to float32 rounding: the flag is part of the key,
    so exact results never mix with batched ones). ``dataset.skip_unreadable`` is left out too: each
    item's result is keyed by its index and content (:mod:`ccdf.data.check`), not by the folder.
    A checkpoint file enters with its size and modification time.
    """
    import ccdf

    sampler = OmegaConf.to_container(cfg.sampler, resolve=True)
    sampler.pop("t0", None)
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    dataset.pop("skip_unreadable", None)
    setting = {
        "version": ccdf.__version__,
        "code": _code_hash(),
        "task": _task_name(),
        "dataset": dataset,
        "model": {
            k: v
            for k, v in OmegaConf.to_container(cfg.model, resolve=True).items()
            if _SPEED_DEFAULTS.get(k, object()) != v
        },  # default speed switches leave the key as before
        "operator": OmegaConf.to_container(cfg.operator, resolve=True),
        "initializer": OmegaConf.to_container(cfg.initializer, resolve=True),
        "sampler": sampler,
        "seed": int(cfg.seed),
        "sigma_y": float(cfg.sigma_y),
        "lpips": str(cfg.eval.lpips_net) if lpips else None,  # per-image LPIPS only with its weights
        "batch_invariant": bool(cfg.eval.get("batch_invariant", True)),
    }
    for node in ("model", "initializer"):
        ckpt = cfg[node].get("ckpt") if isinstance(cfg[node], DictConfig) else None
        if ckpt and Path(str(ckpt)).is_file():
            st = Path(str(ckpt)).stat()
            setting[f"{node}_file"] = {"size": st.st_size, "mtime": st.st_mtime}
    return setting


def _code_hash() -> str:
    """A hash of the installed ccdf sources: cached results never outlive a code change."""
    from ccdf.evaluation import fingerprint

    root = Path(__file__).resolve().parent
    return fingerprint({str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.py"))})


def sweep_t0s(cfg: DictConfig) -> list[float]:
    """``eval.t0s`` (all in one batched pass) or the single ``sampler.t0``, checked."""
    t0s = cfg.eval.get("t0s")
    values = [_as_t0(t, "eval.t0s") for t in t0s] if t0s else [_as_t0(cfg.sampler.t0, "sampler.t0")]
    num_steps = config_int(cfg, "sampler.num_steps", 1)
    for t in values:
        num_steps_from_t0(t, num_steps)
    if len(set(values)) != len(values):
        raise ValueError(f"eval.t0s has repeated values: {values}")
    return values


def _as_t0(value: Any, key: str) -> float:
    try:
        t0 = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number in (0, 1] or 'auto', got {value!r}") from None
    if not 0.0 < t0 <= 1.0:  # NaN included
        raise ValueError(f"{key} must be in (0, 1], got {value!r}")
    return t0


def is_auto_t0(cfg: DictConfig) -> bool:
    """``sampler.t0=auto``: the start time is chosen from the estimated errors (:mod:`ccdf.theory.auto`)."""
    return isinstance(cfg.sampler.get("t0"), str) and cfg.sampler.t0.strip().lower() == "auto"


def check_auto_t0(cfg: DictConfig) -> None:
    """The ``auto_t0`` settings, checked before anything is built."""
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
    from ccdf.theory.auto import BASES, closed_form_sampler

    sampler_name = HydraConfig.get().runtime.choices.get("sampler") if HydraConfig.initialized() else None
    coilwise = not str(cfg.sampler.get("_target_", "")).endswith("sample_ccdf")  # e.g. score-MRI's SSOS / hybrid
    if (
        coilwise
        or cfg.sampler.get("solver") is not None
        or str(cfg.sampler.get("dc", "project")) not in ("project", "none")
    ):
        raise ValueError(
            f"sampler.t0=auto does not cover sampler={sampler_name or '?'}: its closed form (docs/theory.md) is "
            "derived for the classic solvers (sampler=ccdf, ddim, ve_pc: DDPM, DDIM and VE predictor-corrector "
            "steps with dc=project or none); give a number as sampler.t0"
        )
    closed_form_sampler(cfg.sampler.get("step"), cfg.sampler.get("eta", 0.0) or 0.0,
                        corrector=cfg.sampler.get("corrector"))  # fmt: skip
    if str(ac.basis) not in BASES:
        raise ValueError(f"auto_t0.basis must be one of {BASES}, got {ac.basis!r}")
    num_steps_from_t0(1.0, int(cfg.sampler.num_steps))


def resolve_auto_t0(cfg: DictConfig, comps: Components) -> dict[str, Any] | None:
    """``sampler.t0=auto``: estimate the initializer's error and the posterior variance on the
    calibration split (``auto_t0.calib_data``, never the evaluation images) unless given, choose the
    MSE-optimal t0 (THEORY.md §3), set ``sampler.t0`` to it and return the estimates (for metrics.json)."""
    if not is_auto_t0(cfg):
        return None
    from ccdf.theory.auto import auto_t0

    ac = cfg.auto_t0
    given = ac.get("init_mse") is not None and ac.get("post_var") is not None
    data = comps.dataset if given else _instantiate(ac.calib_data, "calibration data")
    sampler_kwargs = {
        k: v
        for k, v in OmegaConf.to_container(cfg.sampler, resolve=True).items()
        if k not in ("_target_", "_partial_", "t0", "num_steps")
    }
    device = eval_device(cfg)
    for module in (comps.denoiser, comps.operator, comps.initializer):
        if isinstance(module, torch.nn.Module):
            module.to(device)
    try:
        choice = auto_t0(
            comps.denoiser, comps.schedule, comps.operator, comps.initializer, data,
            num_steps=int(cfg.sampler.num_steps), calib_images=int(ac.calib_images),
            estimate_steps=int(ac.estimate_steps), init_mse=ac.get("init_mse"), post_var=ac.get("post_var"),
            seed=int(cfg.seed), sigma_y=float(cfg.sigma_y), batch_size=int(cfg.batch_size),
            sampler_kwargs=sampler_kwargs, basis=str(ac.basis), device=device,
        )  # fmt: skip
    finally:
        for module in (comps.denoiser, comps.operator, comps.initializer):
            if isinstance(module, torch.nn.Module):
                module.to("cpu")
    cfg.sampler.t0 = choice.t0
    comps.sampler = _instantiate(cfg.sampler, "sampler")
    log.info(
        "auto t0 = %g (N' = %d of %d%s): initializer error %.4g and posterior variance %.4g per element "
        "(%s, %s; %s basis, %d calibration images, %.1f s); predicted MSE %.4g (no diffusion %.4g)",
        choice.t0, choice.num_reverse_steps, choice.num_steps,
        "" if choice.helps else ", diffusion not predicted to help",
        choice.init_mse, choice.post_var, choice.source["init_mse"], choice.source["post_var"], choice.basis,
        choice.calib_images, choice.seconds, choice.predicted_mse, choice.predicted_mse_no_diffusion,
    )  # fmt: skip
    return choice.to_dict()


def eval_device(cfg: DictConfig) -> torch.device:
    """Where the app's own evaluation work (auto-t0 calibration, Inception features) runs:
    CUDA when available and ``eval.accelerator`` is not ``cpu``."""
    use_gpu = torch.cuda.is_available() and str(cfg.eval.accelerator) != "cpu"
    return torch.device("cuda" if use_gpu else "cpu")


def theory(cfg: DictConfig, run_dir: Path, written: list[Path]) -> None:
    """``mode=theory`` (``python run.py task=theory``): the exact linear-Gaussian report of docs/theory.md
    (figures, theory.json, report.md) in the run folder; ``theory.figures_to`` also copies the figures."""
    from ccdf.theory.report import write_report

    tc = cfg.theory
    result = write_report(
        run_dir, problems=list(tc.problems), eps0_per_unknown=[float(r) for r in tc.eps0_per_unknown],
        shapes=list(tc.shapes), samplers=list(tc.samplers), num_steps=int(tc.num_steps),
        frechet_eps0=[float(r) for r in tc.frechet_eps0], figures_to=tc.get("figures_to"), on_write=written.append,
    )  # fmt: skip
    ref = result["reference"]
    if "checks" in ref:
        status = f"{ref['num_pass']}/{ref['num_checks']} of THEORY.md's reference values reproduced"
    else:
        status = f"reference check skipped ({ref['skipped']})"
    log.info("theory report: %s, %.1f s -> %s", status, result["seconds"], run_dir / "report.md")


def reconstruct(cfg: DictConfig, run_dir: Path, written: list[Path]) -> float:
    """Measure -> initialise -> CCDF -> score over the configured data set; one metrics.json per t0.

    Work runs in a Lightning predict loop (``eval.devices`` processes) that stores each image's
    result in a resumable cache (:class:`ccdf.evaluation.ResultStore`); this function then
    gathers the results by index, computes the set-level metrics (FID/KID when the Inception
    weights are present) and writes the run folder.
    """
    from ccdf.data.check import check_items, listing
    from ccdf.evaluation import ResultStore
    from ccdf.lightning.reconstruction import ReconstructionModule, run_predict

    comps = build(cfg)
    # Pre-flight: read every item once (bad files, NaN/inf, all-zero slices) before any sampling.
    tic = time.perf_counter()
    checked = check_items(comps.dataset, skip_unreadable=bool(cfg.dataset.get("skip_unreadable", False)))
    log.info("data check: %d of %d items read and usable (%.1f s)", len(checked.indices), len(comps.dataset),
             time.perf_counter() - tic)  # fmt: skip
    if checked.notes:
        log.warning("%d image(s) upscaled more than 2x to dataset.size:%s", len(checked.notes), listing(checked.notes))
    if checked.skipped:
        log.warning("dataset.skip_unreadable: %d of %d item(s) left out:%s", len(checked.skipped),
                    len(comps.dataset), listing(checked.skipped))  # fmt: skip
    comps.operator.check_names([checked.names[i] for i in checked.indices])  # per-image operator files
    auto = resolve_auto_t0(cfg, comps)
    t0s = sweep_t0s(cfg)
    dataset = comps.dataset
    indices = checked.indices  # data-set positions (they seed each item's generator); skipped ones left out
    num = len(indices)
    is_mri = getattr(dataset, "kind", "image") == "mri"
    num_steps = int(cfg.sampler.num_steps)
    lpips = _load_lpips(cfg) if not is_mri else None
    store = ResultStore(cfg.eval.cache_dir, _task_name(), eval_setting(cfg, lpips is not None))
    if not bool(cfg.eval.resume):
        for t in t0s:
            for i in indices:
                store.item_path(t, i).unlink(missing_ok=True)
    work = store.pending(t0s, indices, checked.keys)  # a result counts only for the same image content
    done = len(t0s) * num - len(work)
    if done:
        log.info("resuming: %d of %d (image, t0) results already in %s", done, len(t0s) * num, store.folder)
    module = ReconstructionModule(
        comps.denoiser, comps.schedule, comps.operator, comps.initializer, comps.sampler, store,
        seed=int(cfg.seed), sigma_y=float(cfg.sigma_y), num_steps=num_steps,
        is_mri=is_mri, lpips=lpips, batch_invariant=bool(cfg.eval.get("batch_invariant", True)),
    )  # fmt: skip
    tic = time.perf_counter()
    is_zero = run_predict(
        module, dataset, work, batch_size=int(cfg.batch_size), devices=cfg.eval.devices,
        accelerator=str(cfg.eval.accelerator), strategy=str(cfg.eval.strategy),
        num_workers=int(cfg.eval.num_workers),
    )  # fmt: skip
    wall = time.perf_counter() - tic
    if not is_zero:  # other ranks of a `strategy=ddp` launch: rank 0 gathers, scores and writes
        return math.nan
    for t in t0s:  # every result is of the content checked above (fails if a file changed during the run)
        store.read(t, indices, checked.keys)

    loggers = build_loggers(cfg)
    written += [run_dir / "csv", run_dir / "wandb"]
    results = []
    inception = _load_inception(cfg, is_mri)
    for t0 in t0s:
        out_dir = run_dir if len(t0s) == 1 else run_dir / f"t0={t0:g}"
        written.append(out_dir if out_dir != run_dir else run_dir / "recon")
        result = _finish_t0(cfg, inception, store, t0, indices, out_dir, written, is_mri, comps, wall / len(t0s),
                            auto=auto)  # fmt: skip
        results.append((result, out_dir / "grid.png"))
    log_results(loggers, cfg, results)
    if len(t0s) > 1:
        from ccdf.aggregate import main as aggregate

        aggregate([str(run_dir)])
        written += [run_dir / "summary.csv", run_dir / "summary.md"] + list(run_dir.glob("*_vs_*.png"))
    return float(results[0][0]["psnr"])


def _finish_t0(cfg: DictConfig, inception: Any, store: Any, t0: float, indices: list[int], out_dir: Path,
               written: list[Path], is_mri: bool, comps: Components, wall: float,
               auto: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Gather one t0's per-image rows, copy its reconstructions, draw its grid, write metrics.json."""
    from ccdf.evaluation import summarise
    from ccdf.utils.io import atomic_write
    from ccdf.utils.vis import image_grid, load_png

    rows = store.read(t0, indices)
    recon_dir = out_dir / "recon"
    for row in rows:
        stem = f"{row['index']:05d}_{row['name']}"
        for suffix in (".png", ".npy"):
            src = store.item_path(t0, row["index"], suffix)
            if src.is_file():
                data = src.read_bytes()
                atomic_write(recon_dir / f"{stem}{suffix}", lambda tmp, data=data: tmp.write_bytes(data))
    grid_rows = [
        [load_png(store.folder_of(sub) / f"{i:05d}.png") for sub in ("meas", "init")]
        + [load_png(store.item_path(t0, i, ".png")), load_png(store.folder_of("gt") / f"{i:05d}.png")]
        for i in indices[: int(cfg.grid_images)]
    ]
    grid_path = save_png(
        out_dir / "grid.png", image_grid(grid_rows, ["measurement", "initializer", "CCDF", "ground truth"])
    )
    written.append(grid_path)
    metrics = summarise(rows)
    metrics.update(_distribution_metrics(cfg, store, t0, inception))
    reverse = num_steps_from_t0(t0, int(cfg.sampler.num_steps))
    result = {
        "task": _task_name(),
        "t0": t0,
        "num_steps": int(cfg.sampler.num_steps),
        "reverse_steps": reverse,
        **metrics,
        "wall_seconds": wall,
        "num_images": len(rows),
        "seed": int(cfg.seed),
        "sigma_y": float(cfg.sigma_y),
        "model": str(cfg.model.name),
        "precision": speed_options(cfg)["precision"],
        "compiled": speed_options(cfg)["compile"],
        "operator": repr(comps.operator).replace("\n", " "),
        "initializer": repr(comps.initializer),
        "sampler": {**OmegaConf.to_container(cfg.sampler, resolve=True), "t0": t0},
        "cache": str(store.folder),
        **({"auto_t0": auto} if auto else {}),
        "per_image": rows,
    }
    written.append(write_json(out_dir / "metrics.json", result))
    extra = "".join(f" | {k.upper()} {metrics[k]:.4g}" for k in ("lpips", "fid", "kid") if k in metrics)
    log.info(
        "task=%s t0=%g N'=%d/%d NFE=%g | PSNR %.2f dB (init %.2f) | SSIM %.4f (init %.4f)%s | %d images, %.1f s -> %s",
        result["task"], t0, reverse, result["num_steps"], metrics["nfe"], metrics["psnr"], metrics["init_psnr"],
        metrics["ssim"], metrics["init_ssim"], extra, len(rows), metrics["seconds"], out_dir,
    )  # fmt: skip
    return result


def _load_lpips(cfg: DictConfig) -> Any:
    """The LPIPS net from local weights, or None (with a warning naming the missing file)."""
    if not bool(cfg.eval.lpips):
        return None
    from ccdf.metrics import MissingWeightsError, load_lpips

    try:
        return load_lpips(cfg.paths.metric_weights, net=str(cfg.eval.lpips_net))
    except MissingWeightsError as err:
        log.warning("LPIPS skipped: %s", err)
        return None


def _load_inception(cfg: DictConfig, is_mri: bool) -> Any:
    """clean-fid's Inception network from local weights, or None (with a warning naming the missing file)."""
    if not bool(cfg.eval.fid) or is_mri:
        return None
    from ccdf.metrics import MissingWeightsError, load_inception

    try:
        return load_inception(cfg.paths.metric_weights, device=eval_device(cfg))
    except MissingWeightsError as err:
        log.warning("FID/KID skipped: %s", err)
        return None


def _distribution_metrics(cfg: DictConfig, store: Any, t0: float, inception: Any) -> dict[str, float]:
    """FID and KID (clean-fid) of the reconstructions and of the initializer against the ground truth."""
    if inception is None:
        return {}
    from ccdf.metrics import compute_fid_kid

    ref = str(cfg.eval.fid_ref) if cfg.eval.get("fid_ref") else str(store.folder_of("gt"))
    kw = {"extractor": inception, "cache_dir": store.folder / "fid_stats"}
    out = compute_fid_kid(store.folder_of(t0), ref, **kw)
    init = compute_fid_kid(store.folder_of("init"), ref, **kw)
    return {**out, **{f"init_{k}": v for k, v in init.items()}}


def train(cfg: DictConfig, run_dir: Path, written: list[Path], guard: SignalGuard | None = None) -> float:
    """``mode=train``: fit ``model.net`` with ``training.loss`` on ``dataset.train_data`` (Lightning)."""
    from functools import partial

    from ccdf.denoisers.loaders import build_net
    from ccdf.lightning.callbacks import ExportWeights
    from ccdf.lightning.data import StepDataModule
    from ccdf.lightning.diffusion_module import DiffusionModule

    if "net" not in cfg.model or "family" not in cfg.model:
        raise ValueError(f"model={cfg.model.name} has no trainable `net` (choose e.g. model=unet_small)")
    tc = cfg.training
    schedule = _instantiate(cfg.model.schedule, "schedule")
    net_config = OmegaConf.to_container(cfg.model.net, resolve=True)
    net = build_net(str(cfg.model.family), net_config)
    log.info(
        "net: %s %s (%s parameters)", cfg.model.family, net_config, f"{sum(p.numel() for p in net.parameters()):,}"
    )
    module = DiffusionModule(
        net, schedule, loss=str(tc.loss), optimizer=partial(torch.optim.Adam, lr=float(tc.lr)),
        warmup_steps=int(tc.warmup_steps), ema_decay=float(tc.ema_decay), seed=int(cfg.seed),
    )  # fmt: skip
    dataset = _instantiate(cfg.dataset.train_data, "training data")
    data = StepDataModule(dataset, global_batch=int(tc.global_batch), max_steps=int(tc.max_steps),
                          seed=int(cfg.seed), num_workers=int(tc.num_workers))  # fmt: skip
    ckpt_dir = run_dir / "checkpoints"
    written.append(ckpt_dir)
    export = ExportWeights(ckpt_dir, str(cfg.model.family), net_config, every_n_steps=int(tc.ckpt_every))
    from lightning.pytorch.callbacks import ModelCheckpoint

    from ccdf.lightning.callbacks import SampleGrid, StopOnSignal

    shape = (int(net_config["in_channels"]), int(cfg.dataset.size), int(cfg.dataset.size))
    written.append(run_dir / "samples")

    guard = guard if guard is not None else SignalGuard()
    stop = StopOnSignal(guard, ckpt_dir)
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:07d}", auto_insert_metric_name=False,
                        every_n_train_steps=int(tc.ckpt_every), save_last=True, save_top_k=-1),
        export,
        SampleGrid(run_dir / "samples", shape, every_n_steps=int(tc.sample_every), seed=int(cfg.seed)),
        stop,
    ]  # fmt: skip
    loggers = build_loggers(cfg)
    written += [run_dir / "csv", run_dir / "wandb"]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        with guard.deferred():  # a signal stops training at the end of its step, with a checkpoint
            trainer.fit(module, datamodule=data, ckpt_path=tc.resume)
        guard.check()  # a signal during the last step's end
    except BaseException:
        if guard.received is not None:
            if stop.saved is not None:
                log.warning("stopped at step %d with a checkpoint; continue with: training.resume=%s",
                            trainer.global_step, stop.saved)  # fmt: skip
            elif (ckpt_dir / "last.ckpt").is_file():
                log.warning("continue from the last periodic checkpoint: training.resume=%s", ckpt_dir / "last.ckpt")
        raise
    final = float(trainer.callback_metrics.get("train/loss", float("nan")))
    if math.isnan(final) and "train/loss" not in trainer.callback_metrics:
        final = None
    elif not math.isfinite(final):
        raise FloatingPointError(f"the training loss is {final} at step {trainer.global_step}: training diverged "
                                 f"(the checkpoints in {ckpt_dir} may hold non-finite weights)")  # fmt: skip
    result = {"mode": "train", "model": str(cfg.model.name), "steps": int(trainer.global_step),
              "final_loss": final, "weights": str(ckpt_dir / "ema_last.safetensors")}  # fmt: skip
    written.append(write_json(run_dir / "train.json", result))
    log.info("trained %s for %d steps, last loss %s -> sample with: model=%s model.ckpt=%s",
             cfg.model.name, trainer.global_step, "n/a" if final is None else f"{final:.4f}", cfg.model.name,
             ckpt_dir / "ema_last.safetensors")  # fmt: skip
    return math.nan if final is None else final
