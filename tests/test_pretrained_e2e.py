"""End to end with full-size official architectures: ``python run.py ... model.ckpt=PATH``.

The weights are random (no downloads), saved in the official file layouts (guided-diffusion plain
state dict, score-MRI's ``{'model', 'ema', 'step'}``, BasicSR ``{'params_ema'}``, fastMRI plain
state dict), so this checks loading, the adapters, the learned initializers and the Hydra wiring,
not image quality. Slow: the FFHQ U-Net (93.6M parameters) runs 2 steps at 256x256 and the
NCSN++ (61.4M) 1 predictor-corrector step at 320x320, on CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

import ccdf.checkpoints as L
from tests.helpers import metrics, run_app

pytestmark = pytest.mark.slow


def random_preset(name: str, seed: int = 0) -> torch.nn.Module:
    """The preset's net with its default init, and small random values in zero-initialised layers."""
    torch.manual_seed(seed)
    p = L.PRESETS[name]
    net = L.build_net(p.family, p.config)
    with torch.no_grad():
        for param in net.parameters():
            if not bool(param.any()):
                param.normal_(0, 1e-2)
    return net


def test_iddpm_ffhq256_sr4_with_esrgan_initializer(tmp_path):
    unet_ckpt = L.save_checkpoint(tmp_path / "ffhq_10m.pt", random_preset("ffhq256"), layout="plain")
    esrgan_ckpt = L.save_checkpoint(
        tmp_path / "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth", random_preset("esrgan_x4"), layout="basicsr_ema"
    )
    run_dir = tmp_path / "run"
    run_app(
        "task=sr4",
        "model=iddpm_ffhq256",
        f"model.ckpt={unet_ckpt}",
        "sampler.variance=learned",
        "sampler.x0_clip=1.0",
        "sampler.num_steps=10",
        "sampler.t0=0.2",
        "dataset.max_images=1",
        "dataset.size=256",
        "initializer=esrgan",
        f"initializer.ckpt={esrgan_ckpt}",
        f"hydra.run.dir={run_dir}",
    )
    m = metrics(run_dir)
    assert m["model"] == "iddpm_ffhq256" and m["num_images"] == 1
    assert m["reverse_steps"] == 2 and m["nfe"] == 2
    assert math.isfinite(m["psnr"]) and math.isfinite(m["init_psnr"])
    assert "ESRGANInitializer(scale=4" in m["initializer"]
    assert m["dc_residual"] < 1e-3


def test_ncsnpp_fastmri320_mri_with_unet_initializer(tmp_path):
    score_ckpt = L.save_checkpoint(
        tmp_path / "checkpoint_95.pth", random_preset("fastmri_knee_320"), layout="score_sde"
    )
    unet_ckpt = L.save_checkpoint(tmp_path / "unet_chans32.pt", random_preset("fastmri_unet_chans32"), layout="plain")
    run_dir = tmp_path / "run"
    run_app(
        "task=mri",
        "model=ncsnpp_fastmri320",  # beats the task's `override /model: gaussian_ve` (command line wins)
        f"model.ckpt={score_ckpt}",
        "sampler.num_steps=10",
        "sampler.t0=0.1",
        "dataset.max_images=1",
        "initializer=unet",
        f"initializer.ckpt={unet_ckpt}",
        "initializer.chans=32",
        f"hydra.run.dir={run_dir}",
    )
    m = metrics(run_dir)
    assert m["model"] == "ncsnpp_fastmri320" and m["task"] == "mri"
    assert m["reverse_steps"] == 1 and m["nfe"] == 2  # predictor + one Langevin corrector
    assert math.isfinite(m["psnr"]) and math.isfinite(m["nmse"])
    assert "UNetInitializer(chans=32" in m["initializer"]
