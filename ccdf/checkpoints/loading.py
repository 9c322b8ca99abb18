"""Strict loading: a state dict fits the network exactly, or the error lists what differs and names what fits.

Any missing, unexpected or mis-shaped key raises :class:`CheckpointMismatchError`, whose message lists the
offending keys and, when the file's key/shape fingerprint matches a known preset, names it; NaN or infinite
weights raise :class:`NonFiniteCheckpointError` naming the file and the first such tensor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ccdf.checkpoints.errors import CheckpointError, CheckpointMismatchError, NonFiniteCheckpointError, fmt_keys
from ccdf.checkpoints.family import FAMILIES, build_net, detect_family
from ccdf.checkpoints.layouts import Extracted, extract_state_dict, rename_for_family
from ccdf.checkpoints.presets import PRESETS, command_hint, fingerprint, get_preset, match_presets
from ccdf.checkpoints.reading import read_checkpoint

__all__ = [
    "check_finite",
    "check_state_dict",
    "config_from_metadata",
    "infer_config",
    "load_checkpoint_into",
    "load_net",
    "load_state_dict_into",
    "same_config",
]


def infer_config(family: str | None, sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
    """Constructor arguments readable from the keys and shapes alone (RRDBNet, fastMRI U-Net), else None."""
    return FAMILIES[family].infer_config(sd) if family in FAMILIES else None


def _suggestion(sd: Mapping[str, Tensor], family: str | None) -> tuple[str, list[str]]:
    detected = detect_family(sd)
    if detected is not None and detected != family:  # a file of another family: map its names first
        try:
            sd, _ = rename_for_family(dict(sd), detected, Path("?"))
        except CheckpointError:
            pass
    matches = match_presets(sd)
    if matches:
        p = PRESETS[matches[0]]
        names = " / ".join(repr(m) for m in matches)
        return (
            f"The file's keys and shapes (fingerprint {fingerprint(sd)}) match preset {names} "
            f"({p.family}; official files: {', '.join(p.files) or 'none published'}): load it with that preset, "
            f"e.g. `{command_hint(p.run, 'PATH')}`",
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
        parts.append(f"missing keys ({len(missing)}): {fmt_keys(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {fmt_keys(unexpected)}")
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
    more = f"; {len(bad) - 1} more tensor(s) too: {fmt_keys(bad[1:], 5)}" if len(bad) > 1 else ""
    raise NonFiniteCheckpointError(
        f"{source} holds non-finite weights: tensor {bad[0]!r} {list(v.shape)} has {nan} NaN and {inf} infinite "
        f"value(s){more}. The file cannot produce finite outputs (a diverged or damaged training run?)"
    )


def load_state_dict_into(net: nn.Module, sd: Mapping[str, Tensor], **context: Any) -> None:
    """Strictly check, then load ``sd`` (our key names) into ``net``.

    ``context`` are :func:`check_state_dict`'s keywords (``family``, ``expected``, ``source``). Tensors are
    cast to the network's dtypes (NCSN++ ``sigmas`` stays float64). A network built on the ``meta`` device
    gets the tensors assigned (no copy, no random init); derived buffers absent from the file then stay on
    ``meta`` until :func:`load_net` recomputes them.
    """
    check_state_dict(net, sd, **context)
    check_finite(sd, source=context.get("source", "the checkpoint"))
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


def config_from_metadata(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    """The constructor arguments stored in a ccdf file's metadata, or None."""
    text = metadata.get("ccdf.config")
    return None if text is None else json.loads(text)


def same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two constructor-argument mappings are equal once written as JSON (tuples = lists)."""
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
    stored = config_from_metadata(raw.metadata)
    if config is not None and stored is not None and not same_config(config, stored):
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
