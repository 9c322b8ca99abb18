"""Published architectures ("presets"): the one table of each preset's config, files and publication.

Each family module (:mod:`ccdf.checkpoints.families`) registers its presets here with :func:`register_presets`;
``conf/model/*.yaml`` and ``conf/initializer/*.yaml`` only name a preset (``preset: ffhq256``). Fingerprint
convention (docs/reference/CHECKPOINTS.md): ``sha256("\\n".join(sorted(f"{key} {d0,d1,...}")))[:16]``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ccdf.checkpoints.family import get_family

__all__ = [
    "PRESETS",
    "Preset",
    "command_hint",
    "fingerprint",
    "get_preset",
    "match_presets",
    "preset_fingerprint",
    "preset_shapes",
    "register_presets",
]


@dataclass(frozen=True)
class Preset:
    """A published architecture: its config, the official files and where they are published.

    Attributes:
        name: preset id, accepted by :func:`ccdf.checkpoints.load_net` and the loader factories.
        family: a registered family name.
        config: constructor arguments of the network.
        fingerprint: fingerprint of its state dict in our key names (checked against a meta-device
            build by the tests; equal to the docs/reference/CHECKPOINTS.md table for the BasicSR-named ones).
        files: official file names with these weights (empty when none are published).
        published: where the files are published (docs/reference/CHECKPOINTS.md; links not live-checked).
        run: ``run.py`` overrides that use the file, as data (``{"task": "sr4", ..., "model.ckpt": CKPT}``).
    """

    name: str
    family: str
    config: Mapping[str, Any]
    fingerprint: str
    files: tuple[str, ...]
    published: str
    run: Mapping[str, str]


#: Registered presets by name.
PRESETS: dict[str, Preset] = {}


def register_presets(*presets: Preset) -> None:
    """Add presets to :data:`PRESETS` (names must be new)."""
    for p in presets:
        if p.name in PRESETS:
            raise ValueError(f"checkpoint preset {p.name!r} is registered twice")
        PRESETS[p.name] = p


def get_preset(name: str) -> Preset:
    """The preset ``name``; KeyError naming the known ones otherwise."""
    if name not in PRESETS:
        raise KeyError(f"unknown checkpoint preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def command_hint(run: Mapping[str, str], ckpt: str) -> str:
    """The ``python run.py`` command of ``run`` with path ``ckpt``, for messages (not quoted for a shell)."""
    return " ".join(["python run.py", *(f"{k}={v.format(ckpt=ckpt)}" for k, v in run.items())])


def fingerprint(state_dict: Mapping[str, Tensor]) -> str:
    """docs/reference/CHECKPOINTS.md fingerprint: sha256 of the sorted ``"key d0,d1,..."`` rows, first 16 hex digits."""
    rows = sorted(f"{k} {','.join(str(d) for d in v.shape)}" for k, v in state_dict.items())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


@functools.cache
def preset_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a preset's state dict in our names (built on the meta device, cached)."""
    preset = get_preset(name)
    return get_family(preset.family).expected_keys(preset.config)


@functools.cache
def preset_fingerprint(name: str) -> str:
    """Fingerprint of a preset's state dict in our key names (built on the meta device, cached)."""
    return fingerprint({k: torch.empty(s, device="meta") for k, s in preset_shapes(name).items()})


def match_presets(state_dict: Mapping[str, Tensor]) -> list[str]:
    """Names of the presets whose fingerprint equals that of ``state_dict`` (our key names)."""
    fp = fingerprint(state_dict)
    return [name for name, p in PRESETS.items() if p.fingerprint == fp]
