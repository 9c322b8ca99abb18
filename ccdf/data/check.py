"""Pre-flight check of a data set: every item is read once before the first sampling step.

A corrupt file, a NaN-filled slice or an all-zero image then stops a run before any sampling (one
error that lists every bad item), or, with ``skip_unreadable``, is left out with one warning that
lists them. The check also gives each item its content key (:func:`item_key`), which the result
cache (:class:`ccdf.evaluation.ResultStore`) stores with each result, so that a replaced or
shifted image is never served another image's result.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ccdf.data.datasets import UpscaledImageWarning

#: Bad items named in full in an error or warning message; the rest are counted.
MAX_LISTED = 20


def item_key(x0: Tensor, name: str) -> str:
    """The content key of a data-set item: sha256 of its name, dtype, shape and loaded values (hex, 32 digits).

    It is computed from the tensor the sampler receives (after decoding, resizing and scaling), so it
    changes exactly when the item's input does (another file under the same name, another resize).
    """
    x0 = x0.detach().to("cpu").contiguous()
    h = hashlib.sha256()
    h.update(f"{name}\0{x0.dtype}\0{tuple(x0.shape)}\0".encode())
    h.update(x0.numpy().tobytes())
    return h.hexdigest()[:32]


@dataclass
class DataCheck:
    """What :func:`check_items` found.

    Attributes:
        indices: data-set positions of the usable items (their ``index``: it seeds each item's
            generator, so a skipped item leaves the others' indices, and results, unchanged).
        keys: content key of each usable item, by index.
        skipped: one line per item left out (``item <i>: <reason naming the file>``).
        notes: warnings raised while reading (images upscaled more than 2x), one per item.
        names: name of each usable item, by index.
    """

    indices: list[int]
    keys: dict[int, str]
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)


class UnusableItemsError(ValueError):
    """Items of a data set cannot be used (unreadable, wrong shape, NaN/inf, all zero)."""


def listing(lines: list[str]) -> str:
    """Up to :data:`MAX_LISTED` lines, indented, and how many more."""
    shown = "".join(f"\n  {line}" for line in lines[:MAX_LISTED])
    return shown + (f"\n  ... and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else "")


def check_items(dataset: Any, *, skip_unreadable: bool = False) -> DataCheck:
    """Read every item of ``dataset`` once; check it is finite and keyed by its position.

    Args:
        dataset: a ``ccdf`` data set (items ``{"x0", "index", "name"}``).
        skip_unreadable: leave bad items out (listed in ``DataCheck.skipped``) instead of failing.

    Returns:
        The usable indices, their content keys, the skipped items and the reading warnings.

    Raises:
        UnusableItemsError: some item cannot be used (and ``skip_unreadable`` is off), or none can;
            the message lists each bad item with the data set's reason, which names its file.
    """
    indices: list[int] = []
    keys: dict[int, str] = {}
    names: dict[int, str] = {}
    bad: list[str] = []
    notes: list[str] = []
    for i in range(len(dataset)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UpscaledImageWarning)
            try:
                item = dataset[i]
                x0, name = item["x0"], str(item["name"])
                if int(item["index"]) != i:
                    raise ValueError(f"reports index {item['index']} at position {i}")
                values = x0.real if not torch.is_complex(x0) else torch.view_as_real(x0)
                n_bad = int((~torch.isfinite(values)).sum())
                if n_bad:
                    raise ValueError(f"{name}: {n_bad} of {values.numel()} values are NaN or infinite")
            except (ValueError, OSError) as err:
                bad.append(f"item {i}: {err}")
                continue
        for w in caught:
            if issubclass(w.category, UpscaledImageWarning):
                notes.append(str(w.message))
            else:  # not ours: let it through as if uncaught
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        indices.append(i)
        keys[i] = item_key(x0, name)
        names[i] = name
    if bad and not skip_unreadable:
        raise UnusableItemsError(
            f"{len(bad)} of {len(dataset)} data items cannot be used (dataset.skip_unreadable=true leaves them "
            f"out with a warning):{listing(bad)}"
        )
    if not indices:
        raise UnusableItemsError(f"none of the {len(dataset)} data items can be used:{listing(bad)}")
    return DataCheck(indices, keys, bad, notes, names)
