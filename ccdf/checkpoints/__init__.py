r"""Official and ccdf checkpoints: presets, safe reading, layouts, strict loading, saving and inspection.

Modules:

* :mod:`~ccdf.checkpoints.family`: :class:`CheckpointFamily` (how one network family builds, renames,
  infers its config and is used by ``run.py``) and the registry :data:`FAMILIES`;
* :mod:`~ccdf.checkpoints.families`: one module per family (guided/IDDPM UNet, NCSN++, RRDBNet, fastMRI
  U-Net), each registering its family object and its published architectures;
* :mod:`~ccdf.checkpoints.presets`: :class:`Preset`, the registry :data:`PRESETS`, fingerprints;
* :mod:`~ccdf.checkpoints.reading`: ``torch.load(weights_only=True)`` / safetensors, clear read errors;
* :mod:`~ccdf.checkpoints.layouts`: containers and namings mapped onto our key names;
* :mod:`~ccdf.checkpoints.loading`: :func:`load_net` and the strict checks;
* :mod:`~ccdf.checkpoints.saving`: :func:`save_checkpoint`;
* :mod:`~ccdf.checkpoints.inspection`: :func:`describe_checkpoint`;
* :mod:`~ccdf.checkpoints.cli`: ``python -m ccdf.checkpoints PATH`` (prints the report and the command).

Adding a family touches three files (plus tests): its network in ``ccdf/nets/<name>.py``; a module
``ccdf/checkpoints/families/<name>.py`` with a :class:`CheckpointFamily` subclass and its presets (found
by listing the package, no registration elsewhere); and, for ``run.py``, a ``conf/model/<name>.yaml`` that
names the preset and the family for one of the denoiser factories (``load_guided_denoiser`` for nets of
``(x, chain index) -> eps``, ``load_ncsnpp_denoiser`` for ``(x, sigma) -> score``). A net of another kind of
output needs an adapter besides (a new :mod:`ccdf.denoisers` class or :mod:`ccdf.initializers` class).
"""

from __future__ import annotations

from ccdf.checkpoints import families  # noqa: F401 - registers the families and their presets
from ccdf.checkpoints.errors import (
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CheckpointReadError,
    NonFiniteCheckpointError,
    UnsafeCheckpointError,
)
from ccdf.checkpoints.families.guided_unet import GUIDED_FLAGS, guided_unet_config
from ccdf.checkpoints.families.ncsnpp import NCSNPP_PRESETS, ncsnpp_config
from ccdf.checkpoints.family import (
    CKPT,
    FAMILIES,
    OFFICIAL_FINGERPRINTS,
    CheckpointFamily,
    build_net,
    detect_family,
    get_family,
    register_family,
)
from ccdf.checkpoints.inspection import CheckpointInfo, describe_checkpoint
from ccdf.checkpoints.layouts import LAYOUTS, Extracted, extract_state_dict
from ccdf.checkpoints.loading import (
    check_finite,
    check_state_dict,
    infer_config,
    load_checkpoint_into,
    load_net,
    load_state_dict_into,
)
from ccdf.checkpoints.presets import (
    PRESETS,
    Preset,
    fingerprint,
    get_preset,
    match_presets,
    preset_fingerprint,
    preset_shapes,
    register_presets,
)
from ccdf.checkpoints.reading import RawCheckpoint, read_checkpoint
from ccdf.checkpoints.saving import save_checkpoint, save_layouts

__all__ = [
    "CKPT",
    "FAMILIES",
    "GUIDED_FLAGS",
    "LAYOUTS",
    "NCSNPP_PRESETS",
    "OFFICIAL_FINGERPRINTS",
    "PRESETS",
    "CheckpointError",
    "CheckpointFamily",
    "CheckpointInfo",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CheckpointReadError",
    "Extracted",
    "NonFiniteCheckpointError",
    "Preset",
    "RawCheckpoint",
    "UnsafeCheckpointError",
    "build_net",
    "check_finite",
    "check_state_dict",
    "describe_checkpoint",
    "detect_family",
    "extract_state_dict",
    "fingerprint",
    "get_family",
    "get_preset",
    "guided_unet_config",
    "infer_config",
    "load_checkpoint_into",
    "load_net",
    "load_state_dict_into",
    "match_presets",
    "ncsnpp_config",
    "preset_fingerprint",
    "preset_shapes",
    "read_checkpoint",
    "register_family",
    "register_presets",
    "save_checkpoint",
    "save_layouts",
]
