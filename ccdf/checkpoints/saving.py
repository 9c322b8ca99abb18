"""Writing checkpoints: ccdf's own format (safetensors with the family and config) or an official layout."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ccdf.checkpoints.family import FAMILIES, get_family
from ccdf.checkpoints.presets import PRESETS

__all__ = ["CONTAINER_LAYOUTS", "save_checkpoint", "save_layouts"]


#: Container layouts :func:`save_checkpoint` writes; families add their namings (RRDBNet: ``esrgan``, ``oldarch``).
CONTAINER_LAYOUTS = ("ccdf", "safetensors", "plain", "module", "basicsr", "basicsr_ema", "score_sde")


def save_layouts() -> tuple[str, ...]:
    """Every layout :func:`save_checkpoint` writes: the container layouts, then the families' namings."""
    return CONTAINER_LAYOUTS + tuple(n for f in FAMILIES.values() for n in f.namings)


def save_checkpoint(
    path: str | Path,
    net: nn.Module,
    *,
    layout: str = "ccdf",
    family: str | None = None,
    config: Mapping[str, Any] | None = None,
    preset: str | None = None,
    ema: Mapping[str, Tensor] | None = None,
    step: int = 0,
) -> Path:
    """Write ``net``'s weights in one of the supported layouts (atomically).

    Args:
        path: output file (``.safetensors`` for ``ccdf``/``safetensors``).
        net: the network.
        layout: ``ccdf`` (safetensors + family/config metadata: our format), ``safetensors``
            (bare state dict), or an official layout: ``plain``, ``module`` (DataParallel
            prefix), ``basicsr`` (``{'params'}``), ``basicsr_ema`` (``{'params', 'params_ema'}``),
            a family's naming (:attr:`CheckpointFamily.namings`: ``esrgan`` / ``oldarch`` for RRDBNet), ``score_sde``
            (``{'model': module.-prefixed, 'ema': {'decay', 'num_updates', 'shadow_params'}, 'step'}``).
        family, config, preset: recorded in the ``ccdf`` metadata (``family`` and ``config`` required there;
            ``config`` defaults to the preset's).
        ema: EMA weights for ``basicsr_ema`` / ``score_sde`` (default: the net's own).
        step: training step recorded by ``score_sde``.

    Returns:
        ``path``.
    """
    from ccdf.utils.io import atomic_write

    if layout not in save_layouts():
        raise ValueError(f"unknown layout {layout!r}; choose one of {save_layouts()}")
    sd = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    ema_sd = {k: v.detach().cpu().contiguous() for k, v in (ema if ema is not None else sd).items()}

    if layout in ("ccdf", "safetensors"):
        from safetensors.torch import save_file

        metadata = {"format": "pt"}
        if layout == "ccdf":
            if preset is not None:
                family = family or PRESETS[preset].family
                config = config if config is not None else PRESETS[preset].config
            if family is None or config is None:
                raise ValueError("layout='ccdf' needs the family and config (or a preset) for its metadata")
            metadata.update(
                {
                    "ccdf.format": "1",
                    "ccdf.family": family,
                    "ccdf.config": json.dumps(dict(config), sort_keys=True),
                    "ccdf.preset": preset or "",
                }
            )
        return atomic_write(path, lambda tmp: save_file(sd, str(tmp), metadata=metadata))

    obj: Any
    if layout == "plain":
        obj = sd
    elif layout == "module":
        obj = {f"module.{k}": v for k, v in sd.items()}
    elif layout == "basicsr":
        obj = {"params": sd}
    elif layout == "basicsr_ema":
        obj = {"params": sd, "params_ema": ema_sd}
    elif layout == "score_sde":
        trainable = [n for n, q in net.named_parameters() if q.requires_grad]
        obj = {
            "model": {f"module.{k}": v for k, v in sd.items()},
            "ema": {"decay": 0.999, "num_updates": int(step), "shadow_params": [ema_sd[n] for n in trainable]},
            "step": int(step),
        }
    else:  # a family's naming
        owner = family or next(f.name for f in FAMILIES.values() if layout in f.namings)
        obj = get_family(owner).from_ours(sd, layout)
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
