"""Per-image evaluation results on disk: keyed by data-set index, resumable, shared by processes.

A :class:`ResultStore` is one folder per evaluation *setting* (data, model, operator,
initializer, sampler without t0, seed, noise): its name is a hash of that setting, so a re-run
of the same config finds the images it already finished and skips them, and several processes
(or several t0 values) write into it without coordination::

    <root>/<task>/<hash>/setting.json        the hashed setting (for people)
    <root>/<task>/<hash>/gt/00007.png        ground truth, initializer output, measurement preview
    <root>/<task>/<hash>/init/00007.png
    <root>/<task>/<hash>/meas/00007.png
    <root>/<task>/<hash>/t0_0.2/00007.png    reconstruction (and .npy for complex MRI data)
    <root>/<task>/<hash>/t0_0.2/00007.json   its metrics; written last, so it marks the item done

Items are keyed by data-set index (which seeds the item's generator) *and* content: each metrics
file holds the item's content key (:func:`ccdf.data.check.item_key`, a hash of its name and loaded
values), and a result counts as done only when that key matches the image the data set holds now.
An image replaced under the same name, or one whose index shifted because a file was added before
it, is recomputed (and its files overwritten); unchanged images are reused.

Every file is written atomically: a killed run leaves finished items and nothing half-written.
Two processes that evaluate the same item (DDP pads uneven shards) write identical files.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ccdf.data.transforms import to_unit
from ccdf.metrics import nmse, psnr, ssim
from ccdf.operators.base import Operator
from ccdf.utils.io import save_npy, save_png, write_json
from ccdf.utils.vis import measurement_preview

SUMMARY_KEYS = ("psnr", "ssim", "init_psnr", "init_ssim", "lpips", "init_lpips", "nmse", "init_nmse")


def fingerprint(setting: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-able setting (key order does not matter)."""
    blob = json.dumps(setting, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def t0_key(t0: float) -> str:
    """Folder name of one start time, e.g. ``t0_0.2`` (``%g`` keeps 0.05 and 0.5 apart)."""
    return f"t0_{float(t0):g}"


class ResultStore:
    """The per-image results of one evaluation setting (see the module docstring).

    Args:
        root: the cache folder (``eval.cache_dir``).
        task: a readable prefix (the task name).
        setting: everything that determines an image's result except t0.
    """

    def __init__(self, root: str | Path, task: str, setting: dict[str, Any]) -> None:
        self.setting = setting
        self.key = fingerprint(setting)
        self.folder = Path(root) / task / self.key
        meta = self.folder / "setting.json"
        if meta.is_file() and fingerprint(json.loads(meta.read_text())) != self.key:  # collision or hand edit
            raise ValueError(f"{self.folder} holds results of another setting; remove it or change eval.cache_dir")

    def item_path(self, t0: float, index: int, suffix: str = ".json") -> Path:
        return self.folder / t0_key(t0) / f"{int(index):05d}{suffix}"

    def stored_key(self, t0: float, index: int) -> str | None:
        """The content key stored with the result of ``index`` at ``t0`` (None: no readable result)."""
        try:
            return json.loads(self.item_path(t0, index).read_text()).get("key")
        except (OSError, ValueError):
            return None

    def done(self, t0: float, index: int, key: str | None = None) -> bool:
        """Whether ``index`` has a result at ``t0`` (computed from content ``key``, when given)."""
        if key is None:
            return self.item_path(t0, index).is_file()
        return self.stored_key(t0, index) == key

    def pending(
        self, t0s: Sequence[float], indices: Iterable[int], keys: Mapping[int, str] | None = None
    ) -> list[tuple[float, int]]:
        """The (t0, index) pairs without a result yet (or with one of other content than ``keys[index]``),
        ordered by t0 then index.

        Batches then mostly share one t0: a batch's pass lasts as long as its largest N', so
        mixing an image's t0 = 1 copy into every batch would make each batch a full run.
        """
        indices = list(indices)
        key = (lambda i: keys[i]) if keys is not None else (lambda i: None)  # noqa: E731
        return [(float(t), int(i)) for t in sorted(t0s) for i in indices if not self.done(t, i, key(i))]

    def write_inputs(self, index: int, x0: Tensor, x_init: Tensor, y: Tensor) -> None:
        """Ground truth, initializer output and measurement preview of one item (``[C, H, W]``, ``y`` batched).

        Always (re)written: the image at ``index`` may have changed since they were last written.
        """
        stem = f"{int(index):05d}.png"
        if not (self.folder / "setting.json").is_file():  # written with the first result, not before
            write_json(self.folder / "setting.json", self.setting)
        for sub, img in (("gt", to_unit(x0)), ("init", to_unit(x_init)),
                         ("meas", measurement_preview(y, (1, *x0.shape))[0])):  # fmt: skip
            save_png(self.folder / sub / stem, img)

    def write(self, t0: float, index: int, row: dict[str, Any], x: Tensor) -> None:
        """One reconstruction ``[C, H, W]`` (PNG, plus ``.npy`` when complex) and its metrics row."""
        save_png(self.item_path(t0, index, ".png"), to_unit(x))
        if torch.is_complex(x):
            save_npy(self.item_path(t0, index, ".npy"), x[0].detach().cpu().numpy())
        write_json(self.item_path(t0, index), {"index": int(index), "t0": float(t0), **row})

    def read(self, t0: float, indices: Iterable[int], keys: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
        """The metrics rows of ``indices`` at ``t0``, in that order; a missing one, or (with ``keys``)
        one computed from other content than ``keys[index]``, is an error."""
        rows = []
        for i in indices:
            path = self.item_path(t0, i)
            if not path.is_file():
                raise RuntimeError(f"evaluation incomplete: no result for image {i} at t0={t0:g} ({path})")
            row = json.loads(path.read_text())
            if keys is not None and row.get("key") != keys[i]:
                raise RuntimeError(
                    f"the result of image {i} ({row.get('name')}) at t0={t0:g} ({path}) was computed from other "
                    "content than the data set holds now (did the file change during the run?); run again"
                )
            rows.append(row)
        return rows

    def folder_of(self, what: str | float) -> Path:
        """``gt``, ``init``, ``meas`` or the reconstructions of a t0 (a float)."""
        return self.folder / (t0_key(what) if isinstance(what, int | float) else what)


def score_item(
    x: Tensor,
    x_init: Tensor,
    x0: Tensor,
    y: Tensor,
    op: Operator,
    is_mri: bool,
    lpips: Any = None,
    ref: Tensor | None = None,
) -> dict[str, float]:
    """Metrics of one reconstruction and of its initializer (all ``[1, C, H, W]``; ``y`` batched).

    Images: PSNR/SSIM in [0, 1] (data range 1). MRI: on magnitudes, with the target's maximum
    as data range (fastMRI's convention), plus NMSE; the target is ``ref`` when given (the
    root-sum-of-squares image of multi-coil data, fastMRI's reference), else ``|x0|``.
    ``dc_residual`` is ||A x - y|| / ||y||.
    ``lpips`` (optional) maps two ``[B, 3, H, W]`` images in [-1, 1] to ``[B]`` distances.
    """
    if is_mri:
        ref = x0.abs() if ref is None else ref.to(device=x.device, dtype=x.abs().dtype)
        data_range = ref.flatten(1).amax(1)
        rec, ini = x.abs(), x_init.abs()
    else:
        ref, data_range, rec, ini = to_unit(x0), torch.ones(1), to_unit(x), to_unit(x_init)
    row = {
        "psnr": float(psnr(rec, ref, data_range)),
        "ssim": float(ssim(rec, ref, data_range)),
        "init_psnr": float(psnr(ini, ref, data_range)),
        "init_ssim": float(ssim(ini, ref, data_range)),
        "dc_residual": float((op(x) - y).abs().norm() / y.abs().norm().clamp(min=1e-12)),
    }
    if is_mri:
        row["nmse"] = float(nmse(rec, ref))
        row["init_nmse"] = float(nmse(ini, ref))
    elif lpips is not None and x.shape[1] == 3:
        as_pm1 = lambda v: v.float().clamp(-1, 1)  # noqa: E731 - model range is already [-1, 1]
        row["lpips"] = float(lpips(as_pm1(x), as_pm1(x0)).reshape(-1)[0])
        row["init_lpips"] = float(lpips(as_pm1(x_init), as_pm1(x0)).reshape(-1)[0])
    return row


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Means of the per-image metrics present in every row; the worst (max) DC residual."""
    out: dict[str, float] = {}
    for key in SUMMARY_KEYS:
        if rows and all(key in r for r in rows):
            out[key] = float(np.mean([float(r[key]) for r in rows]))
    out["dc_residual"] = max(float(r["dc_residual"]) for r in rows) if rows else math.nan
    out["nfe"] = float(np.mean([float(r["nfe"]) for r in rows])) if rows else math.nan
    out["seconds"] = float(sum(float(r["seconds"]) for r in rows))
    return out
