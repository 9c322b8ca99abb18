"""What a network family's checkpoints need: one :class:`CheckpointFamily` object per family, registered by name.

A family object says how to build the net from its constructor arguments, how to recognise and rename the
other official namings of its state dicts, which tensors are derived or frozen, which constructor arguments
can be read back from keys and shapes, and which ``run.py`` overrides (as data) use such a network. The
generic code (reading, layouts, loading, saving, inspection) asks the family and never tests family names.

The families live in :mod:`ccdf.checkpoints.families` (one module each, registered on import).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = [
    "CKPT",
    "FAMILIES",
    "OFFICIAL_FINGERPRINTS",
    "CheckpointFamily",
    "build_net",
    "detect_family",
    "get_family",
    "register_family",
]

#: Placeholder for the checkpoint path in ``run.py`` overrides (``{"model.ckpt": CKPT}``); filled by the caller.
CKPT = "{ckpt}"


class CheckpointFamily:
    """A network class whose checkpoints ccdf loads. Subclass it and :func:`register_family` an instance.

    Class attributes:
        name: family id (``guided_unet``, ``ncsnpp``, ``rrdbnet``, ``fastmri_unet``, ...).
        net: the network class; built as ``net(**config)``.
        marker: a key (in our names) that only this family's state dicts have.
        derived: buffers fully determined by the config; they may be absent from a file and are
            then taken from a freshly built network.
        frozen: state-dict entries that are not trainable parameters (not in a score_sde EMA list).
        official: fingerprints of the official files' own key names -> what they are (docs/reference/CHECKPOINTS.md).
        namings: other official key namings this family renames to ours: tag -> description (also
            save layouts, see :meth:`from_ours`).
    """

    name: ClassVar[str]
    net: ClassVar[type[nn.Module]]
    marker: ClassVar[str]
    derived: ClassVar[tuple[str, ...]] = ()
    frozen: ClassVar[tuple[str, ...]] = ()
    official: ClassVar[Mapping[str, str]] = {}
    namings: ClassVar[Mapping[str, str]] = {}

    def build(self, config: Mapping[str, Any], device: torch.device | str | None = None) -> nn.Module:
        """The network for ``config`` (``device="meta"`` builds it without memory or init cost)."""
        if device is None:
            return self.net(**dict(config))
        with torch.device(device):
            return self.net(**dict(config))

    def expected_keys(self, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        """Key -> shape of the state dict of the network for ``config`` (built on the meta device)."""
        return {k: tuple(v.shape) for k, v in self.build(config, device="meta").state_dict().items()}

    def recognises(self, keys: set[str]) -> bool:
        """Whether ``keys`` (``module.`` stripped) are this family's in one of its *other* official namings."""
        return False

    def to_ours(self, state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], str | None]:
        """Rename another official naming onto ours; returns the state dict and the naming's tag (None: ours).

        Raises:
            ValueError: the keys look like a naming of this family but do not fit it exactly.
        """
        return state_dict, None

    def from_ours(self, state_dict: Mapping[str, Tensor], naming: str) -> dict[str, Tensor]:
        """Rename our keys into one of :attr:`namings` (for writing official layouts)."""
        raise ValueError(f"the {self.name} family has no {naming!r} naming")

    def infer_config(self, state_dict: Mapping[str, Tensor]) -> dict[str, Any] | None:
        """Constructor arguments readable from the keys and shapes alone (our names), or None."""
        return None

    def run_overrides(self, config: Mapping[str, Any]) -> dict[str, str] | None:
        """``run.py`` overrides that use a ccdf file of this config (path: :data:`CKPT`), or None when no task fits."""
        return None


#: Registered families by name.
FAMILIES: dict[str, CheckpointFamily] = {}
#: Fingerprints of the official files' own key names (``module.`` stripped) -> what they are, over all families.
OFFICIAL_FINGERPRINTS: dict[str, str] = {}


def register_family(family: CheckpointFamily) -> CheckpointFamily:
    """Add ``family`` to :data:`FAMILIES` (and its official fingerprints); returns it."""
    if family.name in FAMILIES:
        raise ValueError(f"checkpoint family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    OFFICIAL_FINGERPRINTS.update(family.official)
    return family


def get_family(name: str) -> CheckpointFamily:
    """The registered family ``name``; KeyError naming the known ones otherwise."""
    if name not in FAMILIES:
        raise KeyError(f"unknown network family {name!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def build_net(family: str, config: Mapping[str, Any], device: torch.device | str | None = None) -> nn.Module:
    """Instantiate a family's network (``device="meta"`` builds it without memory or init cost)."""
    return get_family(family).build(config, device)


def detect_family(keys: Iterable[str]) -> str | None:
    """The family whose characteristic keys appear in ``keys`` (official or our names), or None."""
    keys = set(keys)
    for fam in FAMILIES.values():
        if fam.marker in keys:
            return fam.name
    for fam in FAMILIES.values():
        if fam.recognises(keys):
            return fam.name
    return None
