"""ESRGAN / BasicSR RRDBNet checkpoints in three namings (docs/reference/CHECKPOINTS.md section 3)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ccdf.checkpoints.family import CKPT, CheckpointFamily, register_family
from ccdf.checkpoints.presets import Preset, register_presets
from ccdf.nets.rrdbnet import RRDBNet, esrgan_to_rrdbnet, oldarch_to_rrdbnet, rrdbnet_to_esrgan, rrdbnet_to_oldarch

__all__ = ["RRDBNetFamily"]

_OLDARCH_MARKER = "model.1.sub.0.RDB1.conv1.0.weight"


class RRDBNetFamily(CheckpointFamily):
    """RRDBNet: ours are BasicSR's names; xinntao/ESRGAN and old-arch ``model.N`` files are renamed."""

    name = "rrdbnet"
    net = RRDBNet
    marker = "conv_first.weight"
    official = {
        "06591bb2ab27dcd3": "ESRGAN RRDBNet x4 (xinntao/ESRGAN names)",
        "1c16f0b1f8e7d791": "ESRGAN RRDBNet x4 (BasicSR names)",
        "9ed26022c1b10331": "ESRGAN RRDBNet x4 (old-arch model.N names)",
    }
    namings = {
        "esrgan": "xinntao/ESRGAN names (RRDB_trunk, trunk_conv, upconv, HRconv) renamed",
        "oldarch": "old ESRGAN model.N names renamed",
    }

    def recognises(self, keys: set[str]) -> bool:
        return any(k.startswith("RRDB_trunk.") for k in keys) or _OLDARCH_MARKER in keys

    def to_ours(self, state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], str | None]:
        if any(k.startswith("RRDB_trunk.") for k in state_dict):
            return esrgan_to_rrdbnet(state_dict), "esrgan"
        if "model.0.weight" in state_dict:
            return oldarch_to_rrdbnet(state_dict), "oldarch"
        return state_dict, None

    def from_ours(self, state_dict: Mapping[str, Tensor], naming: str) -> dict[str, Tensor]:
        if naming == "esrgan":
            return rrdbnet_to_esrgan(state_dict)
        if naming == "oldarch":
            return rrdbnet_to_oldarch(state_dict)
        return super().from_ours(state_dict, naming)

    def infer_config(self, state_dict: Mapping[str, Tensor]) -> dict[str, Any] | None:
        sd = state_dict
        try:
            num_up = len([k for k in sd if re.fullmatch(r"conv_up\d+\.weight", k)])
            in_ch = int(sd["conv_first.weight"].shape[1])
            scale = {2: 4, 3: 8, 4: 16}[num_up]
            if num_up == 2 and in_ch in (12, 48):  # BasicSR pixel-unshuffle x2 / x1
                scale, in_ch = (2, in_ch // 4) if in_ch == 12 else (1, in_ch // 16)
            return dict(
                num_in_ch=in_ch,
                num_out_ch=int(sd["conv_last.weight"].shape[0]),
                scale=scale,
                num_feat=int(sd["conv_first.weight"].shape[0]),
                num_block=len({k.split(".")[1] for k in sd if k.startswith("body.")}),
                num_grow_ch=int(sd["body.0.rdb1.conv1.weight"].shape[0]),
            )
        except (KeyError, IndexError):
            return None

    def run_overrides(self, config: Mapping[str, Any]) -> dict[str, str] | None:
        scale = config.get("scale")
        if scale not in (4, 8, 16) or config.get("num_in_ch") != 3 or config.get("num_out_ch") != 3:
            return None  # ESRGANInitializer takes RGB x4, x8 and x16 only
        return {"task": f"sr{scale}", "initializer": "esrgan", "initializer.preset": "null", "initializer.ckpt": CKPT}


register_family(RRDBNetFamily())


def _preset(scale: int, fp: str, files: tuple[str, ...], published: str) -> Preset:
    config = dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=scale)
    run = {"task": f"sr{scale}", "initializer": "esrgan", "initializer.ckpt": CKPT}
    return Preset(f"esrgan_x{scale}", "rrdbnet", config, fp, files, published, run)


_UNPUBLISHED = (
    "not published: ESRGAN/BasicSR release x4 weights only; train x{s} yourself "
    "(docs/reference/CHECKPOINTS.md section 3)"
)

register_presets(
    _preset(
        4,
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
    ),
    _preset(8, "32c840b399d0805e", (), _UNPUBLISHED.format(s=8)),
    _preset(16, "b264cf8dffdb525f", (), _UNPUBLISHED.format(s=16)),
)
