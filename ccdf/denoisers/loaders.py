r"""Load official checkpoints into ccdf's networks: safely, strictly, with errors that say what fits.

Reading. ``.safetensors`` files are read with safetensors; everything else with
``torch.load(path, map_location="cpu", weights_only=True)`` (``mmap=True`` for zip-format files,
so the 2 GB ADM / fastMRI files are paged in lazily). ``weights_only`` refuses pickles that hold
code or arbitrary objects; the only extension is numpy scalars/dtypes (a numpy ``step`` in a
training dict), allow-listed as ``docs/CHECKPOINTS.md`` section 6 advises.

Layouts (docs/CHECKPOINTS.md) that :func:`extract_state_dict` maps onto our nets' names:

=====================  ==========================================================================
layout tag             what the file holds
=====================  ==========================================================================
``plain``              ``OrderedDict[str, Tensor]`` (guided-diffusion, IDDPM, ESRGAN, fastMRI)
``module``             the same with DataParallel's ``module.`` prefix (stripped)
``basicsr_params``     BasicSR ``{'params': sd}``
``basicsr_params_ema`` BasicSR ``{'params_ema': sd, ...}``: EMA weights are preferred whenever
                       present (``use_ema=True``, BasicSR's own ``param_key`` default for
                       inference), otherwise ``params``
``esrgan``             xinntao/ESRGAN names (``RRDB_trunk``, ``trunk_conv``, ``upconv``, ``HRconv``)
``oldarch``            pre-2019 ESRGAN ``model.N`` names
``score_sde``          ``{'model', 'ema', 'step', ('optimizer')}`` of score_sde / score-MRI: the
                       EMA ``shadow_params`` list is restored onto the trainable parameters in
                       registration order; non-trainable tensors (NCSN++'s frozen Fourier
                       ``all_modules.0.W`` and the ``sigmas`` buffer) come from ``'model'``
                       (CHECKPOINTS.md section 2.4; score-MRI's own loader loses ``W``)
``score_sde_model``    the same file with ``use_ema=False``: the raw ``'model'`` weights
``safetensors``        a state dict in a ``.safetensors`` file (official names)
``ccdf``               our format: ``.safetensors`` whose metadata names the net family and its
                       constructor arguments (``ccdf.family``, ``ccdf.config``, ``ccdf.preset``);
                       written by :func:`save_checkpoint`
=====================  ==========================================================================

Loading is strict: any missing, unexpected or mis-shaped key raises
:class:`CheckpointMismatchError`, whose message lists the offending keys and, when the file's
key/shape fingerprint matches a known preset, names it; NaN or infinite weights raise
:class:`NonFiniteCheckpointError` naming the file and the first such tensor. Fingerprint convention
(CHECKPOINTS.md): ``sha256("\n".join(sorted(f"{key} {d0,d1,...}")))[:16]``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import re
import shlex
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ccdf.nets.fastmri_unet import Unet
from ccdf.nets.guided_unet import GuidedUNet, guided_unet_config
from ccdf.nets.ncsnpp import NCSNpp, ncsnpp_config
from ccdf.nets.rrdbnet import RRDBNet, esrgan_to_rrdbnet, oldarch_to_rrdbnet, rrdbnet_to_esrgan, rrdbnet_to_oldarch

__all__ = [
    "FAMILIES",
    "LAYOUTS",
    "PRESETS",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CheckpointReadError",
    "Extracted",
    "NonFiniteCheckpointError",
    "Preset",
    "UnsafeCheckpointError",
    "build_net",
    "check_finite",
    "check_state_dict",
    "describe_checkpoint",
    "extract_state_dict",
    "fingerprint",
    "load_net",
    "load_checkpoint_into",
    "load_state_dict_into",
    "read_checkpoint",
    "save_checkpoint",
]


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A checkpoint file cannot be used (base class of the errors below, except not-found)."""


class CheckpointNotFoundError(FileNotFoundError):
    """The checkpoint path does not exist; the message says where the official file is published."""


class CheckpointReadError(CheckpointError):
    """The file is truncated, corrupt, or not a checkpoint at all."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle holds objects other than tensors and plain containers (``weights_only`` refused it)."""


class NonFiniteCheckpointError(CheckpointError):
    """The file holds NaN or infinite weights (a diverged or corrupted training run)."""


class CheckpointMismatchError(CheckpointError):
    """The state dict does not fit the network: missing, unexpected or mis-shaped keys.

    Attributes:
        missing: keys the network needs that the file lacks.
        unexpected: keys in the file the network does not have.
        mismatched: ``(key, file shape, network shape)`` triples.
        matches: names of presets whose fingerprint equals the file's.
    """

    def __init__(
        self,
        message: str,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
        matches: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        self.matches = list(matches)


def _fmt_keys(keys: Iterable[str], limit: int = 12) -> str:
    """``a, b, c, ... (N more)``: long key lists are truncated."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# ------------------------------------------------------------------------------------------------
# Families and presets
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A network class whose checkpoints we load.

    Attributes:
        name: family id (``guided_unet``, ``ncsnpp``, ``rrdbnet``, ``fastmri_unet``).
        build: constructor taking the config as keyword arguments.
        marker: a key (in our names) that only this family's state dicts have.
        derived: buffers fully determined by the config; they may be absent from a file and are
            then taken from the freshly built network.
        frozen: state-dict entries that are not trainable parameters (not in a score_sde EMA).
    """

    name: str
    build: Callable[..., nn.Module]
    marker: str
    derived: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("guided_unet", GuidedUNet, "input_blocks.0.0.weight"),
        Family("ncsnpp", NCSNpp, "all_modules.0.W", derived=("sigmas",), frozen=("sigmas", "all_modules.0.W")),
        Family("rrdbnet", RRDBNet, "conv_first.weight"),
        Family("fastmri_unet", Unet, "down_sample_layers.0.layers.0.weight"),
    )
}


@dataclass(frozen=True)
class Preset:
    """A published architecture: its config, the official files and where they are published.

    Attributes:
        name: preset id, accepted by :func:`load_net` and the loader factories.
        family: key of :data:`FAMILIES`.
        config: constructor arguments of the network.
        fingerprint: fingerprint of its state dict in our key names (checked against a meta-device
            build by the tests; equal to the CHECKPOINTS.md table for the BasicSR-named ones).
        files: official file names with these weights (empty when none are published).
        published: where the files are published (docs/CHECKPOINTS.md; links not live-checked).
        command: ``python run.py`` overrides that use the file (``{ckpt}`` is the path).
    """

    name: str
    family: str
    config: Mapping[str, Any]
    fingerprint: str
    files: tuple[str, ...]
    published: str
    command: str


_RRDB_OFFICIAL = dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32)
_IDDPM_SAMPLER = "sampler.variance=learned sampler.x0_clip=1.0"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "ffhq256",
            "guided_unet",
            guided_unet_config("ffhq256"),
            "1ffa5b3b9b24aa3e",
            ("ffhq_10m.pt",),
            "ILVR (jychoi118/ilvr_adm README, Google Drive file 117Y6Z6-Hg6TMZVIXMmgYbpZy7QvTXign); "
            "DPS Google Drive folder 1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh (models/ffhq_10m.pt); "
            "MCG_diffusion install.sh (Dropbox mirror). P2-weighting's ffhq_p2.pt has the same architecture",
            f"python run.py task=sr4 model=iddpm_ffhq256 model.ckpt={{ckpt}} {_IDDPM_SAMPLER}",
        ),
        Preset(
            "afhq_dog256",
            "guided_unet",
            guided_unet_config("afhq_dog256"),
            "1ffa5b3b9b24aa3e",
            ("afhq_dog_4m.pt",),
            "ILVR (jychoi118/ilvr_adm README, Google Drive file 14OG_o3aa8Hxmfu36IIRyOgRwEP6ngLdo; since Dec 2022 "
            "the README points to the P2-weighting OneDrive folder)",
            "python run.py task=sr4 model=iddpm_afhqdog256 model.ckpt={ckpt} dataset=afhq_dog256 "
            f"dataset.root=AFHQ/val/dog {_IDDPM_SAMPLER}",
        ),
        Preset(
            "adm256_uncond",
            "guided_unet",
            guided_unet_config("adm256_uncond"),
            "86f5708ebb91ab69",
            ("256x256_diffusion_uncond.pt", "imagenet256.pt"),
            "openai/guided-diffusion README: openaipublic blob diffusion/jul-2021/256x256_diffusion_uncond.pt "
            "(= DPS models/imagenet256.pt, Google Drive folder 1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh)",
            "python run.py task=sr4 model=iddpm_ffhq256 model.name=adm256_uncond model.preset=adm256_uncond "
            f"model.ckpt={{ckpt}} dataset=folder dataset.root=IMAGES {_IDDPM_SAMPLER}",
        ),
        Preset(
            "fastmri_knee_320",
            "ncsnpp",
            ncsnpp_config("fastmri_knee_320"),
            "302628efd6bcfcb2",
            ("checkpoint_95.pth",),
            "HJ-harry/score-MRI install.sh: Dropbox s/27gtxkmh2dlkho9/checkpoint_95.pth "
            "(saved as weights/checkpoint_95.pth)",
            "python run.py task=mri model=ncsnpp_fastmri320 model.ckpt={ckpt}",
        ),
        Preset(
            "esrgan_x4",
            "rrdbnet",
            dict(_RRDB_OFFICIAL, scale=4),
            "1c16f0b1f8e7d791",
            (
                "RRDB_ESRGAN_x4.pth",
                "RRDB_PSNR_x4.pth",
                "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth",
                "ESRGAN_PSNR_SRx4_DF2K_official-150ff491.pth",
            ),
            "xinntao/ESRGAN README (Google Drive folder 17VYV_SoZZesU6mbxz2dMAIccSSlqLecY: models/RRDB_ESRGAN_x4.pth, "
            "RRDB_PSNR_x4.pth); BasicSR model zoo (Google Drive files 1b3_bWZTjNO3iL2js1yWkJfjZykcQgvzT, "
            "1swaV5iBMFfg-DL6ZyiARztbhutDCWXMM)",
            "python run.py task=sr4 initializer=esrgan initializer.ckpt={ckpt}",
        ),
        Preset(
            "esrgan_x8",
            "rrdbnet",
            dict(_RRDB_OFFICIAL, scale=8),
            "32c840b399d0805e",
            (),
            "not published: ESRGAN/BasicSR release x4 weights only; train x8 yourself (CHECKPOINTS.md section 3)",
            "python run.py task=sr8 initializer=esrgan initializer.ckpt={ckpt}",
        ),
        Preset(
            "esrgan_x16",
            "rrdbnet",
            dict(_RRDB_OFFICIAL, scale=16),
            "b264cf8dffdb525f",
            (),
            "not published: ESRGAN/BasicSR release x4 weights only; train x16 yourself (CHECKPOINTS.md section 3)",
            "python run.py task=sr16 initializer=esrgan initializer.ckpt={ckpt}",
        ),
        Preset(
            "fastmri_unet_knee_sc",
            "fastmri_unet",
            dict(in_chans=1, out_chans=1, chans=256, num_pool_layers=4, drop_prob=0.0),
            "fbcb9c9e0a7dce8a",
            ("knee_sc_leaderboard_state_dict.pt",),
            "facebookresearch/fastMRI: fbaipublicfiles fastMRI/trained_models/unet/knee_sc_leaderboard_state_dict.pt "
            "(see fastmri_examples/unet/run_pretrained_unet_inference.py)",
            "python run.py task=mri initializer=unet initializer.ckpt={ckpt}",
        ),
        Preset(
            "fastmri_unet_chans32",
            "fastmri_unet",
            dict(in_chans=1, out_chans=1, chans=32, num_pool_layers=4, drop_prob=0.0),
            "74f2b31f6bbf8acc",
            (),
            "not published: fastMRI's default U-Net size (chans=32); train it with fastmri_examples/unet",
            "python run.py task=mri initializer=unet initializer.chans=32 initializer.ckpt={ckpt}",
        ),
    )
}

#: Fingerprints of the official files' *own* key names (CHECKPOINTS.md table; ``module.`` stripped).
OFFICIAL_FINGERPRINTS: dict[str, str] = {
    "1ffa5b3b9b24aa3e": "guided-diffusion UNet, ILVR/DPS FFHQ & AFHQ-dog config",
    "86f5708ebb91ab69": "guided-diffusion UNet, ADM 256 uncond",
    "302628efd6bcfcb2": "score-MRI NCSN++ fastMRI knee 320",
    "06591bb2ab27dcd3": "ESRGAN RRDBNet x4 (xinntao/ESRGAN names)",
    "1c16f0b1f8e7d791": "ESRGAN RRDBNet x4 (BasicSR names)",
    "9ed26022c1b10331": "ESRGAN RRDBNet x4 (old-arch model.N names)",
    "fbcb9c9e0a7dce8a": "fastMRI Unet(1, 1, chans=256, num_pool_layers=4)",
    "74f2b31f6bbf8acc": "fastMRI Unet(1, 1, chans=32, num_pool_layers=4)",
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown checkpoint preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def build_net(family: str, config: Mapping[str, Any], device: torch.device | str | None = None) -> nn.Module:
    """Instantiate a family's network (``device="meta"`` builds it without memory or init cost)."""
    if family not in FAMILIES:
        raise KeyError(f"unknown network family {family!r}; choose one of {sorted(FAMILIES)}")
    if device is None:
        return FAMILIES[family].build(**dict(config))
    with torch.device(device):
        return FAMILIES[family].build(**dict(config))


def fingerprint(state_dict: Mapping[str, Tensor]) -> str:
    """CHECKPOINTS.md fingerprint: sha256 of the sorted ``"key d0,d1,..."`` rows, first 16 hex digits."""
    rows = sorted(f"{k} {','.join(str(d) for d in v.shape)}" for k, v in state_dict.items())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


@functools.cache
def _preset_shapes(name: str) -> dict[str, tuple[int, ...]]:
    preset = get_preset(name)
    net = build_net(preset.family, preset.config, device="meta")
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@functools.cache
def preset_fingerprint(name: str) -> str:
    """Fingerprint of a preset's state dict in our key names (built on the meta device, cached)."""
    return fingerprint({k: torch.empty(s, device="meta") for k, s in _preset_shapes(name).items()})


def match_presets(state_dict: Mapping[str, Tensor]) -> list[str]:
    """Names of the presets whose fingerprint equals that of ``state_dict`` (our key names)."""
    fp = fingerprint(state_dict)
    return [name for name, p in PRESETS.items() if p.fingerprint == fp]


# ------------------------------------------------------------------------------------------------
# Reading files
# ------------------------------------------------------------------------------------------------


@dataclass
class RawCheckpoint:
    """What a file holds before any layout mapping.

    Attributes:
        path: the resolved path.
        container: ``"torch zip"``, ``"torch legacy"`` or ``"safetensors"``.
        obj: the loaded object (a dict).
        metadata: safetensors metadata (empty for torch files).
    """

    path: Path
    container: str
    obj: Any
    metadata: dict[str, str] = field(default_factory=dict)


def _not_found(path: Path, preset: str | None) -> CheckpointNotFoundError:
    msg = f"checkpoint file not found: {str(path)!r}"
    if preset is not None and preset in PRESETS:
        p = PRESETS[preset]
        if p.files:
            msg += f". The official {preset} weights ({' or '.join(p.files)}) are published at: {p.published}"
        else:
            msg += f". No official {preset} weights are published ({p.published})"
        msg += ". Download the file and pass its path"
        if "{ckpt}" in p.command:
            msg += f", e.g. `{p.command.format(ckpt='/path/to/' + (p.files[0] if p.files else 'weights.pt'))}`"
    else:
        msg += ". docs/checkpoints.md lists the official checkpoints and where they are published"
    return CheckpointNotFoundError(msg)


def _numpy_safe_globals() -> list[Any]:
    """numpy scalar reconstruction globals (a numpy ``step`` in a training dict), nothing more."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    kinds = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.float16, np.float32, np.float64)
    return [scalar, np.dtype, *{type(np.dtype(k)) for k in kinds}]


def _torch_load(path: Path) -> tuple[Any, str]:
    is_zip = zipfile.is_zipfile(path)
    container = "torch zip" if is_zip else "torch legacy"
    with open(path, "rb") as f:
        head = f.read(4)
    if not is_zip and head == b"PK\x03\x04":
        raise CheckpointReadError(
            f"cannot read checkpoint {str(path)!r}: it starts like a torch zip archive but has no central "
            "directory; the file is truncated (an interrupted download?). Download it again"
        )
    if not head:
        raise CheckpointReadError(f"cannot read checkpoint {str(path)!r}: the file is empty")

    def load() -> Any:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)

    try:
        try:
            return load(), container
        except pickle.UnpicklingError as err:
            if "numpy" not in str(err):
                raise
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                return load(), container
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.findall(r"GLOBAL ([\w.]+)", text)
        if found:
            raise UnsafeCheckpointError(
                f"refusing to load {str(path)!r}: the pickle contains a non-tensor object ({', '.join(found)}), "
                "which torch.load(weights_only=True) does not execute. Official checkpoints hold only tensors "
                "and plain containers. If you trust the file, extract its state dict in a separate trusted "
                "step and save that (torch.save(state_dict) or ccdf.denoisers.loaders.save_checkpoint)"
            ) from err
        raise CheckpointReadError(
            f"cannot read checkpoint {str(path)!r}: not a PyTorch checkpoint, or the file is corrupt "
            f"({_first_line(text, 'Unsupported operand')})"
        ) from err
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, AttributeError, IndexError) as err:
        raise CheckpointReadError(
            f"cannot read checkpoint {str(path)!r}: the file is truncated or corrupt "
            f"({type(err).__name__}: {str(err)[:200] or 'unexpected end of file'}). Download it again"
        ) from err


def _first_line(text: str, prefer: str) -> str:
    for line in text.splitlines():
        if prefer in line:
            return line.strip()
    return text.splitlines()[0][:200] if text else ""


def _safetensors_load(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError)
        raise CheckpointReadError(
            f"cannot read safetensors file {str(path)!r}: the file is truncated or corrupt ({err}). Download it again"
        ) from err
    return tensors, metadata


def read_checkpoint(path: str | Path, *, preset: str | None = None) -> RawCheckpoint:
    """Read a checkpoint file safely (no code execution), without interpreting its layout.

    Args:
        path: ``.safetensors`` file, or any ``torch.save`` file (zip or legacy format).
        preset: the preset the caller expects; only used to say where the official file is
            published when ``path`` does not exist.

    Raises:
        CheckpointNotFoundError: no such file.
        CheckpointReadError: truncated, corrupt or not a checkpoint.
        UnsafeCheckpointError: a pickle holding non-tensor objects.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise _not_found(path.resolve(), preset)
    if path.is_dir():
        raise CheckpointReadError(f"checkpoint path {str(path)!r} is a directory, not a file")
    with open(path, "rb") as f:
        head = f.read(16)
    is_safetensors = path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{")
    if is_safetensors and not zipfile.is_zipfile(path):
        tensors, metadata = _safetensors_load(path)
        return RawCheckpoint(path, "safetensors", tensors, metadata)
    obj, container = _torch_load(path)
    return RawCheckpoint(path, container, obj)


# ------------------------------------------------------------------------------------------------
# Layouts
# ------------------------------------------------------------------------------------------------

#: Layout tags and what they mean (see the module docstring).
LAYOUTS: dict[str, str] = {
    "plain": "plain state dict",
    "module": "'module.' prefix (DataParallel) stripped",
    "basicsr_params": "BasicSR {'params': ...}",
    "basicsr_params_ema": "BasicSR {'params_ema': ...} (EMA weights)",
    "esrgan": "xinntao/ESRGAN names (RRDB_trunk, trunk_conv, upconv, HRconv) renamed",
    "oldarch": "old ESRGAN model.N names renamed",
    "score_sde": "score_sde {'model', 'ema', 'step'}: EMA shadow_params restored by trainable-parameter order, "
    "non-trainable tensors from 'model'",
    "score_sde_model": "score_sde {'model', 'ema', 'step'}: raw 'model' weights (EMA not used)",
    "safetensors": "safetensors state dict",
    "ccdf": "ccdf safetensors (family and config in the metadata)",
}


@dataclass
class Extracted:
    """A state dict in our key names, and how it was found.

    Attributes:
        state_dict: tensors in our nets' key names.
        layout: layout tags (keys of :data:`LAYOUTS`), outermost first.
        family: detected or given family, or None.
        file_fingerprint: fingerprint of the file's own key names (``module.`` stripped, before renaming).
        metadata: ccdf metadata of the file (``ccdf.family``, ``ccdf.config``, ...), if any.
        notes: extra facts worth printing (e.g. which wrapper keys were present).
    """

    state_dict: dict[str, Tensor]
    layout: list[str]
    family: str | None
    file_fingerprint: str
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def layout_description(self) -> str:
        return "; ".join(LAYOUTS[t] for t in self.layout)


def _tensor_dict(obj: Any, what: str, path: Path) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointReadError(f"{str(path)!r}: {what} is a {type(obj).__name__}, expected a dict of tensors")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointReadError(
            f"{str(path)!r}: {what} is not a state dict: entries {_fmt_keys(map(str, bad), 8)} are not "
            f"tensors. Top-level keys: {_fmt_keys(map(str, obj), 8)}. Expected a state dict, BasicSR "
            "{'params' | 'params_ema': ...} or score_sde {'model', 'ema', 'step'}"
        )
    return dict(obj)


def _strip_module(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
    if not any(k.startswith("module.") for k in sd):
        return sd, False
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        name = k.removeprefix("module.")
        if name in out:
            raise CheckpointReadError(f"key {name!r} appears both with and without the 'module.' prefix")
        out[name] = v
    return out, True


def detect_family(keys: Iterable[str]) -> str | None:
    """The family whose characteristic keys appear in ``keys`` (official or our names), or None."""
    keys = set(keys)
    for fam in FAMILIES.values():
        if fam.marker in keys:
            return fam.name
    if any(k.startswith("RRDB_trunk.") for k in keys) or "model.1.sub.0.RDB1.conv1.0.weight" in keys:
        return "rrdbnet"
    if any(k.startswith("all_modules.") for k in keys):
        return "ncsnpp"
    return None


def _rename_for_family(sd: dict[str, Tensor], family: str | None, path: Path) -> tuple[dict[str, Tensor], str | None]:
    """Map other official namings of ``family`` onto ours; returns the tag of the mapping applied."""
    if family != "rrdbnet":
        return sd, None
    try:
        if any(k.startswith("RRDB_trunk.") for k in sd):
            return esrgan_to_rrdbnet(sd), "esrgan"
        if "model.0.weight" in sd:
            return oldarch_to_rrdbnet(sd), "oldarch"
    except ValueError as err:
        raise CheckpointMismatchError(f"{str(path)!r}: {err}") from err
    return sd, None


def _frozen_rule(family: str | None, keys: Iterable[str]) -> list[str]:
    """Trainable-parameter names by CHECKPOINTS.md's rule: state-dict order minus non-trainable entries."""
    frozen = set(FAMILIES[family].frozen) if family in FAMILIES else set()
    return [k for k in keys if k not in frozen]


def extract_state_dict(
    raw: RawCheckpoint,
    *,
    family: str | None = None,
    use_ema: bool = True,
    trainable: list[str] | None = None,
) -> Extracted:
    """Unwrap a file's layout into a state dict with our key names.

    Args:
        raw: from :func:`read_checkpoint`.
        family: the expected family; detected from the keys when None.
        use_ema: take EMA weights when the file has them (BasicSR ``params_ema``, score_sde ``ema``).
        trainable: names of the target net's trainable parameters in registration order (for the
            score_sde EMA list); when None, the state-dict order minus the family's non-trainable
            entries (CHECKPOINTS.md section 2.4).

    Raises:
        CheckpointReadError: the object is not one of the known layouts.
        CheckpointMismatchError: a renaming or the EMA list does not fit.
    """
    obj, path = raw.obj, raw.path
    layout: list[str] = []
    notes: list[str] = []
    shadow: list[Tensor] | None = None
    metadata = {k: v for k, v in raw.metadata.items() if k.startswith("ccdf.")}

    if raw.container == "safetensors":
        sd = dict(obj)
        layout.append("ccdf" if "ccdf.family" in metadata else "safetensors")
        if family is None and "ccdf.family" in metadata:
            family = metadata["ccdf.family"]
    elif isinstance(obj, Mapping) and "model" in obj and "ema" in obj:
        sd = _tensor_dict(obj["model"], "checkpoint['model']", path)
        ema = obj["ema"]
        if not isinstance(ema, Mapping) or not isinstance(ema.get("shadow_params"), list | tuple):
            raise CheckpointReadError(f"{str(path)!r}: checkpoint['ema'] has no 'shadow_params' list")
        shadow = list(ema["shadow_params"])
        if not all(isinstance(t, Tensor) for t in shadow):
            raise CheckpointReadError(f"{str(path)!r}: checkpoint['ema']['shadow_params'] holds non-tensors")
        layout.append("score_sde" if use_ema else "score_sde_model")
        notes.append(f"wrapper keys: {sorted(map(str, obj))}; step={obj.get('step')!r}; {len(shadow)} EMA tensors")
    elif isinstance(obj, Mapping) and ("params" in obj or "params_ema" in obj):
        key = "params_ema" if (use_ema and "params_ema" in obj) or "params" not in obj else "params"
        sd = _tensor_dict(obj[key], f"checkpoint[{key!r}]", path)
        layout.append(f"basicsr_{key}")
        notes.append(f"BasicSR keys present: {sorted(k for k in obj if k in ('params', 'params_ema'))}; used {key!r}")
    else:
        sd = _tensor_dict(obj, "the checkpoint", path)
        layout.append("plain")

    sd, stripped = _strip_module(sd)
    if stripped:
        layout.append("module")
    file_fp = fingerprint(sd)
    if family is None:
        family = detect_family(sd)
    sd, tag = _rename_for_family(sd, family, path)
    if tag:
        layout.append(tag)

    if shadow is not None and use_ema:
        names = trainable if trainable is not None else _frozen_rule(family, sd)
        if len(names) != len(shadow):
            raise CheckpointMismatchError(
                f"{str(path)!r}: the EMA has {len(shadow)} shadow parameters but the network has {len(names)} "
                "trainable parameters; the checkpoint is for another configuration"
            )
        bad = [
            (n, tuple(s.shape), tuple(sd[n].shape))
            for n, s in zip(names, shadow, strict=True)
            if n in sd and tuple(s.shape) != tuple(sd[n].shape)
        ]
        if bad:
            rows = ", ".join(f"{n}: ema {a} vs model {b}" for n, a, b in bad[:8])
            raise CheckpointMismatchError(
                f"{str(path)!r}: EMA shadow parameters do not line up with 'model' by trainable-parameter order "
                f"({len(bad)} shape mismatches: {rows})",
                mismatched=bad,
            )
        sd.update(zip(names, shadow, strict=True))
    return Extracted(sd, layout, family, file_fp, metadata, notes)


# ------------------------------------------------------------------------------------------------
# Strict loading
# ------------------------------------------------------------------------------------------------


def infer_config(family: str | None, sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
    """Constructor arguments readable from the keys and shapes alone (RRDBNet, fastMRI U-Net), else None."""
    try:
        if family == "rrdbnet":
            num_block = len({k.split(".")[1] for k in sd if k.startswith("body.")})
            num_up = len([k for k in sd if re.fullmatch(r"conv_up\d+\.weight", k)])
            in_ch = int(sd["conv_first.weight"].shape[1])
            scale = {2: 4, 3: 8, 4: 16}[num_up]
            if num_up == 2 and in_ch in (12, 48) and in_ch % 3 == 0:  # BasicSR pixel-unshuffle x2 / x1
                scale, in_ch = (2, in_ch // 4) if in_ch == 12 else (1, in_ch // 16)
            return dict(
                num_in_ch=in_ch,
                num_out_ch=int(sd["conv_last.weight"].shape[0]),
                scale=scale,
                num_feat=int(sd["conv_first.weight"].shape[0]),
                num_block=num_block,
                num_grow_ch=int(sd["body.0.rdb1.conv1.weight"].shape[0]),
            )
        if family == "fastmri_unet":
            pools = len({k.split(".")[1] for k in sd if k.startswith("down_sample_layers.")})
            first = sd["down_sample_layers.0.layers.0.weight"]
            return dict(
                in_chans=int(first.shape[1]),
                out_chans=int(sd[f"up_conv.{pools - 1}.1.weight"].shape[0]),
                chans=int(first.shape[0]),
                num_pool_layers=pools,
                drop_prob=0.0,
            )
    except (KeyError, IndexError):
        return None
    return None


def _suggestion(sd: Mapping[str, Tensor], family: str | None) -> tuple[str, list[str]]:
    detected = detect_family(sd)
    if detected is not None and detected != family:  # a file of another family: map its names first
        try:
            sd, _ = _rename_for_family(dict(sd), detected, Path("?"))
        except CheckpointError:
            pass
    matches = match_presets(sd)
    if matches:
        p = PRESETS[matches[0]]
        names = " / ".join(repr(m) for m in matches)
        return (
            f"The file's keys and shapes (fingerprint {fingerprint(sd)}) match preset {names} "
            f"({p.family}; official files: {', '.join(p.files) or 'none published'}): load it with that preset, "
            f"e.g. `{p.command.format(ckpt='PATH')}`",
            matches,
        )
    if detected is None:
        return f"The file's keys (fingerprint {fingerprint(sd)}) match no known network family.", []
    inferred = infer_config(detected, sd)
    text = f"The file looks like a {detected} checkpoint (fingerprint {fingerprint(sd)}) but matches no preset"
    if inferred is not None:
        text += f"; its keys and shapes fit config {inferred}"
    if family is not None and detected != family:
        text += f" (a {family} network was expected)"
    return text + ".", []


def check_state_dict(
    net: nn.Module,
    sd: Mapping[str, Tensor],
    *,
    family: str | None = None,
    expected: str = "the network",
    source: str = "the checkpoint",
) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``sd`` has exactly ``net``'s keys and shapes.

    Buffers listed as ``derived`` by the family (NCSN++ ``sigmas``) may be absent.
    """
    target = net.state_dict()
    derived = set(FAMILIES[family].derived) if family in FAMILIES else set()
    missing = [k for k in target if k not in sd and k not in derived]
    unexpected = [k for k in sd if k not in target]
    mismatched = [
        (k, tuple(sd[k].shape), tuple(target[k].shape))
        for k in target
        if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = [f"{source} does not fit {expected} ({len(sd)} tensors in the file, {len(target)} in the network)"]
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_fmt_keys(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_fmt_keys(unexpected)}")
    if mismatched:
        rows = [f"{k} file {list(a)} vs net {list(b)}" for k, a, b in sorted(mismatched)]
        shown = "; ".join(rows[:8]) + (f"; ... ({len(rows) - 8} more)" if len(rows) > 8 else "")
        parts.append(f"shape mismatches ({len(mismatched)}): {shown}")
    hint, matches = _suggestion(sd, family)
    parts.append(hint)
    raise CheckpointMismatchError("\n  ".join(parts), missing, unexpected, mismatched, matches)


def check_finite(sd: Mapping[str, Tensor], *, source: str = "the checkpoint") -> None:
    """Raise :class:`NonFiniteCheckpointError` naming the first tensor with a NaN or infinite entry."""
    bad = [k for k, v in sd.items() if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())]
    if not bad:
        return
    v = sd[bad[0]]
    nan, inf = int(torch.isnan(v).sum()), int(torch.isinf(v).sum())
    more = f"; {len(bad) - 1} more tensor(s) too: {_fmt_keys(bad[1:], 5)}" if len(bad) > 1 else ""
    raise NonFiniteCheckpointError(
        f"{source} holds non-finite weights: tensor {bad[0]!r} {list(v.shape)} has {nan} NaN and {inf} infinite "
        f"value(s){more}. The file cannot produce finite outputs (a diverged or damaged training run?)"
    )


def load_state_dict_into(
    net: nn.Module,
    sd: Mapping[str, Tensor],
    *,
    family: str | None = None,
    expected: str = "the network",
    source: str = "the checkpoint",
) -> None:
    """Strictly check, then load ``sd`` (our key names) into ``net``.

    Tensors are cast to the network's dtypes (NCSN++ ``sigmas`` stays float64). A network built
    on the ``meta`` device gets the tensors assigned (no copy, no random init); derived buffers
    absent from the file then stay on ``meta`` until :func:`load_net` recomputes them.
    """
    check_state_dict(net, sd, family=family, expected=expected, source=source)
    check_finite(sd, source=source)
    target = net.state_dict()
    full = {
        k: (sd[k].to(dtype=ref.dtype) if sd[k].dtype != ref.dtype else sd[k]) for k, ref in target.items() if k in sd
    }
    is_meta = any(t.is_meta for t in target.values())
    net.load_state_dict(full, strict=len(full) == len(target), assign=is_meta)


def load_checkpoint_into(
    net: nn.Module, path: str | Path, *, family: str | None = None, use_ema: bool = True
) -> Extracted:
    """Load a checkpoint file of any supported layout into an existing ``net`` (strict)."""
    raw = read_checkpoint(path)
    trainable = [n for n, q in net.named_parameters() if q.requires_grad]
    ext = extract_state_dict(raw, family=family, use_ema=use_ema, trainable=trainable)
    load_state_dict_into(net, ext.state_dict, family=ext.family, source=f"checkpoint {str(raw.path)!r}")
    return ext


# ------------------------------------------------------------------------------------------------
# The main entry points
# ------------------------------------------------------------------------------------------------


def _config_from_metadata(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    text = metadata.get("ccdf.config")
    return None if text is None else json.loads(text)


def _same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return json.loads(json.dumps(dict(a), sort_keys=True)) == json.loads(json.dumps(dict(b), sort_keys=True))


def load_net(
    path: str | Path,
    *,
    family: str | None = None,
    preset: str | None = None,
    config: Mapping[str, Any] | None = None,
    use_ema: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, Extracted]:
    """Build a network and load a checkpoint of any supported layout into it, strictly.

    The configuration is, in this order: ``config``; the preset's; the one stored in a ccdf
    file's metadata; the preset whose fingerprint matches the file. A ccdf file whose stored
    config differs from the requested one is refused. The net is built on the ``meta`` device
    and the file's tensors are assigned to it (no random init; zip files stay memory-mapped).

    Args:
        path: checkpoint file.
        family: network family; implied by ``preset`` or by a ccdf file, else detected.
        preset: a key of :data:`PRESETS` (``"ffhq256"``, ``"fastmri_knee_320"``, ``"esrgan_x4"``, ...).
        config: constructor arguments (overrides ``preset``'s; ``preset`` then only names the
            published file in the not-found message).
        use_ema: prefer EMA weights (BasicSR ``params_ema``, score_sde ``ema``).
        device: where the network's tensors go.

    Returns:
        ``(net, extracted)``: the network in eval mode with gradients off, and the layout info.

    Raises:
        CheckpointNotFoundError, CheckpointReadError, UnsafeCheckpointError, CheckpointMismatchError.
    """
    from_preset = False
    if preset is not None:
        p = get_preset(preset)
        if family is not None and family != p.family:
            raise ValueError(f"preset {preset!r} is a {p.family} network, not {family}")
        family = p.family
        if config is None:
            config, from_preset = dict(p.config), True
    raw = read_checkpoint(path, preset=preset)
    where = f"checkpoint {str(raw.path)!r}"
    meta_family = raw.metadata.get("ccdf.family")
    if family is not None and meta_family is not None and meta_family != family:
        raise CheckpointMismatchError(f"{where} holds a {meta_family} network, not a {family}")
    family = family or meta_family
    stored = _config_from_metadata(raw.metadata)
    if config is not None and stored is not None and not _same_config(config, stored):
        raise CheckpointMismatchError(
            f"{where} was saved for config {stored}, but config {dict(config)} was requested "
            "(use preset=None, i.e. model.preset=null, to take the file's own config)"
        )
    config = config if config is not None else stored

    probe = extract_state_dict(raw, family=family, use_ema=False)  # keys and shapes only
    detected = detect_family(probe.state_dict)
    if family is not None and detected is not None and detected != family:
        hint, matches = _suggestion(probe.state_dict, family)
        raise CheckpointMismatchError(f"{where} holds a {detected} network, not a {family}. {hint}", matches=matches)
    if family is None or config is None:
        family = family or probe.family
        if config is None:
            matches = [m for m in match_presets(probe.state_dict) if family is None or PRESETS[m].family == family]
            if not matches:
                hint, _ = _suggestion(probe.state_dict, family)
                raise CheckpointMismatchError(
                    f"cannot tell which configuration {where} is for: pass a preset (one of "
                    f"{sorted(PRESETS)}) or a config. {hint}"
                )
            preset, from_preset = matches[0], True
            family, config = PRESETS[preset].family, dict(PRESETS[preset].config)
    if family is None:
        raise CheckpointMismatchError(f"cannot tell which network family {where} is for; pass family= or preset=")

    net = build_net(family, config, device="meta")
    trainable = [n for n, q in net.named_parameters() if q.requires_grad]
    ext = extract_state_dict(raw, family=family, use_ema=use_ema, trainable=trainable)
    ext.family = family
    expected = f"the {family} preset {preset!r}" if from_preset else f"the requested {family} config"
    load_state_dict_into(net, ext.state_dict, family=family, expected=expected, source=where)
    net = _materialize_derived(net, family, config)
    left = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left:  # pragma: no cover - every family's tensors are in its state dict
        raise RuntimeError(f"tensors left on the meta device after loading: {left}")
    return net.to(device).eval().requires_grad_(False), ext


def _materialize_derived(net: nn.Module, family: str, config: Mapping[str, Any]) -> nn.Module:
    """Fill derived buffers absent from the file (still on ``meta``) from a fresh CPU build."""
    meta = [n for n, b in net.named_buffers() if b.is_meta]
    if not meta:
        return net
    fresh = dict(build_net(family, config, device="cpu").named_buffers())
    for name in meta:
        module_name, _, attr = name.rpartition(".")
        module = net.get_submodule(module_name) if module_name else net
        module._buffers[attr] = fresh[name]
    return net


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------

SAVE_LAYOUTS = ("ccdf", "safetensors", "plain", "module", "basicsr", "basicsr_ema", "esrgan", "oldarch", "score_sde")


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
            ``esrgan`` / ``oldarch`` (RRDBNet names), ``score_sde``
            (``{'model': module.-prefixed, 'ema': {'decay', 'num_updates', 'shadow_params'}, 'step'}``).
        family, config, preset: recorded in the ``ccdf`` metadata (``family`` and ``config`` required there;
            ``config`` defaults to the preset's).
        ema: EMA weights for ``basicsr_ema`` / ``score_sde`` (default: the net's own).
        step: training step recorded by ``score_sde``.

    Returns:
        ``path``.
    """
    from ccdf.utils.io import atomic_write

    if layout not in SAVE_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {SAVE_LAYOUTS}")
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
    elif layout == "esrgan":
        obj = rrdbnet_to_esrgan(sd)
    elif layout == "oldarch":
        obj = rrdbnet_to_oldarch(sd)
    else:  # score_sde
        trainable = [n for n, q in net.named_parameters() if q.requires_grad]
        obj = {
            "model": {f"module.{k}": v for k, v in sd.items()},
            "ema": {"decay": 0.999, "num_updates": int(step), "shadow_params": [ema_sd[n] for n in trainable]},
            "step": int(step),
        }
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


# ------------------------------------------------------------------------------------------------
# Inspection
# ------------------------------------------------------------------------------------------------


@dataclass
class CheckpointInfo:
    """What :func:`describe_checkpoint` found (printed by ``python -m ccdf.inspect_checkpoint``)."""

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
    commands: list[str]


def describe_checkpoint(path: str | Path, *, family: str | None = None, use_ema: bool = True) -> CheckpointInfo:
    """Read a checkpoint and describe its layout, size, fingerprint and the config that loads it."""
    raw = read_checkpoint(path)
    ext = extract_state_dict(raw, family=family, use_ema=use_ema)
    sd = ext.state_dict
    fp = fingerprint(sd)
    presets = [m for m in match_presets(sd) if ext.family is None or PRESETS[m].family == ext.family]
    config = _config_from_metadata(ext.metadata)
    if config is None and presets:
        config = dict(PRESETS[presets[0]].config)
    if config is None:
        config = infer_config(ext.family, sd)
    shown = command_value(str(raw.path.absolute()))  # the command works from any folder
    commands = [PRESETS[m].command.format(ckpt=shown) for m in presets]
    if not presets and ext.family is not None and config is not None and "ccdf.config" in ext.metadata:
        custom = _custom_command(ext.family, shown, config)
        if custom is not None:
            commands.append(custom)
    return CheckpointInfo(
        path=raw.path,
        size_bytes=raw.path.stat().st_size,
        container=raw.container,
        extracted=ext,
        num_tensors=len(sd),
        num_params=sum(int(v.numel()) for v in sd.values()),
        fingerprint=fp,
        official=OFFICIAL_FINGERPRINTS.get(ext.file_fingerprint),
        presets=presets,
        config=config,
        commands=commands,
    )


def _custom_command(family: str, path: str, config: Mapping[str, Any]) -> str | None:
    """Overrides for a ccdf file of a non-preset config (the config is read from the file), or None when
    no ``run.py`` task fits the network (e.g. an x2 RRDBNet, a 3-channel NCSN++)."""
    c = dict(config)
    if family == "guided_unet":
        if c.get("in_channels") != 3:
            return None
        if c.get("out_channels") == 2 * c["in_channels"]:  # learned variance: IDDPM's sampler settings
            return f"python run.py task=sr4 model=iddpm_ffhq256 model.preset=null model.ckpt={path}"
        return f"python run.py task=sr4 model=unet_small model.ckpt={path}"  # eps only (ccdf's own training)
    if family == "ncsnpp":
        if c.get("num_channels", 1) != 1:
            return None
        return f"python run.py task=mri model=ncsnpp_fastmri320 model.preset=null model.ckpt={path}"
    if family == "rrdbnet":
        scale = c.get("scale")
        if scale not in (4, 8, 16) or c.get("num_in_ch") != 3 or c.get("num_out_ch") != 3:
            return None
        return f"python run.py task=sr{scale} initializer=esrgan initializer.preset=null initializer.ckpt={path}"
    if family == "fastmri_unet":
        if c.get("in_chans") != 1 or c.get("out_chans") != 1:
            return None
        return f"python run.py task=mri initializer=unet initializer.preset=null initializer.ckpt={path}"
    return None


_HYDRA_PLAIN = re.compile(r"[A-Za-z0-9_/+.@%*?|:-]+")
_HYDRA_NOT_STRING = re.compile(r"[-+]?[0-9_.]+([eE][-+]?[0-9]+)?|true|false|null|nan|inf", re.IGNORECASE)
_SHELL_PLAIN = re.compile(r"[A-Za-z0-9_/+.@%:,=-]+")


def command_value(value: str) -> str:
    """``value`` (a file path) written so that ``key=<result>`` on a shell command line reaches Hydra as ``value``.

    Hydra's override grammar needs quotes around spaces, commas, brackets, ``=`` and the like (inside them
    ``'`` and trailing backslashes are escaped) and OmegaConf needs ``${`` escaped; the shell then needs
    quotes around the Hydra quotes.

    >>> command_value("/data/ckpt/ffhq_10m.pt")
    '/data/ckpt/ffhq_10m.pt'
    >>> print(command_value("/my ckpts, v1/w.pt"))
    "'/my ckpts, v1/w.pt'"
    """
    if not _HYDRA_PLAIN.fullmatch(value) or value.startswith("-") or _HYDRA_NOT_STRING.fullmatch(value):
        body = value.replace("${", "\\${")
        body = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, body).replace("'", "\\'")
        value = f"'{body}'"
    if _SHELL_PLAIN.fullmatch(value):
        return value
    if not re.search(r'["$`\\!]', value):
        return f'"{value}"'
    return shlex.quote(value)
