"""guided-diffusion / IDDPM ADM U-Net checkpoints (docs/reference/CHECKPOINTS.md sections 1, 5); ccdf's demo prior."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ccdf.checkpoints.family import CKPT, CheckpointFamily, register_family
from ccdf.checkpoints.presets import Preset, register_presets
from ccdf.nets.guided_unet import GuidedUNet, guided_flags_to_kwargs

__all__ = ["GUIDED_FLAGS", "GuidedUNetFamily", "guided_unet_config"]

_FFHQ_FLAGS: dict[str, Any] = dict(
    image_size=256,
    num_channels=128,
    num_res_blocks=1,
    channel_mult="",
    learn_sigma=True,
    class_cond=False,
    attention_resolutions="16",
    num_heads=4,
    num_head_channels=64,
    num_heads_upsample=-1,
    use_scale_shift_norm=True,
    dropout=0.0,
    resblock_updown=True,
    use_new_attention_order=False,
)

#: Published architectures as guided-diffusion flags (docs/reference/CHECKPOINTS.md section 1.1).
GUIDED_FLAGS: dict[str, dict[str, Any]] = {
    # ILVR / DPS / MCG / P2 "ffhq_10m.pt" and "afhq_dog_4m.pt" (93.6M parameters).
    "ffhq256": _FFHQ_FLAGS,
    "afhq_dog256": dict(_FFHQ_FLAGS),  # same architecture as ffhq_10m.pt
    # guided-diffusion "256x256_diffusion_uncond.pt" (= DPS "imagenet256.pt", 552.8M parameters).
    "adm256_uncond": dict(_FFHQ_FLAGS, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8"),
}
GUIDED_FLAGS["imagenet256_uncond"] = dict(GUIDED_FLAGS["adm256_uncond"])  # DPS's name for the same file


def guided_unet_config(name: str) -> dict[str, Any]:
    """``GuidedUNet`` kwargs of a published checkpoint's architecture.

    Args:
        name: one of ``GUIDED_FLAGS``: ``"ffhq256"`` (= ``"afhq_dog256"``) or
            ``"adm256_uncond"`` (= ``"imagenet256_uncond"``).

    Returns:
        A fresh dict of keyword arguments for :class:`GuidedUNet`.
    """
    if name not in GUIDED_FLAGS:
        raise KeyError(f"unknown guided UNet preset {name!r}; choose from {sorted(GUIDED_FLAGS)}")
    return guided_flags_to_kwargs(**GUIDED_FLAGS[name])


class GuidedUNetFamily(CheckpointFamily):
    """ADM / IDDPM U-Net: plain state dicts in the official names (no renaming needed)."""

    name = "guided_unet"
    net = GuidedUNet
    marker = "input_blocks.0.0.weight"
    official = {
        "1ffa5b3b9b24aa3e": "guided-diffusion UNet, ILVR/DPS FFHQ & AFHQ-dog config",
        "86f5708ebb91ab69": "guided-diffusion UNet, ADM 256 uncond",
    }

    def run_overrides(self, config: Mapping[str, Any]) -> dict[str, str] | None:
        if config.get("in_channels") != 3:
            return None
        if config.get("out_channels") == 2 * config["in_channels"]:  # learned variance: IDDPM's sampler settings
            return {"task": "sr4", "model": "iddpm_ffhq256", "model.preset": "null", "model.ckpt": CKPT}
        return {"task": "sr4", "model": "unet_small", "model.ckpt": CKPT}  # eps only (ccdf's own training)


register_family(GuidedUNetFamily())

_IDDPM_SAMPLER = {"sampler.variance": "learned", "sampler.x0_clip": "1.0"}

register_presets(
    Preset(
        "ffhq256",
        "guided_unet",
        guided_unet_config("ffhq256"),
        "1ffa5b3b9b24aa3e",
        ("ffhq_10m.pt",),
        "ILVR (jychoi118/ilvr_adm README, Google Drive file 117Y6Z6-Hg6TMZVIXMmgYbpZy7QvTXign); "
        "DPS Google Drive folder 1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh (models/ffhq_10m.pt); "
        "MCG_diffusion install.sh (Dropbox mirror). P2-weighting's ffhq_p2.pt has the same architecture",
        {"task": "sr4", "model": "iddpm_ffhq256", "model.ckpt": CKPT, **_IDDPM_SAMPLER},
    ),
    Preset(
        "afhq_dog256",
        "guided_unet",
        guided_unet_config("afhq_dog256"),
        "1ffa5b3b9b24aa3e",
        ("afhq_dog_4m.pt",),
        "ILVR (jychoi118/ilvr_adm README, Google Drive file 14OG_o3aa8Hxmfu36IIRyOgRwEP6ngLdo; since Dec 2022 "
        "the README points to the P2-weighting OneDrive folder)",
        {
            "task": "sr4",
            "model": "iddpm_afhqdog256",
            "model.ckpt": CKPT,
            "dataset": "afhq_dog256",
            "dataset.root": "AFHQ/val/dog",
            **_IDDPM_SAMPLER,
        },
    ),
    Preset(
        "adm256_uncond",
        "guided_unet",
        guided_unet_config("adm256_uncond"),
        "86f5708ebb91ab69",
        ("256x256_diffusion_uncond.pt", "imagenet256.pt"),
        "openai/guided-diffusion README: openaipublic blob diffusion/jul-2021/256x256_diffusion_uncond.pt "
        "(= DPS models/imagenet256.pt, Google Drive folder 1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh)",
        {
            "task": "sr4",
            "model": "iddpm_ffhq256",
            "model.name": "adm256_uncond",
            "model.preset": "adm256_uncond",
            "model.ckpt": CKPT,
            "dataset": "folder",
            "dataset.root": "IMAGES",
            **_IDDPM_SAMPLER,
        },
    ),
    Preset(
        "demo_prior",
        "guided_unet",
        dict(
            image_size=32,
            in_channels=3,
            model_channels=32,
            out_channels=3,
            num_res_blocks=1,
            attention_resolutions=(),
            channel_mult=(1, 2, 2),
            use_scale_shift_norm=True,
        ),
        "83094d13434f27e1",
        ("demo_prior.safetensors",),
        "shipped with ccdf (ccdf/assets/models/demo_prior.safetensors; conf/model/demo_prior.yaml says how it was "
        "trained and how to retrain it)",
        {"task": "inpaint", "model": "demo_prior", "model.ckpt": CKPT},
    ),
)
