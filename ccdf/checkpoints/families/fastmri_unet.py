"""facebookresearch/fastMRI U-Net checkpoints (docs/reference/CHECKPOINTS.md section 4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ccdf.checkpoints.family import CKPT, CheckpointFamily, register_family
from ccdf.checkpoints.presets import Preset, register_presets
from ccdf.nets.fastmri_unet import Unet

__all__ = ["FastMRIUnetFamily"]


class FastMRIUnetFamily(CheckpointFamily):
    """fastMRI ``Unet``: plain state dicts in the official names."""

    name = "fastmri_unet"
    net = Unet
    marker = "down_sample_layers.0.layers.0.weight"
    official = {
        "fbcb9c9e0a7dce8a": "fastMRI Unet(1, 1, chans=256, num_pool_layers=4)",
        "74f2b31f6bbf8acc": "fastMRI Unet(1, 1, chans=32, num_pool_layers=4)",
    }

    def infer_config(self, state_dict: Mapping[str, Tensor]) -> dict[str, Any] | None:
        sd = state_dict
        try:
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

    def run_overrides(self, config: Mapping[str, Any]) -> dict[str, str] | None:
        if config.get("in_chans") != 1 or config.get("out_chans") != 1:
            return None
        return {"task": "mri", "initializer": "unet", "initializer.preset": "null", "initializer.ckpt": CKPT}


register_family(FastMRIUnetFamily())


def _config(chans: int) -> dict[str, Any]:
    return dict(in_chans=1, out_chans=1, chans=chans, num_pool_layers=4, drop_prob=0.0)


register_presets(
    Preset(
        "fastmri_unet_knee_sc",
        "fastmri_unet",
        _config(256),
        "fbcb9c9e0a7dce8a",
        ("knee_sc_leaderboard_state_dict.pt",),
        "facebookresearch/fastMRI: fbaipublicfiles fastMRI/trained_models/unet/knee_sc_leaderboard_state_dict.pt "
        "(see fastmri_examples/unet/run_pretrained_unet_inference.py)",
        {"task": "mri", "initializer": "unet", "initializer.ckpt": CKPT},
    ),
    Preset(
        "fastmri_unet_chans32",
        "fastmri_unet",
        _config(32),
        "74f2b31f6bbf8acc",
        (),
        "not published: fastMRI's default U-Net size (chans=32); train it with fastmri_examples/unet",
        {"task": "mri", "initializer": "unet", "initializer.chans": "32", "initializer.ckpt": CKPT},
    ),
)
