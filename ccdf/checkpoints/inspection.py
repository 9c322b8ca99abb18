"""Inspection: what a checkpoint file holds, which preset and config fit it, and how ``run.py`` can use it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccdf.checkpoints.family import FAMILIES, OFFICIAL_FINGERPRINTS
from ccdf.checkpoints.layouts import Extracted, extract_state_dict
from ccdf.checkpoints.loading import config_from_metadata, infer_config, same_config
from ccdf.checkpoints.presets import PRESETS, fingerprint, match_presets
from ccdf.checkpoints.reading import read_checkpoint

__all__ = ["CheckpointInfo", "describe_checkpoint"]


@dataclass
class CheckpointInfo:
    """What :func:`describe_checkpoint` found (printed by ``python -m ccdf.checkpoints``).

    Attributes:
        run: ``run.py`` overrides that load the file, as data (the path is
            :data:`ccdf.checkpoints.family.CKPT`); one mapping per matching preset, or the family's
            overrides for a ccdf file of a non-preset config; empty when no task fits.
    """

    path: Path
    size_bytes: int
    container: str
    extracted: Extracted
    num_tensors: int
    num_params: int
    fingerprint: str
    official: str | None
    presets: list[str]
    config: dict[str, Any] | None
    run: list[dict[str, str]]


def describe_checkpoint(path: str | Path, *, family: str | None = None, use_ema: bool = True) -> CheckpointInfo:
    """Read a checkpoint and describe its layout, size, fingerprint and the config that loads it."""
    raw = read_checkpoint(path)
    ext = extract_state_dict(raw, family=family, use_ema=use_ema)
    sd = ext.state_dict
    presets = [m for m in match_presets(sd) if ext.family is None or PRESETS[m].family == ext.family]
    config = config_from_metadata(ext.metadata)
    if config is not None:  # a ccdf file's own config wins over a preset of the same keys and shapes
        presets = [m for m in presets if same_config(PRESETS[m].config, config)]
    if config is None and presets:
        config = dict(PRESETS[presets[0]].config)
    if config is None:
        config = infer_config(ext.family, sd)
    run = [dict(PRESETS[m].run) for m in presets]
    if not presets and ext.family in FAMILIES and config is not None and "ccdf.config" in ext.metadata:
        custom = FAMILIES[ext.family].run_overrides(config)
        if custom is not None:
            run.append(custom)
    return CheckpointInfo(
        path=raw.path,
        size_bytes=raw.path.stat().st_size,
        container=raw.container,
        extracted=ext,
        num_tensors=len(sd),
        num_params=sum(int(v.numel()) for v in sd.values()),
        fingerprint=fingerprint(sd),
        official=OFFICIAL_FINGERPRINTS.get(ext.file_fingerprint),
        presets=presets,
        config=config,
        run=run,
    )
