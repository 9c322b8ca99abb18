"""Reading checkpoint files safely, without interpreting their layout.

``.safetensors`` files are read with safetensors; everything else with
``torch.load(path, map_location="cpu", weights_only=True)`` (``mmap=True`` for zip-format files,
so the 2 GB ADM / fastMRI files are paged in lazily). ``weights_only`` refuses pickles that hold
code or arbitrary objects; the only extension is numpy scalars/dtypes (a numpy ``step`` in a
training dict), allow-listed as ``docs/reference/CHECKPOINTS.md`` section 6 advises.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ccdf.checkpoints.errors import CheckpointNotFoundError, CheckpointReadError, UnsafeCheckpointError
from ccdf.checkpoints.family import CKPT
from ccdf.checkpoints.presets import PRESETS, command_hint

__all__ = ["RawCheckpoint", "read_checkpoint"]


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
        if CKPT in p.run.values():
            msg += f", e.g. `{command_hint(p.run, '/path/to/' + (p.files[0] if p.files else 'weights.pt'))}`"
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
                "step and save that (torch.save(state_dict) or ccdf.checkpoints.save_checkpoint)"
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
