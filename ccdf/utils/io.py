"""Atomic file writes: a file either appears complete or not at all."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def non_finite_path(obj: object, prefix: str = "") -> str | None:
    """The dotted path of the first NaN or infinite float in nested dicts/lists (None when there is none)."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else prefix or "<value>"
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = non_finite_path(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def write_json(path: str | Path, obj: object) -> Path:
    """Write ``obj`` as JSON, atomically. NaN and infinity are refused (they are not JSON):
    ``ValueError`` naming the file and the key, and nothing is written."""
    bad = non_finite_path(obj)
    if bad is not None:
        raise ValueError(f"refusing to write {path}: {bad} is not a finite number (NaN/inf are not valid JSON)")
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    return atomic_write(path, write)


def to_uint8(img: Tensor) -> np.ndarray:
    """``[C, H, W]`` in [0, 1] -> ``[H, W, C]`` (or ``[H, W]``) uint8."""
    arr = (img.detach().to("cpu").float().clamp(0, 1) * 255).round().to(torch.uint8)
    arr = arr.permute(1, 2, 0).numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def save_png(path: str | Path, img: Tensor | np.ndarray) -> Path:
    """Save ``[C, H, W]`` in [0, 1] (or a uint8 array) as PNG, atomically."""
    from PIL import Image

    arr = img if isinstance(img, np.ndarray) else to_uint8(img)
    return atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


def save_npy(path: str | Path, arr: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    return atomic_write(path, write)
