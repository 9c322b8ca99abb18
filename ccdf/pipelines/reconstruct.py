"""``mode=reconstruct`` (the default): measure -> initialise -> CCDF -> score over the configured data set,
one metrics.json per t0 (a Lightning predict loop over a resumable per-image result cache)."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ccdf.denoisers.speed import SPEED_DEFAULTS, speed_options, speed_up
from ccdf.operators.base import Operator
from ccdf.pipelines import auto_t0
from ccdf.pipelines.config import (
    Spec,
    build_loggers,
    check_common,
    config_float,
    config_int,
    instantiate_node,
    logger_specs,
    resolved,
    task_name,
)
from ccdf.schedules.base import num_steps_from_t0
from ccdf.utils.io import save_png, write_json

log = logging.getLogger("ccdf")

#: The config groups that define a reconstruction (resolved into :attr:`ReconstructSettings.sections`).
SECTIONS = ("dataset", "model", "operator", "initializer", "sampler")


@dataclass
class Components:
    """Everything a reconstruction run needs, as plain objects."""

    dataset: Any
    schedule: Any
    denoiser: Any
    operator: Operator
    initializer: Any
    sampler: Any  # functools.partial of ccdf.sampling.sample_ccdf


@dataclass(frozen=True)
class ReconstructSettings:
    """A reconstruction run as plain values; ``sections`` holds the resolved component groups."""

    task: str
    sections: dict[str, Any]  # SECTIONS -> resolved node (what is built, and the result cache's key)
    t0s: tuple[float, ...]  # empty with sampler.t0=auto (chosen at run time)
    num_steps: int
    seed: int
    sigma_y: float
    batch_size: int
    grid_images: int
    devices: Any  # int, or a list of device ids
    accelerator: str
    strategy: str
    num_workers: int
    cache_dir: str
    resume: bool
    batch_invariant: bool
    fid: bool
    fid_ref: str | None
    lpips: bool
    lpips_net: str
    metric_weights: str
    skip_unreadable: bool
    auto: auto_t0.AutoT0Settings | None = None
    loggers: dict[str, Spec] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)  # the resolved config the loggers record


def component_specs(cfg: DictConfig) -> dict[str, Any]:
    """The resolved ``dataset``, ``model``, ``operator``, ``initializer`` and ``sampler`` nodes."""
    return {name: resolved(cfg[name]) for name in SECTIONS}


def build(sections: dict[str, Any]) -> Components:
    """Instantiate dataset, schedule, denoiser, operator, initializer and sampler (one call each)."""
    dataset = instantiate_node(sections["dataset"]["data"], "dataset", "dataset.data")
    model = sections["model"]
    schedule = instantiate_node(model["schedule"], "schedule", "model.schedule")
    denoiser = instantiate_node(model["denoiser"], "denoiser", "model.denoiser", schedule=schedule)
    denoiser = speed_up(denoiser, **speed_options(model))  # model.precision / channels_last / compile ("Speed")
    operator = instantiate_node(sections["operator"], "operator", "operator")
    initializer = instantiate_node(sections["initializer"], "initializer", "initializer")
    sampler = instantiate_node(sections["sampler"], "sampler", "sampler")
    return Components(dataset, schedule, denoiser, operator, initializer, sampler)


def settings_from(cfg: DictConfig) -> ReconstructSettings:
    """Check the values that would otherwise fail late (after minutes of sampling), then read them."""
    check_common(cfg)
    auto = auto_t0.settings_from(cfg) if auto_t0.is_auto_t0(cfg) else None
    t0s = () if auto else tuple(sweep_t0s(cfg))
    check_respacing(cfg)
    batch_size, grid_images = config_int(cfg, "batch_size", 1), config_int(cfg, "grid_images", 0)
    num_workers = config_int(cfg, "eval.num_workers", 0)
    if cfg.sampler.get("corrector"):
        config_int(cfg, "sampler.n_corrector", 0)
    if "average" in cfg.sampler:
        config_int(cfg, "sampler.average", 1)
    sigma_y = config_float(cfg, "sigma_y", low=0)
    check_output_folders(cfg)
    ev = cfg.eval
    loggers = logger_specs(cfg)
    hparams = {k: resolved(v) for k, v in cfg.items() if k not in ("hydra", "logger")} if loggers else {}
    speed_options(cfg.model)  # model.precision / compile_mode, named in the error
    return ReconstructSettings(
        task=task_name(), sections=component_specs(cfg), t0s=t0s, num_steps=int(cfg.sampler.num_steps),
        seed=int(cfg.seed), sigma_y=sigma_y, batch_size=batch_size, grid_images=grid_images,
        devices=resolved(ev.devices), accelerator=str(ev.accelerator), strategy=str(ev.strategy),
        num_workers=num_workers, cache_dir=str(ev.cache_dir), resume=bool(ev.resume),
        batch_invariant=bool(ev.get("batch_invariant", True)), fid=bool(ev.fid),
        fid_ref=str(ev.fid_ref) if ev.get("fid_ref") else None, lpips=bool(ev.lpips), lpips_net=str(ev.lpips_net),
        metric_weights=str(cfg.paths.metric_weights), skip_unreadable=bool(cfg.dataset.get("skip_unreadable", False)),
        auto=auto, loggers=loggers, hparams=hparams,
    )  # fmt: skip


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


def eval_device(accelerator: str) -> torch.device:
    """Where the app's own evaluation work (auto-t0 calibration, Inception features) runs:
    CUDA when available and ``eval.accelerator`` is not ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() and accelerator != "cpu" else "cpu")


def eval_setting(settings: ReconstructSettings, lpips: bool = False) -> dict[str, Any]:
    """Everything that determines an image's result except t0 (the key of the result store).

    Batch size, devices, loggers and output paths are left out: results do not depend on them
    (with ``eval.batch_invariant=false``, only up to float32 rounding: the flag is part of the key,
    so exact results never mix with batched ones). ``dataset.skip_unreadable`` is left out too: each
    item's result is keyed by its index and content (:mod:`ccdf.data.check`), not by the folder.
    A checkpoint file enters with its size and modification time.
    """
    import ccdf

    s = settings
    sampler = {k: v for k, v in s.sections["sampler"].items() if k != "t0"}
    dataset = {k: v for k, v in s.sections["dataset"].items() if k != "skip_unreadable"}
    setting = {
        "version": ccdf.__version__,
        "code": _code_hash(),
        "task": s.task,
        "dataset": dataset,
        # default speed switches leave the key as before
        "model": {k: v for k, v in s.sections["model"].items() if SPEED_DEFAULTS.get(k, object()) != v},
        "operator": s.sections["operator"],
        "initializer": s.sections["initializer"],
        "sampler": sampler,
        "seed": s.seed,
        "sigma_y": s.sigma_y,
        "lpips": s.lpips_net if lpips else None,  # per-image LPIPS only with its weights
        "batch_invariant": s.batch_invariant,
    }
    for node in ("model", "initializer"):
        ckpt = s.sections[node].get("ckpt") if isinstance(s.sections[node], dict) else None
        if ckpt and Path(str(ckpt)).is_file():
            st = Path(str(ckpt)).stat()
            setting[f"{node}_file"] = {"size": st.st_size, "mtime": st.st_mtime}
    return setting


def _code_hash() -> str:
    """A hash of the installed ccdf sources: cached results never outlive a code change."""
    from ccdf.evaluation import fingerprint

    root = Path(__file__).resolve().parents[1]  # the ccdf package
    return fingerprint({str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.py"))})


def run(settings: ReconstructSettings, run_dir: Path, written: list[Path], guard: Any = None) -> float:
    """Measure -> initialise -> CCDF -> score over the configured data set; one metrics.json per t0.
    Returns the first t0's mean PSNR (the metric sweepers optimise).

    Work runs in a Lightning predict loop (``eval.devices`` processes) that stores each image's
    result in a resumable cache (:class:`ccdf.evaluation.ResultStore`); this function then
    gathers the results by index, computes the set-level metrics (FID/KID when the Inception
    weights are present) and writes the run folder.
    """
    from ccdf.data.check import check_items, listing
    from ccdf.evaluation import ResultStore
    from ccdf.lightning.reconstruction import ReconstructionModule, run_predict

    s = settings
    comps = build(s.sections)
    # Pre-flight: read every item once (bad files, NaN/inf, all-zero slices) before any sampling.
    tic = time.perf_counter()
    checked = check_items(comps.dataset, skip_unreadable=s.skip_unreadable)
    log.info("data check: %d of %d items read and usable (%.1f s)", len(checked.indices), len(comps.dataset),
             time.perf_counter() - tic)  # fmt: skip
    if checked.notes:
        log.warning("%d image(s) upscaled more than 2x to dataset.size:%s", len(checked.notes), listing(checked.notes))
    if checked.skipped:
        log.warning("dataset.skip_unreadable: %d of %d item(s) left out:%s", len(checked.skipped),
                    len(comps.dataset), listing(checked.skipped))  # fmt: skip
    comps.operator.check_names([checked.names[i] for i in checked.indices])  # per-image operator files
    sampler, auto, t0s = s.sections["sampler"], None, list(s.t0s)
    if s.auto is not None:
        sampler, auto = auto_t0.choose_t0(s.auto, comps, sampler, seed=s.seed, sigma_y=s.sigma_y,
                                          batch_size=s.batch_size, device=eval_device(s.accelerator))  # fmt: skip
        t0s = [float(sampler["t0"])]
    dataset = comps.dataset
    indices = checked.indices  # data-set positions (they seed each item's generator); skipped ones left out
    num = len(indices)
    is_mri = getattr(dataset, "kind", "image") == "mri"
    lpips = _load_lpips(s) if not is_mri else None
    store = ResultStore(s.cache_dir, s.task, eval_setting(s, lpips is not None))
    if not s.resume:
        for t in t0s:
            for i in indices:
                store.item_path(t, i).unlink(missing_ok=True)
    work = store.pending(t0s, indices, checked.keys)  # a result counts only for the same image content
    done = len(t0s) * num - len(work)
    if done:
        log.info("resuming: %d of %d (image, t0) results already in %s", done, len(t0s) * num, store.folder)
    module = ReconstructionModule(
        comps.denoiser, comps.schedule, comps.operator, comps.initializer, comps.sampler, store,
        seed=s.seed, sigma_y=s.sigma_y, num_steps=s.num_steps, is_mri=is_mri, lpips=lpips,
        batch_invariant=s.batch_invariant,
    )  # fmt: skip
    tic = time.perf_counter()
    is_zero = run_predict(module, dataset, work, batch_size=s.batch_size, devices=s.devices,
                          accelerator=s.accelerator, strategy=s.strategy, num_workers=s.num_workers)  # fmt: skip
    wall = time.perf_counter() - tic
    if not is_zero:  # other ranks of a `strategy=ddp` launch: rank 0 gathers, scores and writes
        return math.nan
    for t in t0s:  # every result is of the content checked above (fails if a file changed during the run)
        store.read(t, indices, checked.keys)

    loggers = build_loggers(s.loggers)
    written += [run_dir / "csv", run_dir / "wandb"]
    results = []
    inception = load_inception(s, is_mri)
    for t0 in t0s:
        out_dir = run_dir if len(t0s) == 1 else run_dir / f"t0={t0:g}"
        written.append(out_dir if out_dir != run_dir else run_dir / "recon")
        result = _finish_t0(s, inception, store, t0, indices, out_dir, written, comps, sampler, wall / len(t0s),
                            auto=auto)  # fmt: skip
        results.append((result, out_dir / "grid.png"))
    log_results(loggers, {**s.hparams, "sampler": sampler} if s.hparams else {}, results)
    if len(t0s) > 1:
        from ccdf.aggregate import main as aggregate

        aggregate([str(run_dir)])
        written += [run_dir / "summary.csv", run_dir / "summary.md"] + list(run_dir.glob("*_vs_*.png"))
    return float(results[0][0]["psnr"])


def _finish_t0(s: ReconstructSettings, inception: Any, store: Any, t0: float, indices: list[int], out_dir: Path,
               written: list[Path], comps: Components, sampler: Spec, wall: float,
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
        for i in indices[: s.grid_images]
    ]
    grid_path = save_png(
        out_dir / "grid.png", image_grid(grid_rows, ["measurement", "initializer", "CCDF", "ground truth"])
    )
    written.append(grid_path)
    metrics = summarise(rows)
    metrics.update(_distribution_metrics(s, store, t0, inception))
    reverse = num_steps_from_t0(t0, s.num_steps)
    result = {
        "task": s.task,
        "t0": t0,
        "num_steps": s.num_steps,
        "reverse_steps": reverse,
        **metrics,
        "wall_seconds": wall,
        "num_images": len(rows),
        "seed": s.seed,
        "sigma_y": s.sigma_y,
        "model": str(s.sections["model"]["name"]),
        "precision": speed_options(s.sections["model"])["precision"],
        "compiled": speed_options(s.sections["model"])["compile"],
        "operator": repr(comps.operator).replace("\n", " "),
        "initializer": repr(comps.initializer),
        "sampler": {**sampler, "t0": t0},
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


def _load_lpips(s: ReconstructSettings) -> Any:
    """The LPIPS net from local weights, or None (with a warning naming the missing file)."""
    if not s.lpips:
        return None
    from ccdf.metrics import MissingWeightsError, load_lpips

    try:
        return load_lpips(s.metric_weights, net=s.lpips_net)
    except MissingWeightsError as err:
        log.warning("LPIPS skipped: %s", err)
        return None


def load_inception(s: ReconstructSettings, is_mri: bool) -> Any:
    """clean-fid's Inception network from local weights, or None (with a warning naming the missing file)."""
    if not s.fid or is_mri:
        return None
    from ccdf.metrics import MissingWeightsError
    from ccdf.metrics import load_inception as load

    try:
        return load(s.metric_weights, device=eval_device(s.accelerator))
    except MissingWeightsError as err:
        log.warning("FID/KID skipped: %s", err)
        return None


def _distribution_metrics(s: ReconstructSettings, store: Any, t0: float, inception: Any) -> dict[str, float]:
    """FID and KID (clean-fid) of the reconstructions and of the initializer against the ground truth."""
    if inception is None:
        return {}
    from ccdf.metrics import compute_fid_kid

    ref = s.fid_ref or str(store.folder_of("gt"))
    kw = {"extractor": inception, "cache_dir": store.folder / "fid_stats"}
    out = compute_fid_kid(store.folder_of(t0), ref, **kw)
    init = compute_fid_kid(store.folder_of("init"), ref, **kw)
    return {**out, **{f"init_{k}": v for k, v in init.items()}}


def log_results(loggers: list[Any], params: dict[str, Any], results: list[tuple[dict[str, Any], Path]]) -> None:
    """Send each t0's numbers to each logger with N' as the step, so one run (a batched t0 sweep)
    or a group of runs (a Hydra multirun) plots metric against N'; plus the sample grids."""
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
