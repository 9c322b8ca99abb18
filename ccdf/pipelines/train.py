"""``mode=train``: fit ``model.net`` with ``training.loss`` on ``dataset.train_data`` (Lightning), with the
``callbacks`` group's callbacks and the ``trainer`` group's Trainer; a signal stops it with a checkpoint."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ccdf.pipelines.config import Spec, check_common, config_float, config_int, logger_specs, resolved
from ccdf.utils.io import write_json
from ccdf.utils.signals import SignalGuard

log = logging.getLogger("ccdf")


@dataclass(frozen=True)
class TrainSettings:
    """A training run as plain values (from ``model``, ``training``, ``dataset``, ``trainer``, ``callbacks``)."""

    model_name: str
    family: str  # the net's family (ccdf.checkpoints.build_net)
    net_config: dict[str, Any]
    schedule: Spec
    train_data: Spec
    trainer: Spec
    loss: str
    lr: float
    warmup_steps: int
    ema_decay: float
    global_batch: int
    max_steps: int
    num_workers: int
    seed: int
    resume: str | None  # a Lightning .ckpt to continue from
    callbacks: dict[str, Spec] = field(default_factory=dict)
    loggers: dict[str, Spec] = field(default_factory=dict)

    @property
    def ckpt_dir(self) -> Path | None:
        """The Lightning checkpoints' folder (``callbacks.model_checkpoint.dirpath``); None: the run folder's
        ``checkpoints/``."""
        spec = self.callbacks.get("model_checkpoint") or {}
        return Path(spec["dirpath"]) if spec.get("dirpath") else None


def settings_from(cfg: DictConfig) -> TrainSettings:
    """Check ``mode=train``'s numbers and its model before the net is built (``model.ckpt`` may be unset)."""
    check_common(cfg, may_be_missing=("model.ckpt",))
    tc = "training"
    max_steps, global_batch = config_int(cfg, f"{tc}.max_steps", 1), config_int(cfg, f"{tc}.global_batch", 1)
    for key in ("ckpt_every", "sample_every", "warmup_steps", "num_workers"):
        config_int(cfg, f"{tc}.{key}", 0)
    lr = config_float(cfg, f"{tc}.lr", low=0)
    if lr <= 0:
        raise ValueError(f"{tc}.lr must be > 0, got {cfg.training.lr}")
    ema_decay = config_float(cfg, f"{tc}.ema_decay", low=0, high=1, high_open=True)
    resume = cfg.training.get("resume")
    if resume is not None and not Path(str(resume)).is_file():
        raise ValueError(f"training.resume: checkpoint file not found: {resume}")
    from ccdf.checkpoints import PRESETS

    if "net" in cfg.model and "family" in cfg.model:
        family, net_config = str(cfg.model.family), resolved(cfg.model.net)
    elif "loss" in cfg.model and cfg.model.get("preset") in PRESETS:  # the preset names the architecture
        family, net_config = PRESETS[cfg.model.preset].family, dict(PRESETS[cfg.model.preset].config)
    else:
        raise ValueError(f"model={cfg.model.name} has no trainable `net` (choose e.g. model=unet_small)")
    callbacks = resolved(cfg.get("callbacks")) or {}
    return TrainSettings(
        model_name=str(cfg.model.name), family=family, net_config=net_config,
        schedule=resolved(cfg.model.schedule), train_data=resolved(cfg.dataset.train_data),
        trainer=resolved(cfg.trainer), loss=str(cfg.training.loss), lr=lr,
        warmup_steps=int(cfg.training.warmup_steps), ema_decay=ema_decay, global_batch=global_batch,
        max_steps=max_steps, num_workers=int(cfg.training.num_workers), seed=int(cfg.seed),
        resume=None if resume is None else str(resume),
        callbacks={name: _with_net(spec, family, net_config) for name, spec in callbacks.items()
                   if spec and "_target_" in spec},  # fmt: skip
        loggers=logger_specs(cfg),
    )  # fmt: skip


def _with_net(spec: Spec, family: str, net_config: dict[str, Any]) -> Spec:
    """A callback spec whose net values the model config left null (a preset-named model, e.g. ``demo_prior``,
    has no ``model.family`` / ``model.net``) filled in from the net that is trained."""
    spec = dict(spec)
    if "family" in spec and spec["family"] is None:
        spec["family"] = family
    if "config" in spec and spec["config"] is None:
        spec["config"] = net_config
    shape = spec.get("shape")
    if isinstance(shape, list) and shape and shape[0] is None:
        spec["shape"] = [net_config.get("in_channels"), *shape[1:]]
    return spec


def run(settings: TrainSettings, run_dir: Path, written: list[Path], guard: SignalGuard | None = None) -> float:
    """Train; returns the last training loss (NaN when none was logged). ``written`` gets the folders the
    callbacks write into (a failed run removes them, :func:`ccdf.app.main`)."""
    from functools import partial

    from ccdf.checkpoints import build_net
    from ccdf.lightning.callbacks import StopOnSignal
    from ccdf.lightning.data import StepDataModule
    from ccdf.lightning.diffusion_module import DiffusionModule
    from ccdf.pipelines.config import build_loggers, instantiate_node

    s = settings
    schedule = instantiate_node(s.schedule, "schedule")
    net = build_net(s.family, s.net_config)
    log.info("net: %s %s (%s parameters)", s.family, s.net_config, f"{sum(p.numel() for p in net.parameters()):,}")
    module = DiffusionModule(
        net, schedule, loss=s.loss, optimizer=partial(torch.optim.Adam, lr=s.lr),
        warmup_steps=s.warmup_steps, ema_decay=s.ema_decay, seed=s.seed,
    )  # fmt: skip
    dataset = instantiate_node(s.train_data, "training data")
    data = StepDataModule(dataset, global_batch=s.global_batch, max_steps=s.max_steps, seed=s.seed,
                          num_workers=s.num_workers)  # fmt: skip
    ckpt_dir = s.ckpt_dir or run_dir / "checkpoints"
    written += [ckpt_dir] + [Path(spec["dirpath"]) for spec in s.callbacks.values() if spec.get("dirpath")]
    guard = guard if guard is not None else SignalGuard()
    stop = StopOnSignal(guard, ckpt_dir)
    callbacks = [instantiate_node(spec, f"callback {name}", f"callbacks.{name}") for name, spec in s.callbacks.items()]
    loggers = build_loggers(s.loggers)
    written += [run_dir / "csv", run_dir / "wandb"]
    trainer = instantiate_node(s.trainer, "trainer", "trainer", callbacks=[*callbacks, stop], logger=loggers or False)
    try:
        with guard.deferred():  # a signal stops training at the end of its step, with a checkpoint
            trainer.fit(module, datamodule=data, ckpt_path=s.resume)
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
    export = s.callbacks.get("export_weights") or {}
    weights = Path(export["dirpath"]) / "ema_last.safetensors" if export.get("dirpath") else None
    result = {"mode": "train", "model": s.model_name, "steps": int(trainer.global_step), "final_loss": final,
              "weights": None if weights is None else str(weights)}  # fmt: skip
    written.append(write_json(run_dir / "train.json", result))
    log.info("trained %s for %d steps, last loss %s -> sample with: model=%s model.ckpt=%s", s.model_name,
             trainer.global_step, "n/a" if final is None else f"{final:.4f}", s.model_name, weights)  # fmt: skip
    return math.nan if final is None else final
