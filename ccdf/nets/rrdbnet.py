r"""ESRGAN's RRDBNet (Wang et al., ECCV-W 2018) with BasicSR parameter names, at x4, x8 and x16.

The network is the generator of ESRGAN: a 3x3 conv, ``num_block`` Residual-in-Residual Dense Blocks
(RRDB) plus a trunk conv on a long skip, ``log2(scale)`` nearest-x2 + conv + LeakyReLU upsampling
stages, and two output convs. There is no bicubic or global image skip.

Parameter names are exactly those of BasicSR (``basicsr/archs/rrdbnet_arch.py``), generalised to
more upsampling stages (``conv_up1 .. conv_up{n}``), so BasicSR x4 (and x2/x1) files load with
``load_state_dict(strict=True)``. Two pure, strict converters map the other published namings into
ours (and back):

======================  =============================  =============================
ours (BasicSR)          xinntao/ESRGAN RRDBNet_arch    old arch (``model.N``)
======================  =============================  =============================
conv_first              conv_first                     model.0
body.i.rdbj.convk       RRDB_trunk.i.RDBj.convk        model.1.sub.i.RDBj.convk.0
conv_body               trunk_conv                     model.1.sub.{num_block}
conv_up{k}, k = 1..n    upconv{k}                      model.{3k}
conv_hr                 HRconv                         model.{2 + 3n}
conv_last               conv_last                      model.{4 + 3n}
======================  =============================  =============================

(each followed by ``.weight`` / ``.bias``; n = number of upsampling stages). The old-arch rule is
that of ``RRDB_Net(..., upscale=2**n)`` in ESRGAN's ``architecture.py`` (removed in commit
d274b11, June 2019): every upsampling stage is ``[Upsample, Conv, LeakyReLU]``, hence three
``model`` slots per stage.

ESRGAN and BasicSR publish x4 RRDBNet weights only (ESRGAN ``RRDB_ESRGAN_x4.pth`` and
``RRDB_PSNR_x4.pth``; BasicSR ``ESRGAN_SRx4_DF2KOST_official-ff704c30.pth`` inside
``{'params': ...}``); x8/x16 weights must be trained.

Value range: the official nets take and return RGB in ``[0, 1]`` (ESRGAN ``test.py`` reads BGR,
flips to RGB, divides by 255, and clamps the output to ``[0, 1]``). The output here is not clamped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccdf.utils.text import fmt_keys

__all__ = [
    "RRDBNet",
    "RRDB",
    "ResidualDenseBlock",
    "esrgan_to_rrdbnet",
    "rrdbnet_to_esrgan",
    "oldarch_to_rrdbnet",
    "rrdbnet_to_oldarch",
]

# Number of nearest-x2 upsampling stages per scale. BasicSR's x2 and x1 first pixel-unshuffle the
# input by 2 and 4 and then still upsample x4.
_NUM_UP = {1: 2, 2: 2, 4: 2, 8: 3, 16: 4}
_UNSHUFFLE = {1: 4, 2: 2}


class ResidualDenseBlock(nn.Module):
    """Residual dense block with five 3x3 convs, ``x + 0.2 * conv5(cat(x, x1..x4))``.

    Args:
        num_feat: Channels C of the input and output.
        num_grow_ch: Growth channels G produced by ``conv1..conv4``.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        # BasicSR's initialisation (default_init_weights(..., 0.1)): Kaiming normal scaled by 0.1,
        # zero bias. It only matters for training from scratch.
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            nn.init.kaiming_normal_(conv.weight)
            with torch.no_grad():
                conv.weight.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: Features ``[B, C, H, W]``.

        Returns:
            Features ``[B, C, H, W]``.
        """
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, ``x + 0.2 * rdb3(rdb2(rdb1(x)))``.

    Args:
        num_feat: Channels C of the input and output.
        num_grow_ch: Growth channels of each dense block.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: Features ``[B, C, H, W]``.

        Returns:
            Features ``[B, C, H, W]``.
        """
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator (RRDBNet), BasicSR layout, with ``log2(scale)`` upsampling stages.

    ``scale`` 4, 8, 16 use 2, 3, 4 stages ``conv_up1..conv_up{n}``. ``scale`` 2 and 1 follow BasicSR
    (used by Real-ESRGAN x2): the input is pixel-unshuffled by 2 / 4 first (``conv_first`` then sees
    ``4 * num_in_ch`` / ``16 * num_in_ch`` channels) and two stages follow.

    Args:
        num_in_ch: Input channels (3 for RGB).
        num_out_ch: Output channels (3 for RGB).
        scale: Upscaling factor, one of 1, 2, 4, 8, 16.
        num_feat: Feature channels (64 in ESRGAN).
        num_block: Number of RRDB blocks in the trunk (23 in ESRGAN).
        num_grow_ch: Growth channels of the dense blocks (32 in ESRGAN).

    Example:
        >>> net = RRDBNet(3, 3, scale=8, num_feat=8, num_block=1, num_grow_ch=4)
        >>> net(torch.rand(1, 3, 5, 6)).shape
        torch.Size([1, 3, 40, 48])
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        if scale not in _NUM_UP:
            raise ValueError(f"scale must be one of {sorted(_NUM_UP)}, got {scale}")
        self.scale = scale
        self.num_up = _NUM_UP[scale]
        self.unshuffle = _UNSHUFFLE.get(scale, 1)
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        for k in range(1, self.num_up + 1):
            self.add_module(f"conv_up{k}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """Super-resolve a batch.

        Args:
            x: Low-resolution images ``[B, num_in_ch, H, W]``, RGB in ``[0, 1]`` for the official
                weights. For ``scale`` 2 / 1, H and W must be divisible by 2 / 4.

        Returns:
            High-resolution images ``[B, num_out_ch, scale * H, scale * W]``, nominally in
            ``[0, 1]`` (not clamped).
        """
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        for k in range(1, self.num_up + 1):
            conv_up = getattr(self, f"conv_up{k}")
            feat = self.lrelu(conv_up(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


# ------------------------------------------------------------------------------------------------
# State-dict converters (pure functions; tensors are passed through, not copied).
# ------------------------------------------------------------------------------------------------


def _our_modules(num_block: int, num_up: int) -> list[str]:
    """Conv module names of our RRDBNet in state_dict order."""
    names = ["conv_first"]
    for i in range(num_block):
        for j in (1, 2, 3):
            names += [f"body.{i}.rdb{j}.conv{k}" for k in range(1, 6)]
    names.append("conv_body")
    names += [f"conv_up{k}" for k in range(1, num_up + 1)]
    return [*names, "conv_hr", "conv_last"]


def _esrgan_module(name: str, num_block: int, num_up: int) -> str:
    """Our conv module name -> xinntao/ESRGAN ``RRDBNet_arch.py`` name."""
    m = re.fullmatch(r"body\.(\d+)\.rdb(\d)\.(conv\d)", name)
    if m:
        return f"RRDB_trunk.{m[1]}.RDB{m[2]}.{m[3]}"
    if name.startswith("conv_up"):
        return "upconv" + name[len("conv_up") :]
    return {"conv_body": "trunk_conv", "conv_hr": "HRconv"}.get(name, name)


def _oldarch_module(name: str, num_block: int, num_up: int) -> str:
    """Our conv module name -> old ESRGAN ``architecture.RRDB_Net`` (``model.N``) name."""
    m = re.fullmatch(r"body\.(\d+)\.rdb(\d)\.(conv\d)", name)
    if m:
        return f"model.1.sub.{m[1]}.RDB{m[2]}.{m[3]}.0"
    if name.startswith("conv_up"):
        return f"model.{3 * int(name[len('conv_up') :])}"
    fixed = {
        "conv_first": "model.0",
        "conv_body": f"model.1.sub.{num_block}",
        "conv_hr": f"model.{2 + 3 * num_up}",
        "conv_last": f"model.{4 + 3 * num_up}",
    }
    return fixed[name]


def _key_map(namer: Callable[[str, int, int], str], num_block: int, num_up: int) -> dict[str, str]:
    """Ordered map our key -> their key, for weights and biases."""
    out = {}
    for mod in _our_modules(num_block, num_up):
        theirs = namer(mod, num_block, num_up)
        for p in ("weight", "bias"):
            out[f"{mod}.{p}"] = f"{theirs}.{p}"
    return out


def _rename_strict(sd: Mapping[str, Tensor], mapping: Mapping[str, str], what: str) -> dict[str, Tensor]:
    """Rename ``sd`` by ``mapping`` (source key -> target key); every key must match exactly."""
    unknown = set(sd) - set(mapping)
    missing = set(mapping) - set(sd)
    if unknown or missing:
        msg = [f"state dict does not match the {what} RRDBNet layout"]
        if unknown:
            msg.append(f"unknown keys ({len(unknown)}): {fmt_keys(unknown, 30)}")
        if missing:
            msg.append(f"missing keys ({len(missing)}): {fmt_keys(missing, 30)}")
        raise ValueError("; ".join(msg))
    return {dst: sd[src] for src, dst in mapping.items()}


def _max_index(keys: Iterable[str], pattern: str) -> int:
    """1 + the largest integer captured by ``pattern`` over ``keys`` (0 if none match)."""
    found = [int(m[1]) for k in keys if (m := re.fullmatch(pattern, k))]
    return max(found) + 1 if found else 0


def _check_num_up(num_up: int, what: str, sd: Mapping[str, Tensor]) -> None:
    if num_up not in (2, 3, 4):
        found = "no recognisable" if num_up < 1 else f"{num_up}"
        raise ValueError(
            f"{what} state dict ({len(sd)} keys) has {found} upsampling stage(s); RRDBNet "
            f"supports 2, 3 or 4 (x4, x8, x16); keys: {fmt_keys(sd, 10)}"
        )


def _our_structure(sd: Mapping[str, Tensor]) -> tuple[int, int]:
    num_block = _max_index(sd, r"body\.(\d+)\..*")
    num_up = _max_index(sd, r"conv_up(\d+)\.weight") - 1
    _check_num_up(num_up, "our", sd)
    return num_block, num_up


def _esrgan_structure(sd: Mapping[str, Tensor]) -> tuple[int, int]:
    num_block = _max_index(sd, r"RRDB_trunk\.(\d+)\..*")
    num_up = _max_index(sd, r"upconv(\d+)\.weight") - 1
    _check_num_up(num_up, "ESRGAN", sd)
    return num_block, num_up


def _oldarch_structure(sd: Mapping[str, Tensor]) -> tuple[int, int]:
    num_block = _max_index(sd, r"model\.1\.sub\.(\d+)\.RDB.*")
    top = _max_index(sd, r"model\.(\d+)\.weight") - 1  # index of the last conv, 4 + 3n
    num_up = (top - 4) // 3 if top >= 4 and (top - 4) % 3 == 0 else -1
    _check_num_up(num_up, "old-arch ESRGAN", sd)
    return num_block, num_up


#: naming -> (our module name -> their name, structure reader of their state dicts, what to call them)
_NAMINGS: dict[str, tuple[Callable[[str, int, int], str], Callable[[Mapping[str, Tensor]], tuple[int, int]], str]] = {
    "esrgan": (_esrgan_module, _esrgan_structure, "xinntao/ESRGAN"),
    "oldarch": (_oldarch_module, _oldarch_structure, "old-arch ESRGAN (model.N)"),
}


def _to_ours(state_dict: Mapping[str, Tensor], naming: str) -> dict[str, Tensor]:
    namer, structure, what = _NAMINGS[naming]
    mapping = {v: k for k, v in _key_map(namer, *structure(state_dict)).items()}
    return _rename_strict(state_dict, mapping, what)


def _from_ours(state_dict: Mapping[str, Tensor], naming: str) -> dict[str, Tensor]:
    return _rename_strict(state_dict, _key_map(_NAMINGS[naming][0], *_our_structure(state_dict)), "ccdf")


def esrgan_to_rrdbnet(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an xinntao/ESRGAN ``RRDBNet_arch.py`` state dict to our (BasicSR) names.

    ``RRDB_trunk.i.RDBj.convk -> body.i.rdbj.convk``, ``trunk_conv -> conv_body``,
    ``upconv{k} -> conv_up{k}``, ``HRconv -> conv_hr`` (``conv_first``, ``conv_last`` unchanged).
    ``num_block`` and the number of upsampling stages are read from the keys. Strip any ``module.``
    prefix first. Returns a new dict in our state_dict order, sharing the tensors; raises ValueError
    listing unknown and missing keys if the dict is not exactly an ESRGAN RRDBNet.
    """
    return _to_ours(state_dict, "esrgan")


def rrdbnet_to_esrgan(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`esrgan_to_rrdbnet`: our names (scale 4/8/16) -> xinntao/ESRGAN names (strict)."""
    return _from_ours(state_dict, "esrgan")


def oldarch_to_rrdbnet(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an old-arch ESRGAN state dict (``model.N`` names) to our (BasicSR) names.

    The old ``architecture.RRDB_Net`` is ``Sequential(conv, Shortcut(Sequential(*RRDBs, conv)),
    *[Upsample, Conv, LReLU] * n, Conv, LReLU, Conv)``, so ``model.0 -> conv_first``,
    ``model.1.sub.i.RDBj.convk.0 -> body.i.rdbj.convk``, ``model.1.sub.{num_block} -> conv_body``,
    ``model.{3k} -> conv_up{k}``, ``model.{2+3n} -> conv_hr``, ``model.{4+3n} -> conv_last``. At x4
    this is ESRGAN's ``transer_RRDB_models.py``; x8 (n = 3) and x16 (n = 4) follow the same rule.
    Strict as :func:`esrgan_to_rrdbnet` (2, 3 or 4 upsampling stages).
    """
    return _to_ours(state_dict, "oldarch")


def rrdbnet_to_oldarch(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`oldarch_to_rrdbnet`: our names (scale 4/8/16) -> old-arch ``model.N`` names (strict)."""
    return _from_ours(state_dict, "oldarch")
