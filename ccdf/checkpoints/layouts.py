"""Layouts: unwrapping what a file holds into a state dict with our nets' key names.

=====================  ==========================================================================
layout tag             what the file holds
=====================  ==========================================================================
``plain``              ``OrderedDict[str, Tensor]`` (guided-diffusion, IDDPM, ESRGAN, fastMRI)
``module``             the same with DataParallel's ``module.`` prefix (stripped)
``basicsr_params``     BasicSR ``{'params': sd}``
``basicsr_params_ema`` BasicSR ``{'params_ema': sd, ...}``: EMA weights are preferred whenever
                       present (``use_ema=True``, BasicSR's own ``param_key`` default for
                       inference), otherwise ``params``
``score_sde``          ``{'model', 'ema', 'step', ('optimizer')}`` of score_sde / score-MRI: the
                       EMA ``shadow_params`` list is restored onto the trainable parameters in
                       registration order; non-trainable tensors (NCSN++'s frozen Fourier
                       ``all_modules.0.W`` and the ``sigmas`` buffer) come from ``'model'``
                       (docs/reference/CHECKPOINTS.md section 2.4; score-MRI's own loader loses ``W``)
``score_sde_model``    the same file with ``use_ema=False``: the raw ``'model'`` weights
``safetensors``        a state dict in a ``.safetensors`` file (official names)
``ccdf``               our format: ``.safetensors`` whose metadata names the net family and its
                       constructor arguments (``ccdf.family``, ``ccdf.config``, ``ccdf.preset``);
                       written by :func:`ccdf.checkpoints.save_checkpoint`
=====================  ==========================================================================

plus each family's other official key namings (:attr:`CheckpointFamily.namings`: RRDBNet's ``esrgan``
and ``oldarch``), renamed to ours by the family.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from ccdf.checkpoints.errors import CheckpointMismatchError, CheckpointReadError, fmt_keys
from ccdf.checkpoints.family import FAMILIES, detect_family
from ccdf.checkpoints.presets import fingerprint
from ccdf.checkpoints.reading import RawCheckpoint

__all__ = ["LAYOUTS", "Extracted", "extract_state_dict", "layout_description", "rename_for_family"]


#: Container layout tags and what they mean (see the module docstring); :func:`layout_description` adds the
#: families' namings (``esrgan``, ``oldarch``, ...).
LAYOUTS: dict[str, str] = {
    "plain": "plain state dict",
    "module": "'module.' prefix (DataParallel) stripped",
    "basicsr_params": "BasicSR {'params': ...}",
    "basicsr_params_ema": "BasicSR {'params_ema': ...} (EMA weights)",
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
        return "; ".join(layout_description(t) for t in self.layout)


def layout_description(tag: str) -> str:
    """What a layout tag means (a container layout or a family's naming)."""
    if tag in LAYOUTS:
        return LAYOUTS[tag]
    return next(f.namings[tag] for f in FAMILIES.values() if tag in f.namings)


def _tensor_dict(obj: Any, what: str, path: Path) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointReadError(f"{str(path)!r}: {what} is a {type(obj).__name__}, expected a dict of tensors")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointReadError(
            f"{str(path)!r}: {what} is not a state dict: entries {fmt_keys(map(str, bad), 8)} are not "
            f"tensors. Top-level keys: {fmt_keys(map(str, obj), 8)}. Expected a state dict, BasicSR "
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


def rename_for_family(sd: dict[str, Tensor], family: str | None, path: Path) -> tuple[dict[str, Tensor], str | None]:
    """Map other official namings of ``family`` onto ours; returns the tag of the naming applied (None: ours)."""
    if family not in FAMILIES:
        return sd, None
    try:
        return FAMILIES[family].to_ours(sd)
    except ValueError as err:
        raise CheckpointMismatchError(f"{str(path)!r}: {err}") from err


def _frozen_rule(family: str | None, keys: Iterable[str]) -> list[str]:
    """Trainable-parameter names by docs/reference/CHECKPOINTS.md's rule: state-dict order minus non-trainable
    entries."""
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
            entries (docs/reference/CHECKPOINTS.md section 2.4).

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
    sd, tag = rename_for_family(sd, family, path)
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
