"""The Hydra edge: ``build(cfg)`` turns a composed config into plain objects, ``main(cfg)`` runs them.

This is the only module (with ``run.py``) that imports Hydra or OmegaConf.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from ccdf.data.transforms import to_unit
from ccdf.denoisers.base import CountingDenoiser
from ccdf.metrics import nmse, psnr, ssim
from ccdf.operators.base import Operator, measure
from ccdf.schedules.base import num_steps_from_t0
from ccdf.utils.io import save_npy, save_png, write_json
from ccdf.utils.rng import per_sample_generators
from ccdf.utils.vis import image_grid, measurement_preview

log = logging.getLogger("ccdf")

MODES = ("reconstruct", "train")


@dataclass
class Components:
    """Everything a reconstruction run needs, as plain objects."""

    dataset: Any
    schedule: Any
    denoiser: Any
    operator: Operator
    initializer: Any
    sampler: Any  # functools.partial of ccdf.sampling.sample_ccdf


def _instantiate(node: DictConfig, what: str, **kwargs: Any) -> Any:
    target = node.get("_target_", "?") if isinstance(node, DictConfig) else "?"
    obj = instantiate(node, _convert_="all", **kwargs)
    log.info("%s: %s", what, target)
    return obj


def build(cfg: DictConfig) -> Components:
    """Instantiate dataset, schedule, denoiser, operator, initializer and sampler (one call each)."""
    dataset = _instantiate(cfg.dataset.data, "dataset")
    schedule = _instantiate(cfg.model.schedule, "schedule")
    denoiser = _instantiate(cfg.model.denoiser, "denoiser", schedule=schedule)
    operator = _instantiate(cfg.operator, "operator")
    initializer = _instantiate(cfg.initializer, "initializer")
    sampler = _instantiate(cfg.sampler, "sampler")
    return Components(dataset, schedule, denoiser, operator, initializer, sampler)


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Lightning loggers from the ``logger`` group (a dict of targets; empty when ``logger=null``)."""
    node = cfg.get("logger")
    if not node:
        return []
    return [_instantiate(conf, f"logger {name}") for name, conf in node.items() if conf and "_target_" in conf]


def log_results(loggers: list[Any], cfg: DictConfig, result: dict[str, Any], grid_path: Path) -> None:
    """Send the run's numbers to each logger, with N' as the step (so sweeps plot metric vs N')."""
    if not loggers:
        return
    scalars = {
        f"test/{k}": float(v)
        for k, v in result.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("seed",)
    }
    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("logger", None)
    for lg in loggers:
        lg.log_hyperparams(params)
        lg.log_metrics(scalars, step=int(result["reverse_steps"]))
        if hasattr(lg, "log_image"):
            lg.log_image(key="test/grid", images=[str(grid_path)], step=int(result["reverse_steps"]))
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


def apply_model_sampler_defaults(cfg: DictConfig) -> None:
    """A model's ``sampler_defaults`` (e.g. IDDPM's learned variance) fill the sampler settings
    that the command line did not set explicitly."""
    defaults = cfg.model.get("sampler_defaults") or {}
    given = {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}
    for key, value in defaults.items():
        if f"sampler.{key}" not in given:
            cfg.sampler[key] = value


def validate(cfg: DictConfig) -> None:
    """Check the values that would otherwise fail late (after minutes of sampling)."""
    missing = missing_values(cfg)
    if cfg.mode == "train":  # training does not need sampling-only values (e.g. model.ckpt)
        missing = [k for k in missing if k not in ("model.ckpt",)]
    if missing:
        raise ValueError(f"missing required value(s): {', '.join(missing)}; set them on the command line, "
                         f"e.g. {missing[0]}=...")  # fmt: skip
    if cfg.mode not in MODES:
        raise ValueError(f"unknown mode {cfg.mode!r}; choose one of {MODES}")
    if cfg.mode == "train":
        return
    num_steps_from_t0(cfg.sampler.t0, int(cfg.sampler.num_steps))
    if int(cfg.batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if float(cfg.sigma_y) < 0:
        raise ValueError(f"sigma_y must be >= 0, got {cfg.sigma_y}")


def main(cfg: DictConfig) -> float | None:
    """Entry point called by ``run.py``; returns the mean PSNR (the metric sweepers optimise)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    job_name = HydraConfig.get().job.name
    written: list[Path] = []
    try:
        apply_model_sampler_defaults(cfg)
        validate(cfg)
        torch.manual_seed(int(cfg.seed))  # library code never uses the global generator; this is a guard
        if cfg.mode == "train":
            return train(cfg, run_dir, written)
        return reconstruct(cfg, run_dir, written)
    except BaseException:
        _remove_partial_run(run_dir, written, job_name)
        raise


def _remove_partial_run(run_dir: Path, written: list[Path], job_name: str) -> None:
    """Delete what this run wrote (and Hydra's own files), then the folder if it is empty."""
    for path in written:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    (run_dir / f"{job_name}.log").unlink(missing_ok=True)
    try:
        run_dir.rmdir()  # only succeeds when empty: never removes anything it did not write
    except OSError:
        pass


def _task_name() -> str:
    return str(HydraConfig.get().runtime.choices.get("task", "custom"))


def reconstruct(cfg: DictConfig, run_dir: Path, written: list[Path]) -> float:
    """Measure -> initialise -> CCDF -> score, over the configured data set."""
    from tqdm.auto import tqdm

    comps = build(cfg)
    loggers = build_loggers(cfg)
    written += [run_dir / "csv", run_dir / "wandb"]
    counter = CountingDenoiser(comps.denoiser)
    dataset = comps.dataset
    num = len(dataset)
    batch_size = int(cfg.batch_size)
    is_mri = getattr(dataset, "kind", "image") == "mri"
    t0 = float(cfg.sampler.t0)
    num_steps = int(cfg.sampler.num_steps)
    reverse = num_steps_from_t0(t0, num_steps)

    per_image: list[dict[str, Any]] = []
    grid_rows: list[list[Tensor]] = []
    recon_dir = run_dir / "recon"
    written.append(recon_dir)
    seconds = 0.0
    nfe_items = 0
    batches = range(0, num, batch_size)
    for start in tqdm(batches, desc="images", unit="batch", disable=len(batches) < 2):
        items = [dataset[i] for i in range(start, min(start + batch_size, num))]
        x0 = torch.stack([it["x0"] for it in items])
        index = [int(it["index"]) for it in items]
        gens = per_sample_generators(int(cfg.seed), index)
        y = measure(comps.operator, x0, float(cfg.sigma_y), gens)
        x_init = comps.initializer(y, comps.operator)
        if x_init.shape != x0.shape:
            raise ValueError(f"initializer returned shape {tuple(x_init.shape)}, images are {tuple(x0.shape)}")
        counter.reset()
        tic = time.perf_counter()
        x = comps.sampler(counter, comps.schedule, comps.operator, y, x_init, generator=gens, progress=True)
        seconds += time.perf_counter() - tic
        nfe_items += counter.items
        for b, it in enumerate(items):
            row = _score(x[b : b + 1], x_init[b : b + 1], x0[b : b + 1], y[b : b + 1], comps.operator, is_mri)
            row = {"index": index[b], "name": it["name"], **row}
            per_image.append(row)
            stem = f"{index[b]:05d}_{it['name']}"
            written.append(save_png(recon_dir / f"{stem}.png", to_unit(x[b])))
            if is_mri:
                written.append(save_npy(recon_dir / f"{stem}.npy", x[b, 0].cpu().numpy()))
            if len(grid_rows) < int(cfg.grid_images):
                preview = measurement_preview(y[b : b + 1], x0.shape)[0]
                grid_rows.append([preview, to_unit(x_init[b]), to_unit(x[b]), to_unit(x0[b])])

    titles = ["measurement", "initializer", "CCDF", "ground truth"]
    grid_path = save_png(run_dir / "grid.png", image_grid(grid_rows, titles))
    written.append(grid_path)
    metrics = _summarise(per_image, is_mri)
    result = {
        "task": _task_name(),
        "t0": t0,
        "num_steps": num_steps,
        "reverse_steps": reverse,
        "nfe": nfe_items / max(num, 1),
        "seconds": seconds,
        **metrics,
        "num_images": num,
        "seed": int(cfg.seed),
        "sigma_y": float(cfg.sigma_y),
        "model": str(cfg.model.name),
        "operator": repr(comps.operator).replace("\n", " "),
        "initializer": repr(comps.initializer),
        "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
        "per_image": per_image,
    }
    log_results(loggers, cfg, result, grid_path)
    written.append(write_json(run_dir / "metrics.json", result))
    log.info(
        "task=%s t0=%g N'=%d/%d NFE=%g | PSNR %.2f dB (init %.2f) | SSIM %.4f (init %.4f) | %d images, %.1f s -> %s",
        result["task"], t0, reverse, num_steps, result["nfe"], metrics["psnr"], metrics["init_psnr"],
        metrics["ssim"], metrics["init_ssim"], num, seconds, run_dir,
    )  # fmt: skip
    return float(metrics["psnr"])


def _score(x: Tensor, x_init: Tensor, x0: Tensor, y: Tensor, op: Operator, is_mri: bool) -> dict[str, float]:
    """Per-image metrics of the reconstruction and of the initializer, plus the DC residual."""
    if is_mri:
        ref = x0.abs()
        data_range = ref.flatten(1).amax(1)
        rec, ini = x.abs(), x_init.abs()
    else:
        ref, data_range, rec, ini = to_unit(x0), torch.ones(1), to_unit(x), to_unit(x_init)
    row = {
        "psnr": float(psnr(rec, ref, data_range)),
        "ssim": float(ssim(rec, ref, data_range)),
        "init_psnr": float(psnr(ini, ref, data_range)),
        "init_ssim": float(ssim(ini, ref, data_range)),
        # Relative measurement residual ||A x - y|| / ||y||: ~0 means consistent with the data.
        "dc_residual": float((op(x) - y).abs().norm() / y.abs().norm().clamp(min=1e-12)),
    }
    if is_mri:
        row["nmse"] = float(nmse(x.abs(), ref))
        row["init_nmse"] = float(nmse(x_init.abs(), ref))
    return row


def _summarise(per_image: list[dict[str, Any]], is_mri: bool) -> dict[str, float]:
    keys = ["psnr", "ssim", "init_psnr", "init_ssim", "dc_residual"] + (["nmse", "init_nmse"] if is_mri else [])
    out = {}
    for k in keys:
        vals = [float(r[k]) for r in per_image]
        out[k] = sum(vals) / len(vals) if vals else math.nan
    out["dc_residual"] = max(float(r["dc_residual"]) for r in per_image) if per_image else math.nan
    return out


def train(cfg: DictConfig, run_dir: Path, written: list[Path]) -> float:
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

    from ccdf.lightning.callbacks import SampleGrid

    shape = (int(net_config["in_channels"]), int(cfg.dataset.size), int(cfg.dataset.size))
    written.append(run_dir / "samples")

    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:07d}", auto_insert_metric_name=False,
                        every_n_train_steps=int(tc.ckpt_every), save_last=True, save_top_k=-1),
        export,
        SampleGrid(run_dir / "samples", shape, every_n_steps=int(tc.sample_every), seed=int(cfg.seed)),
    ]  # fmt: skip
    loggers = build_loggers(cfg)
    written += [run_dir / "csv", run_dir / "wandb"]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.fit(module, datamodule=data, ckpt_path=tc.resume)
    final = float(trainer.callback_metrics.get("train/loss", float("nan")))
    result = {"mode": "train", "model": str(cfg.model.name), "steps": int(trainer.global_step),
              "final_loss": final, "weights": str(ckpt_dir / "ema_last.safetensors")}  # fmt: skip
    written.append(write_json(run_dir / "train.json", result))
    log.info("trained %s for %d steps, last loss %.4f -> sample with: model=%s model.ckpt=%s",
             cfg.model.name, trainer.global_step, final, cfg.model.name, ckpt_dir / "ema_last.safetensors")  # fmt: skip
    return final
