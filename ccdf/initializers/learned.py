r"""Learned initial estimates x_init (CCDF Sec. 4): ESRGAN for super-resolution, fastMRI U-Net for MRI.

Both load a checkpoint (any layout of :mod:`ccdf.checkpoints`) and follow the
:class:`ccdf.initializers.basic.Initializer` protocol ``x_init = init(y, op)``.

* :class:`ESRGANInitializer`: RRDBNet (ESRGAN). The low-resolution measurement y in ``[-1, 1]``
  becomes RGB in ``[0, 1]`` (the official nets' range), the net super-resolves it, the output is
  clamped to ``[0, 1]`` (ESRGAN's ``test.py``) and mapped back to ``[-1, 1]``. x4 loads the
  official ESRGAN / BasicSR weights; x8 / x16 are RRDBNets with 3 / 4 upsampling stages, for
  which no official weights exist (train them; docs/reference/CHECKPOINTS.md section 3).
* :class:`UNetInitializer`: fastMRI U-Net on the zero-filled image. The magnitude of
  ``A^+ y`` is normalised as fastMRI's ``UnetDataTransform`` does (``normalize_instance``:
  ``(x - mean) / (std + 1e-11)`` per image, clamped to ``[-6, 6]``), passed through the net and
  de-normalised (``out * std + mean``). The U-Net predicts a magnitude only, so x_init is that
  magnitude (clamped at 0) with the *phase of the zero-filled image*: a complex image the
  k-space data consistency can work with. Where the zero-filled image is exactly 0 the phase is 0.

The mapping between ``(y, op)``, the net's input and x_init lives in :class:`ESRGANMapping` and
:class:`UNetMapping` (``encode`` / ``decode``, plus ``target``: the training target of a clean
image). Both the initializers here and the trainer (:mod:`ccdf.lightning.initializer_module`)
call them, so training and inference see the same inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from ccdf.checkpoints import PRESETS, load_net
from ccdf.operators.base import Operator

__all__ = [
    "MAPPINGS",
    "ESRGANInitializer",
    "ESRGANMapping",
    "NetMapping",
    "UNetInitializer",
    "UNetMapping",
    "normalize_instance",
]


def _device_dtype(net: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(iter(net.parameters()))
    return p.device, p.dtype


def normalize_instance(x: Tensor, eps: float = 1e-11) -> tuple[Tensor, Tensor, Tensor]:
    """fastMRI's ``normalize_instance`` per image: ``((x - mean) / (std + eps), mean, std)``, ``x`` ``[B, ...]``.

    ``std`` is the unbiased standard deviation over each image, as ``torch.Tensor.std`` in fastMRI.
    """
    flat = x.reshape(x.shape[0], -1)
    shape = (-1,) + (1,) * (x.ndim - 1)
    mean = flat.mean(dim=1).reshape(shape)
    std = flat.std(dim=1).reshape(shape)
    return (x - mean) / (std + eps), mean, std


class NetMapping:
    """How a feed-forward initializer net sits between a measurement and x_init.

    ``inputs, ctx = encode(y, op)``; ``x_init = decode(net(inputs), ctx)``; the net's training target
    for a clean image x0 is ``target(x0, ctx)`` (in the net's output space). ``inputs`` and
    ``target`` are in a float dtype of the caller's choosing (cast them to the net's); ``decode``
    returns x_init on the device and in the dtype of the measurement.
    """

    family: ClassVar[str]

    def encode(self, y: Tensor, op: Operator) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def decode(self, out: Tensor, ctx: Any) -> Tensor:
        raise NotImplementedError

    def target(self, x0: Tensor, ctx: Any) -> Tensor:
        raise NotImplementedError

    def __call__(self, net: torch.nn.Module, y: Tensor, op: Operator) -> Tensor:
        """``decode(net(encode(y, op)))`` with the input cast to the net's device and dtype."""
        inputs, ctx = self.encode(y, op)
        device, dtype = _device_dtype(net)
        return self.decode(net(inputs.to(device=device, dtype=dtype)), ctx)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ESRGANMapping(NetMapping):
    """RRDBNet: low-resolution ``y`` in ``[-1, 1]`` -> RGB ``[0, 1]`` in; output clamped to ``[0, 1]`` -> ``[-1, 1]``.

    The training target is the clean image in ``[0, 1]`` (ESRGAN's pixel loss range).
    """

    family = "rrdbnet"

    def encode(self, y: Tensor, op: Operator) -> tuple[Tensor, Any]:
        if torch.is_complex(y) or y.ndim != 4:
            raise TypeError(f"ESRGANInitializer needs real low-resolution images [B, C, h, w], got {tuple(y.shape)}")
        return ((y + 1) / 2).clamp(0, 1), (y.device, y.dtype)

    def decode(self, out: Tensor, ctx: Any) -> Tensor:
        device, dtype = ctx
        return (out.clamp(0, 1) * 2 - 1).to(device=device, dtype=dtype)

    def target(self, x0: Tensor, ctx: Any) -> Tensor:
        return (x0 + 1) / 2


class UNetMapping(NetMapping):
    """fastMRI U-Net: ``|A^+ y|`` instance-normalised (float64) and clamped to ``[-6, 6]`` in;
    output de-normalised, clamped at 0, with the zero-filled phase.

    The training target is ``|x0|`` normalised with the *input's* mean and std and clamped to
    ``[-6, 6]``, as fastMRI's ``UnetDataTransform`` does.
    """

    family = "fastmri_unet"

    def encode(self, y: Tensor, op: Operator) -> tuple[Tensor, Any]:
        zero_filled = op.pinv(y)
        if zero_filled.ndim != 4 or zero_filled.shape[1] != 1:
            raise ValueError(
                f"UNetInitializer expects single-channel images [B, 1, H, W], got {tuple(zero_filled.shape)}"
            )
        normed, mean, std = normalize_instance(zero_filled.abs().to(torch.float64))
        return normed.clamp(-6, 6), (zero_filled, mean, std)

    def decode(self, out: Tensor, ctx: Any) -> Tensor:
        zero_filled, mean, std = ctx
        magnitude = zero_filled.abs()
        out = out.to(device=mean.device, dtype=torch.float64)
        estimate = (out * std + mean).clamp(min=0).to(magnitude.dtype)
        if not torch.is_complex(zero_filled):
            return estimate
        phase = torch.polar(torch.ones_like(magnitude), zero_filled.angle())
        return estimate * phase

    def target(self, x0: Tensor, ctx: Any) -> Tensor:
        _, mean, std = ctx
        return ((x0.abs().to(torch.float64) - mean) / (std + 1e-11)).clamp(-6, 6)


#: The mapping of each initializer net family.
MAPPINGS: dict[str, NetMapping] = {"rrdbnet": ESRGANMapping(), "fastmri_unet": UNetMapping()}


class ESRGANInitializer:
    """x_init = ESRGAN(y): RRDBNet super-resolution of the low-resolution measurement.

    Args:
        ckpt: checkpoint file (xinntao/ESRGAN, old-arch ``model.N``, BasicSR ``params``/``params_ema``
            or ccdf layouts). Required.
        scale: 4, 8 or 16; must equal the operator's factor.
        preset: ``"esrgan_x4"`` / ``"esrgan_x8"`` / ``"esrgan_x16"``; default ``f"esrgan_x{scale}"``
            (the official 64-feature, 23-block net). ``None``: take the config from a ccdf file.
        config: explicit :class:`ccdf.nets.rrdbnet.RRDBNet` arguments (overrides ``preset``).
        use_ema: prefer BasicSR ``params_ema`` when present.
        device: where the net runs.
    """

    mapping: ClassVar[NetMapping] = MAPPINGS["rrdbnet"]

    def __init__(
        self,
        ckpt: str | Path,
        *,
        scale: int = 4,
        preset: str | None = "auto",
        config: Mapping[str, Any] | None = None,
        use_ema: bool = True,
        device: str = "cpu",
    ) -> None:
        if scale not in (4, 8, 16):
            raise ValueError(f"ESRGANInitializer supports scale 4, 8 or 16, got {scale}")
        if preset == "auto":
            preset = f"esrgan_x{scale}"
        self.scale = int(scale)
        self.net, self.extracted = load_net(
            ckpt, family="rrdbnet", preset=preset, config=config, use_ema=use_ema, device=device
        )
        if getattr(self.net, "scale", scale) != scale:
            raise ValueError(f"checkpoint {ckpt!r} is an x{self.net.scale} RRDBNet, but scale={scale} was asked for")
        self.ckpt = str(ckpt)

    def __repr__(self) -> str:
        return f"ESRGANInitializer(scale={self.scale}, ckpt={self.ckpt!r})"

    @torch.no_grad()
    def __call__(self, y: Tensor, op: Operator) -> Tensor:
        """``y`` ``[B, 3, h, w]`` in ``[-1, 1]`` -> x_init ``[B, 3, scale h, scale w]`` in ``[-1, 1]``."""
        factor = getattr(op, "factor", None)
        if factor is not None and int(factor) != self.scale:
            raise ValueError(f"ESRGANInitializer is x{self.scale} but the operator's factor is {factor}")
        return self.mapping(self.net, y, op)


class UNetInitializer:
    """x_init = |U-Net(zero-filled)| with the zero-filled phase (fastMRI U-Net; see the module docstring).

    Args:
        ckpt: checkpoint file (fastMRI ``*_state_dict.pt``, ``module.``-prefixed or ccdf). Required.
        chans: first-level channels (256 for fastMRI's published leaderboard models, 32 for its default).
        num_pool_layers: pooling levels (4 in both).
        preset: a preset name, ``"auto"`` (the preset with these ``chans``/``num_pool_layers``, else an
            explicit 1-in/1-out config) or ``None`` (the config of a ccdf file).
        use_ema: unused by fastMRI files; kept for a uniform signature.
        device: where the net runs.
    """

    mapping: ClassVar[NetMapping] = MAPPINGS["fastmri_unet"]

    def __init__(
        self,
        ckpt: str | Path,
        *,
        chans: int = 256,
        num_pool_layers: int = 4,
        preset: str | None = "auto",
        use_ema: bool = True,
        device: str = "cpu",
    ) -> None:
        config: dict[str, Any] | None = None
        if preset == "auto":
            config = dict(in_chans=1, out_chans=1, chans=chans, num_pool_layers=num_pool_layers, drop_prob=0.0)
            found = [n for n, p in PRESETS.items() if p.family == "fastmri_unet" and dict(p.config) == config]
            preset = found[0] if found else None
            if preset is not None:
                config = None
        self.net, self.extracted = load_net(
            ckpt, family="fastmri_unet", preset=preset, config=config, use_ema=use_ema, device=device
        )
        self.ckpt = str(ckpt)

    def __repr__(self) -> str:
        return f"UNetInitializer(chans={self.net.chans}, ckpt={self.ckpt!r})"

    @torch.no_grad()
    def __call__(self, y: Tensor, op: Operator) -> Tensor:
        """k-space ``y`` -> complex x_init ``[B, 1, H, W]`` (real input gives a real, non-negative output)."""
        return self.mapping(self.net, y, op)
