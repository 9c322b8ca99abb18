"""score_sde / score-MRI NCSN++ checkpoints (docs/reference/CHECKPOINTS.md section 2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ccdf.checkpoints.family import CKPT, CheckpointFamily, register_family
from ccdf.checkpoints.presets import Preset, register_presets
from ccdf.nets.ncsnpp import NCSNpp

__all__ = ["NCSNPP_PRESETS", "NCSNppFamily", "ncsnpp_config"]

NCSNPP_PRESETS: dict[str, dict[str, Any]] = {
    # score-MRI configs/ve/fastmri_knee_320_ncsnpp_continuous.py over configs/default_lsun_configs.py
    "fastmri_knee_320": dict(
        image_size=320,
        num_channels=1,
        nf=128,
        ch_mult=(1, 2, 2, 2),
        num_res_blocks=4,
        attn_resolutions=(16,),
        dropout=0.0,
        fir=True,
        fir_kernel=(1, 3, 3, 1),
        skip_rescale=True,
        resblock_type="biggan",
        progressive="none",
        progressive_input="residual",
        progressive_combine="sum",
        embedding_type="fourier",
        fourier_scale=16.0,
        init_scale=0.0,
        conditional=True,
        scale_by_sigma=True,
        centered=False,
        sigma_min=0.01,
        sigma_max=378.0,
        num_scales=2000,
    ),
}


def ncsnpp_config(name: str) -> dict[str, Any]:
    """Keyword arguments of :class:`~ccdf.nets.ncsnpp.NCSNpp` for a published checkpoint.

    Args:
        name: a key of :data:`NCSNPP_PRESETS` (``"fastmri_knee_320"``).

    Returns:
        A fresh dict, so ``NCSNpp(**ncsnpp_config(name))`` builds the official architecture.
    """
    if name not in NCSNPP_PRESETS:
        raise KeyError(f"unknown NCSN++ preset {name!r}; known: {sorted(NCSNPP_PRESETS)}")
    return dict(NCSNPP_PRESETS[name])


class NCSNppFamily(CheckpointFamily):
    """NCSN++: score_sde ``{'model', 'ema', 'step'}`` files; the Fourier ``W`` is frozen, ``sigmas`` derived."""

    name = "ncsnpp"
    net = NCSNpp
    marker = "all_modules.0.W"
    derived = ("sigmas",)
    frozen = ("sigmas", "all_modules.0.W")
    official = {"302628efd6bcfcb2": "score-MRI NCSN++ fastMRI knee 320"}

    def recognises(self, keys: set[str]) -> bool:
        return any(k.startswith("all_modules.") for k in keys)

    def run_overrides(self, config: Mapping[str, Any]) -> dict[str, str] | None:
        if config.get("num_channels", 1) != 1:
            return None
        return {"task": "mri", "model": "ncsnpp_fastmri320", "model.preset": "null", "model.ckpt": CKPT}


register_family(NCSNppFamily())

register_presets(
    Preset(
        "fastmri_knee_320",
        "ncsnpp",
        ncsnpp_config("fastmri_knee_320"),
        "302628efd6bcfcb2",
        ("checkpoint_95.pth",),
        "HJ-harry/score-MRI install.sh: Dropbox s/27gtxkmh2dlkho9/checkpoint_95.pth "
        "(saved as weights/checkpoint_95.pth)",
        {"task": "mri", "model": "ncsnpp_fastmri320", "model.ckpt": CKPT},
    ),
)
