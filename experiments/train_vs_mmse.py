"""Does training learn the right thing? Train a small UNet on Gaussian-field data, compare with the exact MMSE.

    python experiments/train_vs_mmse.py                 # <= 10 minutes on a 2-core CPU
    python experiments/train_vs_mmse.py --minutes 2     # quicker, looser

The data are draws of a stationary Gaussian field (16 x 16, power spectrum ~ (f0^2 + f^2)^-1.5,
pixel variance 0.25), whose exact denoiser is a per-frequency Wiener filter. A guided-diffusion
UNet is trained with DDPM's epsilon loss through the project's Lightning module; then, for
x = x0 + sigma z, its denoising MSE is printed next to the exact MMSE
mean_k P_k sigma^2 / (P_k + sigma^2). A learned denoiser within 10% of the MMSE at every sigma is
the pass criterion (printed).
"""

from __future__ import annotations

import argparse
import math
import time

import lightning as L
import torch

from ccdf.data.datasets import GaussianFieldDataset
from ccdf.denoisers.gaussian import StationaryGaussianPrior
from ccdf.lightning.data import StepDataModule
from ccdf.lightning.diffusion_module import DiffusionModule
from ccdf.nets.guided_unet import GuidedUNet
from ccdf.schedules import DiscreteVP
from ccdf.utils.tensor import bcast

SIGMAS = (0.1, 0.5, 1.0)


def field_prior(pixel_var: float = 0.25, f0: float = 1 / 16) -> StationaryGaussianPrior:
    radii = torch.linspace(0, math.sqrt(0.5) + 1e-6, 128, dtype=torch.float64)
    log_p = -1.5 * torch.log(f0**2 + radii**2)
    grid = torch.fft.fftfreq(16, dtype=torch.float64)
    r = torch.sqrt(grid[:, None] ** 2 + grid[None] ** 2)
    norm = (-1.5 * torch.log(f0**2 + r**2)).exp().mean()
    return StationaryGaussianPrior(
        torch.zeros(1), torch.eye(1), radii, (log_p - norm.log() + math.log(pixel_var))[None]
    )


def small_unet() -> GuidedUNet:
    return GuidedUNet(image_size=16, in_channels=1, model_channels=32, out_channels=1, num_res_blocks=1,
                      attention_resolutions=(), channel_mult=(1, 2, 2), use_scale_shift_norm=True)  # fmt: skip


@torch.no_grad()
def denoising_mse(
    net, schedule: DiscreteVP, prior, sigma: float, num: int = 2000, seed: int = 123
) -> tuple[float, float]:
    """(learned MSE, exact MMSE) per pixel for x = x0 + sigma z."""
    g = torch.Generator().manual_seed(seed)
    x0 = prior.sample(num, 16, 16, g, dtype=torch.float32)
    z = torch.randn(x0.shape, generator=g)
    abar = 1.0 / (1.0 + sigma**2)  # x_t / a = x0 + (s / a) z with (s / a)^2 = (1 - abar) / abar
    # continuous chain position with this abar (log-linear between grid points)
    log_abar = schedule.log_abar
    i = int(torch.searchsorted(-log_abar, torch.tensor(-math.log(abar), dtype=torch.float64)))
    w = (math.log(abar) - float(log_abar[i - 1])) / float(log_abar[i] - log_abar[i - 1])
    t = torch.tensor((i - 1 + w) / schedule.num_train_steps, dtype=torch.float64)
    a, s = schedule.alpha(t), schedule.sigma(t)
    x_t = (a * (x0 + sigma * z)).float()
    eps = torch.cat([net(x_t[k : k + 500], (t * schedule.num_train_steps - 1).float().expand(len(x_t[k : k + 500])))
                     for k in range(0, num, 500)])  # fmt: skip
    x0_hat = (x_t - bcast(s, x_t) * eps) / bcast(a, x_t)
    mse = float((x0_hat - x0).pow(2).mean())
    p = prior.power(16, 16)
    mmse = float((p * sigma**2 / (p + sigma**2)).mean())
    return mse, mmse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=9.0, help="training time budget")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    L.seed_everything(args.seed, verbose=False)
    prior = field_prior()
    schedule = DiscreteVP.linear()
    net = small_unet()
    module = DiffusionModule(net, schedule, loss="vp_eps", warmup_steps=200, ema_decay=0.999, seed=args.seed,
                             optimizer=lambda p: torch.optim.Adam(p, lr=args.lr))  # fmt: skip
    data = StepDataModule(GaussianFieldDataset(prior, 16, length=200_000, seed=args.seed),
                          global_batch=args.batch, max_steps=args.max_steps, seed=args.seed)  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=args.max_steps, max_time={"minutes": args.minutes},
                        logger=False, enable_checkpointing=False, gradient_clip_val=1.0,
                        enable_model_summary=False, use_distributed_sampler=False)  # fmt: skip
    tic = time.perf_counter()
    trainer.fit(module, datamodule=data)
    minutes = (time.perf_counter() - tic) / 60
    net.load_state_dict(module.averaged_state_dict())
    net.eval()
    print(f"trained {trainer.global_step} steps of batch {args.batch} in {minutes:.1f} min "
          f"({sum(p.numel() for p in net.parameters()):,} parameters, EMA weights)")  # fmt: skip
    print(f"{'sigma':>6} {'learned MSE':>12} {'exact MMSE':>12} {'ratio':>7}")
    ok = True
    for sigma in SIGMAS:
        mse, mmse = denoising_mse(net, schedule, prior, sigma)
        ok &= mse <= 1.10 * mmse
        print(f"{sigma:6.2f} {mse:12.5f} {mmse:12.5f} {mse / mmse:7.3f}")
    print("PASS: every learned MSE within 10% of the MMSE" if ok else "FAIL: some learned MSE is >10% above the MMSE")


if __name__ == "__main__":
    main()
