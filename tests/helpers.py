"""Helpers shared by several test modules (no test module imports another: they all import from here).

Fixtures (pytest's ``@pytest.fixture``) stay in ``tests/conftest.py``; plain functions, constants and small
stand-in networks live here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FIXTURE_CONF = ROOT / "tests" / "fixtures" / "conf"  # experiment/ and debug/ configs used only by the tests


# ---------------------------------------------------------------- random numbers, covariances


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def periodic_cov(n: int, var: float = 0.25, rho: float = 0.77) -> torch.Tensor:
    """1-D periodic AR(1)-like covariance var * rho^|i-j| (circular distance): correlated, full rank."""
    i = torch.arange(n)
    d = (i[:, None] - i[None]).abs()
    d = torch.minimum(d, n - d)
    return var * rho ** d.double()


# ---------------------------------------------------------------- configs and the app


def compose_cfg(overrides: list[str]):
    """``conf/config.yaml`` composed with ``overrides`` (Hydra compose API, the hydra node included)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def applies(task: str, sampler: str, init: str) -> bool:
    """The initializers and samplers that apply to a task (the others refuse it by design)."""
    if sampler in ("ssos", "hybrid") and task != "mri_multicoil":
        return False  # score-MRI's coil-by-coil samplers are for multi-coil data
    if init == "bicubic":
        return task.startswith("sr")  # bicubic up-sampling is for super-resolution
    if init == "masked_fill":
        return not task.startswith("mri")  # masked fill is for real images
    if init == "gray":
        return task == "colorize"  # the gray image is for colorization
    return True


def app_cfg(tmp_path: Path, *overrides: str, run: str = "run"):
    """A composed config as ``run.py`` hands it to ``ccdf.app.main``, running in ``tmp_path / run``."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    cfg = compose_cfg([f"hydra.run.dir={tmp_path / run}", f"eval.cache_dir={tmp_path / 'cache'}",
                       f"hydra.searchpath=[file://{FIXTURE_CONF}]", *overrides])  # fmt: skip
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = cfg.hydra.run.dir  # what Hydra sets when it runs a job
    HydraConfig.instance().set_config(cfg)
    return cfg


# in-process reconstructions: 32 px, 20 steps from t0 = 0.5, no FID/LPIPS
SMOKE = ["task=inpaint", "debug=smoke", "eval.fid=false", "eval.lpips=false"]  # a seconds-long app run
SIZE = 32
FAST = [f"dataset.size={SIZE}", "sampler.num_steps=20", "sampler.t0=0.5", "eval.fid=false", "eval.lpips=false"]


def reconstruct(tmp_path: Path, run: str, *overrides: str, base: tuple[str, ...] = ("task=inpaint", *FAST)) -> dict:
    """``python run.py <base> <overrides>`` in-process (into ``tmp_path / run``); returns metrics.json."""
    from hydra.core.hydra_config import HydraConfig

    from ccdf.app import reconstruct as app_reconstruct
    from ccdf.app import validate

    cfg = compose_cfg([*base, *overrides])
    HydraConfig.instance().set_config(cfg)
    validate(cfg)
    run_dir = tmp_path / run
    app_reconstruct(cfg, run_dir, [])
    return json.loads((run_dir / "metrics.json").read_text())


def strip(rows: list[dict]) -> list[dict]:
    """Per-image rows without their (machine-dependent) ``seconds``."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def run_app(*overrides: str, cwd: Path = ROOT, ok: bool = True) -> subprocess.CompletedProcess:
    """``python run.py *overrides``; the per-image result cache goes next to the run/sweep folder."""
    if not any(o.startswith("eval.cache_dir=") for o in overrides):
        for o in overrides:
            if o.startswith(("hydra.run.dir=", "hydra.sweep.dir=")):
                overrides = (*overrides, f"eval.cache_dir={Path(o.split('=', 1)[1]).parent / 'cache'}")
                break
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    else:
        assert proc.returncode != 0
    return proc


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# a small reconstruction through the app (subprocess runs)
APP = ["task=inpaint", "dataset.size=64", "eval.fid=false", "eval.lpips=false"]

# a seconds-long training run through the app: the demo UNet on 16 px Gaussian fields
TRAIN = [
    "mode=train",
    "task=inpaint",
    "model=unet_small",
    "dataset=gaussian_field",
    "dataset.size=16",
    "trainer=cpu",
    "training.global_batch=4",
    "training.warmup_steps=2",
    "training.ema_decay=0.9",
]


# ---------------------------------------------------------------- training: an 8 px Gaussian field, a tiny UNet

H = 8


def field_prior():
    """A stationary Gaussian prior on 1-channel fields (a power-law-like spectrum)."""
    from ccdf.denoisers.gaussian import StationaryGaussianPrior

    radii = torch.linspace(0, 0.71, 64, dtype=torch.float64)
    return StationaryGaussianPrior(torch.zeros(1), torch.eye(1), radii, (-1.5 * torch.log(0.01 + radii**2) - 4)[None])


def tiny_unet():
    from ccdf.nets.guided_unet import GuidedUNet

    return GuidedUNet(
        image_size=H,
        in_channels=1,
        model_channels=32,
        out_channels=1,
        num_res_blocks=1,
        attention_resolutions=(),
        channel_mult=(1, 1),
    )


# ---------------------------------------------------------------- small random networks of every family

SMALL = {
    "guided_unet": dict(
        image_size=8,
        in_channels=3,
        model_channels=32,
        out_channels=6,
        num_res_blocks=1,
        attention_resolutions=(2,),
        channel_mult=(1, 1),
        num_head_channels=16,
        use_scale_shift_norm=True,
        resblock_updown=True,
    ),
    "ncsnpp": dict(
        image_size=16, num_channels=1, nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), num_scales=20
    ),
    "rrdbnet": dict(num_in_ch=3, num_out_ch=3, scale=4, num_feat=8, num_block=2, num_grow_ch=4),
    "fastmri_unet": dict(in_chans=1, out_chans=1, chans=4, num_pool_layers=2, drop_prob=0.0),
}


def randomize(net: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1)
    return net


def small_net(family: str, seed: int = 0) -> nn.Module:
    from ccdf.checkpoints import build_net

    torch.manual_seed(seed)
    return randomize(build_net(family, SMALL[family]), seed)


# ---------------------------------------------------------------- metric stand-ins (no downloads)


class FakeInception(nn.Module):
    """The shape of clean-fid's TorchScript Inception: a ``layers`` submodule giving 2048 features."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 8, kernel_size=19, stride=19), nn.AdaptiveAvgPool2d(16), nn.Flatten())

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(x)


PREVIOUS = Path(__file__).parent / "fixtures" / "metrics" / "previous_metrics.npz"


def previous_metrics() -> dict[str, torch.Tensor]:
    """Inputs and per-image outputs of ccdf's hand-written PSNR/SSIM/NMSE (and LPIPS) at commit 61fab1b.

    Made by a scratch script outside the repository that imported ``ccdf.metrics`` from ``git archive
    61fab1b``: ``img_*`` are two uint8 batches [3, 3, 40, 48] (b = a + N(0, 25^2), rounded, clipped)
    scored in [0, 1] with range 1 (``psnr``, ``ssim`` valid border, ``ssim(border="reflect")``, and
    ``psnr(a, a)``); ``mri_*`` are magnitude pairs [2, 1, 36, 44] at the scales 3e-4 and 2.5 scored
    with each reference's maximum as range (``psnr``, ``ssim``, ``nmse``; ``mri_psnr_first`` with a
    one-element range tensor, as ``score_item`` passes it). ``lpips_*``: see ``tests/test_metrics_lpips.py``.
    """
    with np.load(PREVIOUS) as z:
        return {k: torch.from_numpy(z[k]) for k in z.files}


def torchmetrics_lpips_and_files(net: str, folder: Path):
    """torchmetrics' ``_LPIPS`` with a random backbone (``pnet_rand``: torchvision ``weights=None``) and
    its bundled heads; its backbone saved as a torchvision-format checkpoint (the one file LPIPS needs)."""
    from torchmetrics.functional.image.lpips import _LPIPS

    from ccdf.metrics import WEIGHT_FILES

    with torch.random.fork_rng():  # torchvision's random init draws from the global generator
        torch.manual_seed(0)
        theirs = _LPIPS(pretrained=True, net=net, pnet_rand=True)
    backbone = {
        "features." + k.split(".", 1)[1]: v for k, v in theirs.net.state_dict().items()
    }  # sliceN.i.w -> features.i.w
    backbone["classifier.1.weight"] = torch.zeros(4, 4)  # a torchvision checkpoint also holds the (unused) classifier
    torch.save(backbone, folder / WEIGHT_FILES["alexnet" if net == "alex" else "vgg16"].filename)
    return theirs


def assert_monte_carlo_matches(
    exact, *, cov: torch.Tensor, mask: torch.Tensor, schedule, b: np.ndarray, eps0: float, sigma_y: float,
    t0s: tuple[float, ...], m: int, num_steps: int, seed: int, z_max: float, label: str, **sample_kw,
) -> None:  # fmt: skip
    """Monte Carlo through ``sample_ccdf`` against an exact propagation (``exact.error`` / ``exact.distance``).

    For each t0: ``m`` problems (x_true from the dense Gaussian prior with a non-zero mean, which every map
    keeps, so E does not depend on it; an initial error of shape ``b`` and size ``eps0``; y measured with
    ``sigma_y``), one run from x_true + e and one from x_true with the same y. The mean squared error E and the
    mean two-run distance D must be within ``z_max`` standard errors of the exact values.
    """
    from ccdf.denoisers import DenseGaussianPrior, GaussianDenoiser
    from ccdf.operators import Inpainting, measure
    from ccdf.sampling import sample_ccdf

    n = cov.shape[0]
    mean = torch.linspace(-0.3, 0.3, n, dtype=torch.float64)
    prior = DenseGaussianPrior(mean, cov, (1, 1, n))
    op = Inpainting(mask.reshape(1, n))
    g = gen(seed)
    k = len(t0s)
    x_true = prior.sample(k * m, g)
    e = (torch.randn(k * m, b.shape[1], generator=g, dtype=torch.float64) @ torch.from_numpy(b).T) * eps0**0.5
    y = measure(op, x_true, sigma_y, g)
    x_init = torch.cat([x_true + e.reshape(x_true.shape), x_true])  # second half: the run of D from x_true
    t0 = torch.tensor(t0s, dtype=torch.float64).repeat_interleave(m).repeat(2)
    x = sample_ccdf(
        GaussianDenoiser(prior, schedule), schedule, op, torch.cat([y, y]), x_init, t0=t0, num_steps=num_steps,
        sigma_y=sigma_y, generator=g, **sample_kw,
    )  # fmt: skip
    x1, x2 = x[: k * m].reshape(k, m, -1), x[k * m :].reshape(k, m, -1)
    err = ((x1 - x_true.reshape(k, m, -1)) ** 2).sum(-1)
    dist = ((x1 - x2) ** 2).sum(-1)
    for i, t in enumerate(t0s):
        j = round(t * num_steps)
        for what, sample, ref in [("E", err[i], exact.error(eps0)[j]), ("D", dist[i], exact.distance(eps0)[j])]:
            z = (float(sample.mean()) - ref) / (float(sample.std()) / np.sqrt(m))
            assert abs(z) <= z_max, f"{label} t0={t} {what}: MC {float(sample.mean()):.4f} exact {ref:.4f} z={z:.2f}"
